"""``spynet``: CoarseNet's flow network alone against the ground-truth flows ``t -> neighbours``.

EPE; with three exposures the ``t -> t+-2`` flows are composed from one-frame steps (see
:mod:`vs_hdrvid.train.data`). With ``blend="merge"`` it learns to correct the DIS flows
(``refine_init``) and validation reports the DIS flows' EPE beside it. Nothing is shipped:
``coarse`` starts from this run's checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from vs_hdrvid.models.coarsenet import CoarseNet
from vs_hdrvid.train.losses import epe, log_epe
from vs_hdrvid.train.stages.base import Stage, load_into, register
from vs_hdrvid.train.stages.coarse import CoarseDesign, CoarseNetStage, coarse_config, coarse_inputs, shipped_coarse

__all__ = ["SpyNetOptions", "SpyNetStage"]


@dataclass(frozen=True)
class SpyNetOptions(CoarseDesign):
    log_epe: bool = field(default=False, metadata={
        "help": "loss: the mean over crops of log(0.05 + each crop's EPE) (losses.log_epe), so crops where "
                "the DIS flow is nearly right count as much as those where it fails"})


@register
class SpyNetStage(CoarseNetStage):
    name = "spynet"
    order = 0
    summary = "CoarseNet's flow network on ground-truth flow (EPE)"
    Options = SpyNetOptions
    kind = "flow"
    metric = "val_epe"
    # refine_init's zero-initialised outputs did not move at 1e-4 (1200 steps, weights oscillating
    # around 3e-4); the README's flow table is of a run at this rate
    lr = 4e-4

    @property
    def losses(self) -> str:  # type: ignore[override]
        what = "the flow network's t->neighbour flows against ground truth, on pixels not occluded at the neighbour"
        return f"mean over crops of log(0.05 + EPE) of {what}" if self.opt.log_epe else f"EPE of {what}"

    def init(self) -> None:
        cfg = self.cfg
        if not self.opt.flow_refine and self.opt.blend == "merge":
            raise ValueError("train spynet: --no-flow-refine leaves CoarseNet without a flow network to train")
        net = None if cfg.init_from else shipped_coarse(self, require=False)
        self.nets["coarse"] = net if net is not None else CoarseNet(coarse_config(cfg))
        if cfg.init_from and cfg.init_from != "none":
            self.init_notes.append(load_into(self.nets["coarse"], Path(cfg.init_from), "coarse"))

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.nets["coarse"].flownet.parameters()), "lr_scale": 1.0, "name": "flownet"}]

    def to(self) -> None:
        super().to()
        self.nets["coarse"].weightnet.requires_grad_(False)

    def schedule_text(self) -> str:
        return Stage.schedule_text(self)

    def loss(self, batch):
        net = self.nets["coarse"]
        flows, gt, valid = net.flows(*coarse_inputs(net, batch)), batch["flows"], batch["flow_valid"]
        loss = log_epe(flows, gt, valid) if self.opt.log_epe else epe(flows, gt, valid)
        return loss, {"epe": epe(flows.detach(), gt, valid).item()}

    @torch.no_grad()
    def validate(self, batch):
        net = self.nets["coarse"]
        ldrs, evs, init, conf = coarse_inputs(net, batch)
        v, gt = batch["flow_valid"], batch["flows"]

        def per(f: Tensor) -> Tensor:  # mean end-point error over the valid pixels of each crop
            err = (f - gt).pow(2).sum(2, keepdim=True).sqrt()  # (B, K, 1, H, W)
            return (err * v).flatten(1).sum(1) / v.flatten(1).sum(1).clamp(min=1)
        res = {"val_epe": per(net.flows(ldrs, evs, init, conf)), "val_epe_zero_flow": per(torch.zeros_like(gt))}
        if init is not None:
            res["val_epe_classical"] = per(init)
        return res
