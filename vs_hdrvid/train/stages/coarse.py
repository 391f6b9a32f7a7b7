"""``coarse``: CoarseNet end to end (Chen et al. section 3.2), and what CoarseNet's other stages share.

The mu-law L1 of eq. 1; the flow net at ``flow_lr_scale * lr``. With ``blend="merge"`` (the
shipped design) CoarseNet corrects the weight-free merge aligned by the DIS flows, and the loss is
the mean over crops of the log of each crop's mu-law L1. Ships ``coarse_<n>exp.safetensors``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
import torch
from torch import Tensor

from vs_hdrvid import weights as W
from vs_hdrvid.models.blocks import ldr_to_hdr
from vs_hdrvid.models.coarsenet import CoarseNet, CoarseNetConfig
from vs_hdrvid.ops.merge import merge_exposures
from vs_hdrvid.ops.metrics import psnr_mu
from vs_hdrvid.ops.warp import flow_warp
from vs_hdrvid.train.losses import log_mu_l1, mu_l1
from vs_hdrvid.train.stages.base import Stage, StageOptions, load_into, load_shipped, ref_only, register, weights_dir

__all__ = ["CoarseOptions", "CoarseStage", "COARSE_MERGE_DEVIATION", "coarse_config", "coarse_inputs",
           "classical_merge", "run_coarse_window", "shipped_coarse"]

log = logging.getLogger("vs_hdrvid.train")

COARSE_MERGE_DEVIATION = (
    "CoarseNet corrects the classical answer instead of estimating from scratch (config.blend='merge'): "
    "its window is aligned by the DIS flows of hv.classical_flow (flow_refine: corrected by a SpyNet whose "
    "zero-initialised level outputs refine them), and the weight network predicts, with a zero-initialised "
    "head, a per-channel log-weight residual over the weight-free merge's own weights (hat, exposure, ghost "
    "rejection) and a mu-law residual over the blend. At step 0 it equals hv.merge with the same flows exactly; "
    "a CPU budget of a few thousand steps cannot teach a network from scratch what DIS and the merge know. "
    "No batch norm in that weight network (small-batch statistics move a correction that must start at zero), "
    "no tone perturbation of the reference (it makes the classical base wrong in training only), and the "
    "paper's mask keeping the reference's own radiance is the merge's weighting instead. Loss: the mean over "
    "crops of the log of each crop's mu-law L1, so that clean crops (errors a tenth of noisy ones) count alike.")

FLOW_FILL_DEVIATION = (
    "Flow correction (flow_net='fill'): instead of the paper's SpyNet, a confidence-gated fill of the DIS flow "
    "(models.flow_fill.FlowFill): normalised convolutions of the DIS flow weighted by its forward-backward "
    "confidence at 2/4/8/16 px, mixed in per pixel by tanh gates, plus a free residual, both from a 5-layer dilated "
    "CNN (32 channels, half resolution) whose last convolution starts at zero, so untrained it returns the DIS "
    "flow. The DIS-initialised SpyNet moved the EPE by less than 0.001 px in 3174 CPU steps; DIS fails where "
    "matching has no evidence (clipped, flat, noisy regions), and there the flow of the confident surroundings "
    "is the known-good answer, one gate away. Trained on the ground-truth flow (EPE) before the weight network.")


@dataclass(frozen=True)
class CoarseDesign(StageOptions):
    """Which CoarseNet a run trains (and, for ``refine``, which shipped CoarseNet it runs on)."""

    blend: str = field(default="merge", metadata={
        "choices": ("merge", "paper"), "run": True,
        "help": "CoarseNet's design: a correction of the DIS-aligned merge (merge) or the paper's"})
    flow_refine: bool = field(default=True, metadata={
        "run": True, "help": "CoarseNet (blend=merge) with a flow network correcting the DIS flows "
                             "(--no-flow-refine: the DIS flows as they are)"})
    flow_net: str = field(default="fill", metadata={
        "choices": ("spynet", "fill"), "run": True,
        "help": "the flow network of --flow-refine: the confidence-gated fill of the DIS flow "
                "(models.flow_fill; the shipped design), or the DIS-initialised SpyNet"})


@dataclass(frozen=True)
class CoarseOptions(CoarseDesign):
    flow_lr_scale: float = field(default=0.25, metadata={"help": "flow net lr relative to --lr"})
    head_lr_scale: float = field(default=0.5, metadata={
        "help": "lr of a blend=merge CoarseNet's zero-initialised output layer relative to --lr"})


def coarse_config(cfg) -> CoarseNetConfig:
    opt = cfg.options
    return CoarseNetConfig.for_exposures(cfg.exposures, opt.blend, opt.flow_refine, opt.flow_net)


def shipped_coarse(stage: Stage, require: bool) -> CoarseNet | None:
    """The shipped CoarseNet of the run's pattern when it has the run's design, else None (or,
    with ``require``, an error naming the command that makes it)."""
    cfg, n, opt = stage.cfg, stage.cfg.exposures, stage.cfg.options
    name = f"coarse-{n}exp"
    shipped = load_shipped(name, cfg, stage.device)
    if shipped is not None and shipped[0].config == coarse_config(cfg):
        stage.previous["coarse"] = shipped[1]
        stage.init_notes.append(f"CoarseNet {W.REGISTRY[name].file} (shipped, sha256 {shipped[1].sha256[:16]})")
        return shipped[0]
    if shipped is not None:
        log.warning("train: the shipped %s is not blend=%s flow_refine=%s; not continuing it",
                    W.REGISTRY[name].file, opt.blend, opt.flow_refine)
    if require:
        raise FileNotFoundError(f"train {cfg.stage}: needs a shipped blend={opt.blend} CoarseNet in {weights_dir(cfg)}; "
                                f"run `vs-hdrvid train coarse --exposures {n}` first")
    return None


def coarse_inputs(net: CoarseNet, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(ldrs, evs, init_flows, init_conf)`` of a ``coarse``/``flow`` batch for ``net``."""
    if not net.needs_init_flows:
        return batch["ldrs"], batch["evs"], None, None
    return batch["ldrs"], batch["evs"], batch["init_flows"][:, 0], batch["init_conf"][:, 0]


