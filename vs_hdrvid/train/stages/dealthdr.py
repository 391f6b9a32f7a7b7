"""``dealthdr``: DeAltHDR on the degraded (day/night) scenes (DeAltHDR section 5.1).

The mu-law L1 + ``perc_weight`` x the perceptual substitute (eqs. 9-10) + ``lin_weight`` x the
L1 of the normalised linear HDR (the highlights, which the mu-law compresses) + ``flow_weight`` x
the SpyNet's EPE (paper design only); AdamW with cosine annealing to ``1e-7``.

The default design (``flow_source="dis"``) starts from the classical answer: the window is aligned
by the DIS flows of ``hv.classical_flow`` (both ways, so FGMA's consistency difference is that of
DIS), and the network's zero-initialised output corrects the flow-aligned merge, so at step 0 it
is that merge. Each batch draws its alignment branch as
section 5.1 does: 30% flow only (``s = 0``), 30% attention only (``s = inf``), 40% FGMA with a
random ``s`` (half from ``(0, 1]``, half from ``(1, 100)``, the paper's sampling of the curve).
Ships ``dealthdr_2exp.safetensors``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vs_hdrvid import weights as W
from vs_hdrvid.models.dealthdr import CPU_SIZES, DeAltHDR, DeAltHDRConfig, residual_attention_state
from vs_hdrvid.ops.metrics import psnr_l, psnr_mu
from vs_hdrvid.train.losses import epe, linear_l1, mu_l1, structure_loss
from vs_hdrvid.train.stages.base import Stage, StageOptions, load_into, load_shipped, ref_only, register, weights_dir

__all__ = ["DeAltHDROptions", "DeAltHDRStage", "DEALTHDR_DEVIATIONS", "sample_sensitivity", "BRANCHES"]

DEALTHDR_DEVIATIONS = [
    "Synthetic training data from vs-hdrvid synth's DeAltHDR recipes (blender-data CC0 panoramas, moving layers, "
    "sub-frame blur, Eq. A/B noise), not the paper's 176 DJI Pocket 3 scenes.",
    "VGG16 perceptual loss replaced by multi-scale gradient L1 + (1 - SSIM) in the mu-law domain (no ImageNet "
    "weights); weight given in recipe.perc_weight.",
    "FGMA attends to a window around each masked query's flow target (window side in config.window) with a learned "
    "relative-position bias; the paper does not state the key extent. Masks of coarser levels average D first.",
    "Decoder block count (config.dec_blocks) is this project's choice where the paper gives no number.",
]
#: Deviations of the paper's flow design (``flow_source="spynet"``).
SPYNET_DEVIATIONS = [
    "SpyNet is trained with the network (plus an EPE term against the synthetic ground-truth flow) instead of "
    "starting from ImageNet-free pretrained SpyNet weights, which this project does not use.",
]
#: Deviations of the design that starts from the classical answer (``flow_source="dis"``).
DIS_DEVIATIONS = [
    "Flows from DIS (hv.classical_flow, preset medium, on the exposure-normalised linear frames, both ways "
    "between the centre and each neighbour) instead of a SpyNet inside the network (config.flow_source='dis'): "
    "FGMA's consistency difference D is that of DIS, the network has no flow network and no EPE term. A SpyNet "
    "trained here to correct DIS did not lower DIS's end-point error (vs-hdrvid eval-flow), and one learning "
    "from zero in a CPU budget gives FGMA the difference map of its own errors.",
]
#: Deviations of the output: a correction of a merge (``residual_base="merge"``), or of the centre frame.
RESIDUAL_DEVIATIONS = {
    "merge": "The output is a zero-initialised correction, in the mu-law domain, of the flow-aligned exposure-weighted "
             "merge of the window (config.residual_base='merge'), so the untrained network is that merge; not "
             "Turtle's global residual over the centre frame.",
    "tuned_merge": "The output is a zero-initialised correction, in the mu-law domain, of the flow-aligned "
                   "exposure-weighted merge of the window with hv.merge's clipping level (a value counts only "
                   "below 0.92 LDR) and fallback (where every frame is clipped, the shortest exposure) "
                   "(config.residual_base='tuned_merge'), so the untrained network is that merge; not Turtle's "
                   "global residual over the centre frame.",
    "bounded_merge": "The output is a zero-initialised correction, in the mu-law domain, of the flow-aligned "
                     "exposure-weighted merge of the window with hv.merge's clipping level (a value counts only "
                     "below 0.92 LDR), fallback (where every frame is clipped, the shortest exposure) and ghost "
                     "tests where the centre is a short frame: where it is clipped a neighbour darker than "
                     "0.92**2.2 of its clipping radiance, less 0.25 stops, and where its LDR luminance is above "
                     "0.35 a neighbour whose 3x3-averaged log2 ratio to it exceeds 0.25 stops is dropped, spread "
                     "over 3x3 (config.residual_base='bounded_merge'), so the untrained network is that merge; "
                     "not Turtle's global residual over the centre frame. Without the tests, misaligned and "
                     "motion-blurred neighbours darkened the highlights of short frames. Last, each channel the short "
                     "centre clips is kept at least at the centre's own radiance: a neighbour of another colour "
                     "passes the luminance tests.",
    "reference": "The mu-law global residual over the centre frame (Turtle's) is this project's choice where the "
                 "paper gives none.",
}
LINEAR_DEVIATION = ("Adds lin_weight x the L1 of the normalised linear HDR clip(H / H_sat, 0, 1) to the mu-law "
                    "losses: the mu-law space of eq. 9 compresses the highlights, whose errors PSNR-L counts.")

BOUND_DEVIATION = ("The correction is bounded around the base's linear radiance b (short-exposure units): at most "
                   "residual_bound x bound_floor**(1 - p) x (b + bound_floor)**p, p = bound_power (1: a fixed "
                   "fraction of b, 0.5: with the shot noise), through a tanh (config.residual_bound, bound_floor, "
                   "bound_power). "
                   "Unbounded, the network trained here pushed near-clipped short-frame highlights towards "
                   "saturation on scenes it had not seen and gave back PSNR-L the merge had.")

ATTENTION_DEVIATION = ("FGMA's masked pixels reach the fusion only through the attention (config.attention_residual): "
                       "F_flow is zeroed there and F_att = F_flow + O(softmax(QK^T/sqrt(d) + bias) V) over the window "
                       "of the flow-warped neighbour around the query, O zero-initialised, so the attention starts "
                       "as the flow warp; eq. 8 keeps F_flow everywhere beside F_att, and trained here on a CPU its "
                       "attention branch got 0.025% of the gradient and changed nothing. Weights of eq. 8's design "
                       "were converted (the fusion reads F_att with F_flow's columns), which computes their s = 0 "
                       "output for every s.")

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
    model: str = field(default="tiny", metadata={
        "choices": (*CPU_SIZES, "paper"), "run": True,
        "help": "a CPU size (models.dealthdr.CPU_SIZES) or the paper's depth with Turtle's width"})
    flow_source: str = field(default="dis", metadata={
        "choices": ("dis", "spynet"), "run": True,
        "help": "the classical DIS flows (dis) or the paper's SpyNet inside the network (spynet)"})
    residual_base: str = field(default="bounded_merge", metadata={
        "choices": ("bounded_merge", "tuned_merge", "merge", "reference"), "run": True,
        "help": "what the output corrects: the window's exposure-weighted merge with hv.merge's clipping "
                "level and fallback (tuned_merge), that merge dropping a neighbour that contradicts a short "
                "centre's clipped or bright pixels (bounded_merge), the merge without either (merge, the first "
                "shipped design), or the centre frame (reference)"})
    residual_bound: float = field(default=0.05, metadata={
        "run": True, "help": "scale of the correction's trust region (DeAltHDRConfig.residual_bound; with "
                             "--bound-power 1 at most this fraction of the base's radiance; 0: unbounded, the "
                             "first shipped designs)"})
    bound_power: float = field(default=0.5, metadata={
        "run": True, "help": "growth of the trust region with the radiance (DeAltHDRConfig.bound_power; "
                             "1: a fixed fraction, 0.5: with the shot noise)"})
    attention_residual: bool = field(default=True, metadata={
        "run": True, "help": "FGMA's residual design (DeAltHDRConfig.attention_residual): masked pixels reach the "
                             "fusion only through the attention, which starts as the flow warp; weights of eq. 8's "
                             "design are converted on loading (models.dealthdr.residual_attention_state)"})
    shared_encoder: bool = field(default=False, metadata={
        "run": True, "help": "one encoder for both exposures (the paper's Table 5 ablation)"})
    flow_weight: float = field(default=0.01, metadata={"help": "weight of the SpyNet's EPE against ground-truth flow"})
    perc_weight: float = field(default=0.5, metadata={"help": "weight of the perceptual substitute"})
    attention_lr_scale: float = field(default=1.0, metadata={
        "help": "lr of the FGMA attention's parameters (q, k, v, O, position bias) relative to --lr: the residual "
                "design's O starts at zero, and q, k, v learn only once it is not"})
    lin_weight: float = field(default=0.0, metadata={
        "help": "weight of an L1 on the normalised linear HDR, for the highlights (README: it did not raise "
                "PSNR-L at the CPU budget, so it is off)"})

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

    @property
    def tone(self) -> bool:  # type: ignore[override]
        return False

    @property
    def classical_flow(self) -> bool:  # type: ignore[override]
        return self.opt.flow_source == "dis"

    def _config(self) -> DeAltHDRConfig:
        return DeAltHDRConfig.sized(self.opt.model, flow_source=self.opt.flow_source,
                                    dual_encoders=not self.opt.shared_encoder, residual_base=self.opt.residual_base,
                                    residual_bound=self.opt.residual_bound, bound_power=self.opt.bound_power,
                                    attention_residual=self.opt.attention_residual)

    @property
    def losses(self) -> str:  # type: ignore[override]
        out = ("mu-law L1 (DeAltHDR eq. 9) + perc_weight x (multi-scale gradient L1 + (1 - SSIM)) in the mu-law "
               "domain, substituting the VGG16 loss")
        if self.opt.lin_weight:
            out += " + lin_weight x L1 of clip(H / H_sat, 0, 1)"
        return out + (" + flow_weight x EPE of the SpyNet's t->neighbour flows" if self.opt.flow_source == "spynet" else "")

    def _flows(self, batch):
        """The classical flows of the batch where the network takes them, else None (its SpyNet)."""
        return (batch["init_flows"][:, 0], batch["init_bwd"][:, 0]) if self.nets["dealthdr"].needs_flows else None

    def _run(self, batch, s: float):
        return self.nets["dealthdr"](batch["ldrs"], batch["evs"], s, flows=self._flows(batch))

    def _upgrade(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Weights of eq. 8's FGMA design converted for the residual one, where this run trains it."""
        old = not any(".proj_o." in k for k in state) and any(".proj_q." in k for k in state)
        return residual_attention_state(state) if old and self.opt.attention_residual else state

    def init(self) -> None:
        cfg = self.cfg
        if cfg.init_from and cfg.init_from != "none":
            self.nets["dealthdr"] = DeAltHDR(self._config())
            self.init_notes.append(load_into(self.nets["dealthdr"], Path(cfg.init_from), "dealthdr", self.previous,
                                             self._upgrade))
            return
        shipped = None if cfg.init_from == "none" else load_shipped("dealthdr-2exp", cfg, self.device)
        want = self._config()
        convertible = (shipped is not None and want.attention_residual and not shipped[0].config.attention_residual
                       and dataclasses.replace(shipped[0].config, attention_residual=True) == want)
        if shipped is not None and (shipped[0].config == want or convertible):
            note = f"{weights_dir(cfg) / W.REGISTRY['dealthdr-2exp'].file} (shipped)"
            self.previous["dealthdr"] = shipped[1]
            if shipped[0].config == want:
                self.nets["dealthdr"] = shipped[0]
            else:  # eq. 8's design, shipped before the residual one
                self.nets["dealthdr"] = DeAltHDR(want).to(self.device)
                self.nets["dealthdr"].load_state_dict(self._upgrade(shipped[0].state_dict()))
                note += ", converted to FGMA's residual design"
            self.init_notes.append(note)
            return
        self.nets["dealthdr"] = DeAltHDR(want)

    def param_groups(self) -> list[dict]:
        net = self.nets["dealthdr"]
        attention = [p for n, p in net.named_parameters() if ".fgma." in n]
        ids = {id(p) for p in attention}
        return [{"params": [p for p in net.parameters() if id(p) not in ids], "lr_scale": 1.0, "name": "dealthdr"},
                {"params": attention, "lr_scale": self.opt.attention_lr_scale, "name": "attention"}]

    def loss(self, batch):
        s = sample_sensitivity()
        out = self._run(batch, s)
        gt, hs = batch["gt"][:, 0], batch["h_sat"]
        l1 = mu_l1(out.hdr, gt, hs)
        perc = structure_loss(out.hdr, gt, hs)
        lin = linear_l1(out.hdr, gt, hs)
        loss = l1 + self.opt.perc_weight * perc + self.opt.lin_weight * lin
        logs = {"mu_l1": l1.item(), "structure": perc.item(), "linear_l1": lin.item(), "s": min(s, 1e9),
                "attention_ratio": out.attention_ratio}
        if not self.nets["dealthdr"].needs_flows:
            flow = epe(out.flows, batch["flows"], batch["flow_valid"])
            loss = loss + self.opt.flow_weight * flow
            logs["epe"] = flow.item()
        return loss, logs

    @torch.no_grad()
    def validate(self, batch):
        net = self.nets["dealthdr"]
        gt, hs = batch["gt"][:, 0], batch["h_sat"]
        out = self._run(batch, 15.0)
        res = {"val_psnr_mu": psnr_mu(out.hdr, gt, hs), "val_psnr_l": psnr_l(out.hdr, gt, hs),
               "val_attention_ratio_s15": torch.full_like(hs, out.attention_ratio)}
        for name, s in (("s0", 0.0), ("sinf", math.inf)):
            res[f"val_psnr_mu_{name}"] = psnr_mu(self._run(batch, s).hdr, gt, hs)
        res["val_psnr_mu_reference_only"] = psnr_mu(ref_only(batch, net.center), gt, hs)
        if net.config.residual_base != "reference":  # the classical starting point: the untrained output
            res["val_psnr_mu_merge"] = psnr_mu(net.merge_base(batch["ldrs"], batch["evs"], self._flows(batch)), gt, hs)
        return res

    def recipe(self, key: str, digests: dict[str, str]) -> dict[str, Any]:
        out = {**super().recipe(key, digests), "lin_weight": self.opt.lin_weight, "branches": BRANCHES,
               "attention_lr_scale": self.opt.attention_lr_scale}
        return out | ({"flow_weight": self.opt.flow_weight} if self.opt.flow_source == "spynet" else {})

    def net_deviations(self, key: str, config: dict) -> list[str]:
        cfg = DeAltHDRConfig.from_dict(config)
        out = list(self.deviations) + (DIS_DEVIATIONS if cfg.flow_source == "dis" else SPYNET_DEVIATIONS)
        return (out + [RESIDUAL_DEVIATIONS[cfg.residual_base]] + [BOUND_DEVIATION] * bool(cfg.residual_bound)
                + [LINEAR_DEVIATION] * bool(self.opt.lin_weight) + [ATTENTION_DEVIATION] * cfg.attention_residual)

    def size_note(self) -> str:
        return f"; the '{self.opt.model}' size (models.dealthdr.CPU_SIZES)" if self.opt.model in CPU_SIZES else ""
