"""``dealthdr``: DeAltHDR on the degraded (day/night) scenes (DeAltHDR section 5.1).

The mu-law L1 + ``perc_weight`` x the perceptual substitute (eqs. 9-10) + ``flow_weight`` x the
SpyNet's EPE; AdamW with cosine annealing to ``1e-7``. Each batch draws its alignment branch as
section 5.1 does: 30% flow only (``s = 0``), 30% attention only (``s = inf``), 40% FGMA with a
random ``s`` (half from ``(0, 1]``, half from ``(1, 100)``, the paper's sampling of the curve).
Ships ``dealthdr_2exp.safetensors``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vs_hdrvid import weights as W
from vs_hdrvid.models.dealthdr import DeAltHDR, DeAltHDRConfig
from vs_hdrvid.ops.metrics import psnr_mu
from vs_hdrvid.train.losses import epe, mu_l1, structure_loss
from vs_hdrvid.train.stages.base import Stage, StageOptions, load_into, load_shipped, ref_only, register, weights_dir

__all__ = ["DeAltHDROptions", "DeAltHDRStage", "DEALTHDR_DEVIATIONS", "sample_sensitivity", "BRANCHES"]

DEALTHDR_DEVIATIONS = [
    "Synthetic training data from vs-hdrvid synth's DeAltHDR recipes (blender-data CC0 panoramas, moving layers, "
    "sub-frame blur, Eq. A/B noise), not the paper's 176 DJI Pocket 3 scenes.",
    "VGG16 perceptual loss replaced by multi-scale gradient L1 + (1 - SSIM) in the mu-law domain (no ImageNet "
    "weights); weight given in recipe.perc_weight.",
    "SpyNet is trained with the network (plus an EPE term against the synthetic ground-truth flow) instead of "
    "starting from ImageNet-free pretrained SpyNet weights, which this project does not use.",
    "FGMA attends to a window around each masked query's flow target (window side in config.window) with a learned "
    "relative-position bias; the paper does not state the key extent. Masks of coarser levels average D first.",
    "Decoder block count (config.dec_blocks) and the mu-law global residual over the centre frame are this "
    "project's choices where the paper gives no number.",
]

BRANCHES = "30% flow only (s=0), 30% attention only (s=inf), 40% FGMA with s ~ U(0,1] or U(1,100)"


def sample_sensitivity(gen: torch.Generator | None = None) -> float:
    """The alignment branch of a DeAltHDR training batch, as its FGMA sensitivity ``s``.

    30% ``0`` (flow only), 30% ``inf`` (attention only), 40% FGMA with ``s`` uniform in
    ``(0, 1]`` or ``(1, 100)`` (equally likely). Draws from torch's global generator unless
    ``gen`` is given (the training loop checkpoints the global one, so a resumed run continues
    the same sequence).
    """
    u, v, w = torch.rand(3, generator=gen).tolist()
    if u < 0.3:
        return 0.0
    if u < 0.6:
        return math.inf
    return max(v, 1e-3) if w < 0.5 else 1.0 + 99.0 * v


@dataclass(frozen=True)
class DeAltHDROptions(StageOptions):
    model: str = field(default="small", metadata={
        "choices": ("small", "paper"), "run": True,
        "help": "the CPU width (small, DeAltHDRConfig.small) or the paper's depth with Turtle's width"})
    flow_weight: float = field(default=0.01, metadata={"help": "weight of the SpyNet's EPE against ground-truth flow"})
    perc_weight: float = field(default=0.5, metadata={"help": "weight of the perceptual substitute"})

    def check(self, cfg) -> None:
        if cfg.exposures != 2:
            raise ValueError("train dealthdr: DeAltHDR is trained for 2-exposure patterns (EV -2/+1)")


@register
class DeAltHDRStage(Stage):
    name = "dealthdr"
    order = 4
    summary = "DeAltHDR on the degraded day/night scenes (2 exposures)"
    Options = DeAltHDROptions
    lr = 4e-4
    schedule = "cosine"
    paper_sizes = (192, "8")
    kind = "dealthdr"
    trained = ("dealthdr",)
    ship_files = ("dealthdr",)
    deviations = DEALTHDR_DEVIATIONS
    losses = ("mu-law L1 (DeAltHDR eq. 9) + perc_weight x (multi-scale gradient L1 + (1 - SSIM)) in the mu-law "
              "domain, substituting the VGG16 loss, + flow_weight x EPE of the SpyNet's t->neighbour flows")

    @property
    def tone(self) -> bool:  # type: ignore[override]
        return False

    def _config(self) -> DeAltHDRConfig:
        return DeAltHDRConfig.small() if self.opt.model == "small" else DeAltHDRConfig()

    def init(self) -> None:
        cfg = self.cfg
        if cfg.init_from and cfg.init_from != "none":
            self.nets["dealthdr"] = DeAltHDR(self._config())
            self.init_notes.append(load_into(self.nets["dealthdr"], Path(cfg.init_from), "dealthdr"))
            return
        shipped = None if cfg.init_from == "none" else load_shipped("dealthdr-2exp", cfg, self.device)
        if shipped is not None and shipped[0].config == self._config():
            self.nets["dealthdr"], self.previous["dealthdr"] = shipped
            self.init_notes.append(f"{weights_dir(cfg) / W.REGISTRY['dealthdr-2exp'].file} (shipped)")
            return
        self.nets["dealthdr"] = DeAltHDR(self._config())

    def loss(self, batch):
        s = sample_sensitivity()
        out = self.nets["dealthdr"](batch["ldrs"], batch["evs"], s)
        gt, hs = batch["gt"][:, 0], batch["h_sat"]
        l1 = mu_l1(out.hdr, gt, hs)
        perc = structure_loss(out.hdr, gt, hs)
        flow = epe(out.flows, batch["flows"], batch["flow_valid"])
        loss = l1 + self.opt.perc_weight * perc + self.opt.flow_weight * flow
        return loss, {"mu_l1": l1.item(), "structure": perc.item(), "epe": flow.item(), "s": min(s, 1e9),
                      "attention_ratio": out.attention_ratio}

    @torch.no_grad()
    def validate(self, batch):
        net = self.nets["dealthdr"]
        gt, hs = batch["gt"][:, 0], batch["h_sat"]
        res = {"val_psnr_mu": psnr_mu(net(batch["ldrs"], batch["evs"], 15.0).hdr, gt, hs)}
        for name, s in (("s0", 0.0), ("sinf", math.inf)):
            res[f"val_psnr_mu_{name}"] = psnr_mu(net(batch["ldrs"], batch["evs"], s).hdr, gt, hs)
        res["val_psnr_mu_reference_only"] = psnr_mu(ref_only(batch, net.center), gt, hs)
        return res

    def recipe(self, key: str, digests: dict[str, str]) -> dict[str, Any]:
        return {**super().recipe(key, digests), "flow_weight": self.opt.flow_weight, "branches": BRANCHES}

    def size_note(self) -> str:
        return f"; the '{self.opt.model}' width (DeAltHDRConfig.small)" if self.opt.model == "small" else ""