def run_coarse_window(net: CoarseNet, ldrs: Tensor, evs: Tensor, init_flows: Tensor | None = None,
                      init_conf: Tensor | None = None) -> Tensor:
    """Coarse HDRs of the three centre frames of a ``2n+1`` window (RefineNet's input).

    Shape: ``ldrs (B, 2n+1, 3, H, W)``, ``evs (B, 2n+1)``, ``init_flows (B, 3, K, 2, H, W)`` and
    ``init_conf (B, 3, K, 1, H, W)`` (the classical flows of each coarse window, ``blend="merge"``)
    -> ``(B, 3, 3, H, W)``.
    """
    b, t = ldrs.shape[:2]
    w = net.window
    sub = torch.cat([ldrs[:, j:j + w] for j in range(t - w + 1)])  # (3B, 2n-1, 3, H, W), window-major
    sub_ev = torch.cat([evs[:, j:j + w] for j in range(t - w + 1)])
    flows = conf = None
    if init_flows is not None:
        flows, conf = (x.transpose(0, 1).reshape(-1, *x.shape[2:]) for x in (init_flows, init_conf))
    hdr = net(sub, sub_ev, flows, conf).hdr  # (3B, 3, H, W)
    return hdr.reshape(t - w + 1, b, *hdr.shape[1:]).transpose(0, 1)


def classical_merge(net: CoarseNet, batch: dict[str, Tensor]) -> Tensor:
    """What a ``blend="merge"`` CoarseNet starts from: the weight-free merge of its window aligned
    by the batch's classical flows (the network with its corrections switched off)."""
    ldrs, evs, init, conf = coarse_inputs(net, batch)
    b, t = ldrs.shape[:2]
    hdrs = ldr_to_hdr(ldrs.flatten(0, 1), evs.flatten(), net.config.gamma).unflatten(0, (b, t))
    k, ci = t - 1, net.center
    warped = flow_warp(hdrs[:, net.neighbours].flatten(0, 1), init.flatten(0, 1)).unflatten(0, (b, k))
    frames = torch.cat((warped[:, :ci], hdrs[:, ci:ci + 1], warped[:, ci:]), dim=1)
    valid = torch.cat((conf[:, :ci], torch.ones_like(conf[:, :1]), conf[:, ci:]), dim=1)
    r = net.config.merge_radius
    sub = slice(ci - r, ci + r + 1)
    return merge_exposures(frames[:, sub], evs[:, sub], valid[:, sub], r)


def _as_json(config: dict | None) -> dict | None:
    """A config as JSON reads it back (checkpoints keep tuples where manifests have lists)."""
    return json.loads(json.dumps(config))


class CoarseNetStage(Stage):
    """What the stages that run a CoarseNet share: its classical flows and its parameter groups."""

    @property
    def classical_flow(self) -> bool:
        net = self.nets.get("coarse")
        return isinstance(net, CoarseNet) and net.needs_init_flows

    def param_groups(self) -> list[dict]:
        groups = []
        for name in self.trained:
            net = self.nets[name]
            if not isinstance(net, CoarseNet):
                groups.append({"params": list(net.parameters()), "lr_scale": 1.0, "name": name})
                continue
            if net.flownet is not None:
                groups.append({"params": list(net.flownet.parameters()), "lr_scale": self.flow_scale, "name": "flownet"})
            wn = net.weightnet
            scale = self.opt.head_lr_scale if net.config.weight.residual_head else 1.0
            head = {id(p) for p in wn.out_conv.parameters()}
            groups.append({"params": [p for p in wn.parameters() if id(p) not in head], "lr_scale": 1.0,
                           "name": "weightnet"})
            groups.append({"params": list(wn.out_conv.parameters()), "lr_scale": scale, "name": "weightnet_head"})
        return groups

    def net_deviations(self, key: str, config: dict) -> list[str]:
        merge = key == "coarse" and config.get("blend") == "merge"
        fill = merge and config.get("flow_refine") and config.get("flow_net") == "fill"
        return super().net_deviations(key, config) + [COARSE_MERGE_DEVIATION] * merge + [FLOW_FILL_DEVIATION] * fill

    def schedule_text(self) -> str:
        flow = "coarse" in self.trained and self.nets["coarse"].flownet is not None
        return super().schedule_text() + (f"; flow net x{self.flow_scale:g}" if flow else "")


