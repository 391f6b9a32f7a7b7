"""``refine`` and ``finetune``: RefineNet on the coarse HDRs of ``t-1, t, t+1`` (Chen et al. section 3.3).

``refine`` trains RefineNet with the shipped CoarseNet frozen; ``finetune`` trains both at
``lr 2e-5`` and ships both files. Loss (``--loss``): by default, as for the CoarseNet that corrects
the merge, the mean over crops of the log of each crop's mu-law L1
(:func:`~vs_hdrvid.train.losses.log_mu_l1`); ``eq6`` is the paper's: eq. 6 (the L1 normalised by the
badly exposed area) + ``perc_weight`` x the perceptual substitute.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vs_hdrvid import weights as W
from vs_hdrvid.models.refinenet import RefineNet, RefineNetConfig
from vs_hdrvid.ops.metrics import psnr_mu
from vs_hdrvid.train.losses import log_mu_l1, refine_l1, structure_loss
from vs_hdrvid.train.stages.base import load_into, load_shipped, ref_only, register
from vs_hdrvid.train.stages.coarse import CoarseNetStage, CoarseOptions, run_coarse_window, shipped_coarse

__all__ = ["RefineOptions", "RefineStage", "FinetuneStage", "REFINE_RESIDUAL_DEVIATION", "REFINE_LOG_LOSS_DEVIATION",
           "REFINE_UNMASKED_DEVIATION", "REFINE_MULAW_INPUT_DEVIATION", "REFINE_TEMPORAL_BASE_DEVIATION"]

log = logging.getLogger("vs_hdrvid.train")

REFINE_RESIDUAL_DEVIATION = (
    "RefineNet's reconstruction predicts a zero-initialised mu-law residual over the reference's coarse HDR "
    "(config.coarse_residual) instead of the paper's sigmoid regression, so training starts from CoarseNet's "
    "output: a CPU budget does not bring a from-scratch head back up to CoarseNet's quality.")

REFINE_LOG_LOSS_DEVIATION = (
    "RefineNet trains on the mean over crops of log(1e-4 + each crop's mu-law L1) instead of eq. 6 + the "
    "perceptual term (--loss eq6): with eq. 6 the clean crops, whose errors are a tenth of the noisy ones', were "
    "traded for the noisy ones (validation on the clean short references fell 1.7 dB in 600 steps while the noisy "
    "ones gained 0.03), as for the CoarseNet that corrects the merge (losses.log_mu_l1).")

REFINE_UNMASKED_DEVIATION = (
    "RefineNet's residual applies to every pixel (config.output_mask=False) instead of only to the badly exposed "
    "area 1 - M of eq. 5: on noisy footage eq. 5 keeps CoarseNet's blend of noisy frames where the reference is "
    "well exposed, and 77-87% of CoarseNet's error on the EV-2/+1 validation crops lies there.")

REFINE_MULAW_INPUT_DEVIATION = (
    "RefineNet's extractor takes the coarse HDRs mu-law tonemapped (config.mulaw_input) instead of linear over "
    "H_sat: in linear the dark half of a frame, where 1 - M lies, reaches the first convolution as 1e-3..1e-2.")

REFINE_TEMPORAL_BASE_DEVIATION = (
    "RefineNet corrects the classical temporal fusion of its window instead of the reference's coarse HDR "
    "(config.temporal_base; ops.temporal_fuse: the coarse HDRs of t-1 and t+1 aligned by DIS flow between the HDRs "
    "and averaged with the reference where they agree with it to within its estimated noise, weighed against a "
    "one-pixel flow error on its gradients), so an untrained RefineNet returns that fusion: a zero-initialised "
    "residual over CoarseNet learns nothing a CPU session can see, and the fusion is the classical answer to what "
    "the window adds to the reference.")


@dataclass(frozen=True)
class RefineOptions(CoarseOptions):
    loss: str = field(default="log", metadata={
        "choices": ("log", "eq6"), "run": True,
        "help": "the per-crop log mu-law L1 (losses.log_mu_l1) or the paper's eq. 6 + perc_weight x the "
                "perceptual substitute"})
    perc_weight: float = field(default=0.5, metadata={"help": "weight of the perceptual substitute (--loss eq6)"})
    deformable_align: bool = field(default=True, metadata={
        "run": True, "help": "RefineNet's deformable alignment (--no-deformable-align: Table 5's w/o DA)"})
    attention_fusion: bool = field(default=True, metadata={
        "run": True, "help": "RefineNet's temporal attention fusion (--no-attention-fusion: Table 5's w/o TAF)"})
    output_mask: bool = field(default=True, metadata={
        "run": True, "help": "eq. 5's blend, CoarseNet's HDR kept where the reference is well exposed "
                             "(--no-output-mask: the residual applies everywhere, so noisy well-exposed pixels "
                             "are refined too)"})
    mulaw_input: bool = field(default=False, metadata={
        "run": True, "help": "feed RefineNet the coarse HDRs mu-law tonemapped instead of linear (the dark half "
                             "of a frame is 1e-3..1e-2 in linear)"})
    temporal_base: bool = field(default=True, metadata={
        "run": True, "help": "correct the classical temporal fusion of the coarse window (ops.temporal_fuse) instead "
                             "of the reference's coarse HDR (--no-temporal-base: the coarse HDR, as in the paper)"})

    def refine_config(self, exposures: int) -> RefineNetConfig:
        return dataclasses.replace(RefineNetConfig.for_exposures(exposures), deformable_align=self.deformable_align,
                                   attention_fusion=self.attention_fusion, output_mask=self.output_mask,
                                   mulaw_input=self.mulaw_input, temporal_base=self.temporal_base)


@register
class RefineStage(CoarseNetStage):
    name = "refine"
    order = 2
    summary = "RefineNet with the shipped CoarseNet frozen (per-crop log mu-law L1, or eq. 6 + perceptual substitute)"
    Options = RefineOptions
    kind = "refine"
    ship_files = ("refine",)
    trained = ("refine",)
    start_metric = "val_psnr_mu_base"  # its zero-initialised residual starts from the coarse HDR or its fusion

    @property
    def losses(self) -> str:  # type: ignore[override]
        if self.opt.loss == "log":
            return "mean over crops of log(1e-4 + each crop's mu-law L1) on the final HDR (losses.log_mu_l1)"
        return ("eq. 6 L1 normalised by the badly exposed area (floored at 5% of the pixels) + perc_weight x "
                "(multi-scale gradient L1 + (1 - SSIM)) in the mu-law domain, substituting the VGG16 perceptual loss")

    def init(self) -> None:
        cfg, n = self.cfg, self.cfg.exposures
        self.nets["coarse"] = shipped_coarse(self, require=True)
        config = self.opt.refine_config(n)
        if cfg.init_from and cfg.init_from != "none":
            self.nets["refine"] = RefineNet(config)
            self.init_notes.append(load_into(self.nets["refine"], Path(cfg.init_from), "refine", self.previous))
            return
        shipped = None if cfg.init_from == "none" else load_shipped(f"refine-{n}exp", cfg, self.device)
        coarse_sha = self.previous["coarse"].sha256
        if shipped is not None and shipped[0].config == config and shipped[1].recipe.get("coarse_sha256") == coarse_sha:
            self.nets["refine"], self.previous["refine"] = shipped
            self.init_notes.append(f"RefineNet {W.REGISTRY[f'refine-{n}exp'].file} (shipped)")
            return
        if shipped is not None:  # a residual learnt over another CoarseNet's output is no start for this one
            log.info("train: the shipped RefineNet corrects another CoarseNet (sha256 %s, now %s); starting from "
                     "its zero-initialised residual", str(shipped[1].recipe.get("coarse_sha256"))[:16], coarse_sha[:16])
        self.nets["refine"] = RefineNet(config)

    def _forward(self, batch):
        n = self.cfg.exposures
        ldrs, evs = batch["ldrs"], batch["evs"]
        grad = "coarse" in self.trained
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            coarse = run_coarse_window(self.nets["coarse"], ldrs, evs, batch.get("init_flows"),
                                       batch.get("init_conf"))  # (B, 3, 3, H, W)
        net, window_evs = self.nets["refine"], evs[:, n - 1:n + 2]
        base = net.base_window(coarse, window_evs)
        return coarse, base, net(base, ldrs[:, n - 1:n + 2], window_evs)

    def loss(self, batch):
        *_, out = self._forward(batch)
        gt, hs = batch["gt"][:, 1], batch["h_sat"]
        l1 = refine_l1(out.hdr, gt, out.mask, hs)
        if self.opt.loss == "log":  # a correction of CoarseNet: every crop counts alike
            return log_mu_l1(out.hdr, gt, hs), {"eq6_l1": l1.item()}
        perc = structure_loss(out.hdr, gt, hs)
        return l1 + self.opt.perc_weight * perc, {"eq6_l1": l1.item(), "structure": perc.item()}

    @torch.no_grad()
    def validate(self, batch):
        coarse, base, out = self._forward(batch)
        gt, hs = batch["gt"][:, 1], batch["h_sat"]
        return {"val_psnr_mu": psnr_mu(out.hdr, gt, hs),
                "val_psnr_mu_coarse": psnr_mu(coarse[:, 1], gt, hs),
                "val_psnr_mu_base": psnr_mu(base[:, 1], gt, hs),
                "val_psnr_mu_reference_only": psnr_mu(ref_only(batch, self.cfg.exposures), gt, hs)}

    def recipe(self, key: str, digests: dict[str, str]) -> dict[str, Any]:
        out = super().recipe(key, digests)
        if key == "refine":
            prev = self.previous.get("coarse")
            out["coarse_sha256"] = digests.get("coarse") or (prev.sha256 if prev else None)
        return out

    def net_deviations(self, key: str, config: dict) -> list[str]:
        if key != "refine":
            return super().net_deviations(key, config)
        return (super().net_deviations(key, config) + [REFINE_RESIDUAL_DEVIATION] * bool(config.get("coarse_residual"))
                + [REFINE_LOG_LOSS_DEVIATION] * (self.opt.loss == "log")
                + [REFINE_UNMASKED_DEVIATION] * (config.get("output_mask") is False)
                + [REFINE_MULAW_INPUT_DEVIATION] * bool(config.get("mulaw_input"))
                + [REFINE_TEMPORAL_BASE_DEVIATION] * bool(config.get("temporal_base")))


@register
class FinetuneStage(RefineStage):
    name = "finetune"
    order = 3
    summary = "CoarseNet and RefineNet together with the refine loss"
    lr = 2e-5
    ship_files = ("coarse", "refine")
    trained = ("coarse", "refine")
    losses = "as refine, CoarseNet and RefineNet trained together"

    @property
    def flow_scale(self) -> float:  # type: ignore[override]
        return self.opt.flow_lr_scale

    def init(self) -> None:
        n = self.cfg.exposures
        if load_shipped(f"refine-{n}exp", self.cfg, self.device) is None and self.cfg.init_from in ("", "none"):
            raise FileNotFoundError(f"train finetune: needs shipped coarse and refine weights; run "
                                    f"`vs-hdrvid train refine --exposures {n}` first")
        super().init()