@register
class CoarseStage(CoarseNetStage):
    name = "coarse"
    order = 1
    summary = "CoarseNet end to end (mu-law L1)"
    Options = CoarseOptions
    ship_files = ("coarse",)
    start_metric = "val_psnr_mu_merge"  # blend="merge": the merge it starts from
    losses = ("mu-law L1 (Chen et al. eq. 1, mu=5000) on clip(H/H_sat, 0, 1); for blend='merge' the mean over "
              "crops of log(1e-4 + each crop's mu-law L1) (losses.log_mu_l1)")

    @property
    def flow_scale(self) -> float:  # type: ignore[override]
        return self.opt.flow_lr_scale

    def init(self) -> None:
        cfg, n = self.cfg, self.cfg.exposures
        if cfg.init_from:
            self.nets["coarse"] = CoarseNet(coarse_config(cfg))
            if cfg.init_from != "none":
                self.init_notes.append(load_into(self.nets["coarse"], Path(cfg.init_from), "coarse", self.previous))
            return
        shipped = shipped_coarse(self, require=False)
        if shipped is not None:
            self.nets["coarse"] = shipped
            return
        net = self.nets["coarse"] = CoarseNet(coarse_config(cfg))
        if net.flownet is not None and self.opt.blend == "merge":
            self._weightnet_of_shipped(net)
        pre = Path(cfg.runs_dir) / f"spynet-{n}exp" / "ckpt.pt"
        if pre.is_file() and net.flownet is not None:
            state = torch.load(pre, map_location="cpu", weights_only=False)
            if _as_json(state.get("net_configs", {}).get("coarse")) == _as_json(coarse_config(cfg).to_dict()):
                flow = {k.removeprefix("flownet."): v for k, v in state["nets"]["coarse"].items()
                        if k.startswith("flownet.")}
                net.flownet.load_state_dict(flow)
                self.starts_as_previous = False  # the shipped weight network, on other flows
                self.init_notes.append(f"flow network of {pre} (step {state.get('step')})")
        if not self.init_notes:
            log.info("train: no shipped CoarseNet of this design; starting from %s",
                     "the classical merge (zero-initialised corrections)" if self.opt.blend == "merge" else "random weights")

    def _weightnet_of_shipped(self, net: CoarseNet) -> None:
        """A flow-refining CoarseNet starts from the shipped one that uses the DIS flows as they are
        (same weight network, no flow network): its weight network is trained, and the flow
        network's zero-initialised outputs leave the DIS flows unchanged until it learns."""
        cfg = self.cfg
        plain = dataclasses.replace(coarse_config(cfg), flow_refine=False, flow_net="spynet")
        shipped = load_shipped(f"coarse-{cfg.exposures}exp", cfg, torch.device("cpu"))
        if shipped is None or shipped[0].config != plain:
            return
        net.weightnet.load_state_dict(shipped[0].weightnet.state_dict())
        self.previous["coarse"] = shipped[1]
        self.init_notes.append(f"weight network of {W.REGISTRY[f'coarse-{cfg.exposures}exp'].file} "
                               f"(shipped with flow_refine=False, sha256 {shipped[1].sha256[:16]})")

    def loss(self, batch):
        net = self.nets["coarse"]
        out = net(*coarse_inputs(net, batch))
        gt, hs = batch["gt"][:, 0], batch["h_sat"]
        l1 = mu_l1(out.hdr, gt, hs)
        if net.needs_init_flows:  # a correction of the merge: every crop counts alike (losses.log_mu_l1)
            return log_mu_l1(out.hdr, gt, hs), {"mu_l1": l1.item()}
        return l1, {"mu_l1": l1.item()}

    @torch.no_grad()
    def validate(self, batch):
        net = self.nets["coarse"]
        hdr = net(*coarse_inputs(net, batch)).hdr
        gt, hs = batch["gt"][:, 0], batch["h_sat"]
        res = {"val_psnr_mu": psnr_mu(hdr, gt, hs),
               "val_psnr_mu_reference_only": psnr_mu(ref_only(batch, net.center), gt, hs)}
        if net.needs_init_flows:  # the classical starting point: the merge with the same flows
            res["val_psnr_mu_merge"] = psnr_mu(classical_merge(net, batch), gt, hs)
        return res
