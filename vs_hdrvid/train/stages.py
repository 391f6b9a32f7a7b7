"""What each training stage builds, optimises, measures and ships.

A :class:`Stage` owns the networks of a run (``self.nets``), their parameter groups, the loss of
a training batch and the validation of a batch. The loop in :mod:`vs_hdrvid.train.loop` is the
same for every stage.

* ``spynet``: CoarseNet's flow network alone against the ground-truth flows ``t -> neighbours``
  (EPE; with three exposures the ``t -> t+-2`` flows are composed from one-frame steps, see
  :mod:`vs_hdrvid.train.data`). Nothing is shipped: ``coarse`` starts from this run's checkpoint.
* ``coarse``: CoarseNet end to end with the mu-law L1 (section 3.2); flow net at
  ``flow_lr_scale * lr``. Ships ``coarse_<n>exp.safetensors`` (the whole CoarseNet).
* ``refine``: RefineNet on the coarse HDRs of ``t-1, t, t+1`` from the frozen shipped CoarseNet,
  loss eq. 6 + ``perc_weight`` x perceptual substitute. Ships ``refine_<n>exp.safetensors``.
* ``finetune``: both networks with the refine loss at lr 2e-5; ships both files.
* ``dealthdr``: DeAltHDR on the degraded scenes with the mu-law L1 + ``perc_weight`` x perceptual
  substitute (eqs. 9-10) + ``flow_weight`` x the SpyNet's EPE. Each batch draws its alignment
  branch as section 5.1 does: 30% flow only (``s = 0``), 30% attention only (``s = inf``), 40%
  FGMA with a random ``s`` (half from ``(0, 1]``, half from ``(1, 100)``, the paper's sampling of
  the curve). Ships ``dealthdr_2exp.safetensors``.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from vs_hdrvid import weights as W
from vs_hdrvid.models.blocks import ldr_to_hdr
from vs_hdrvid.models.coarsenet import CoarseNet, CoarseNetConfig
from vs_hdrvid.models.dealthdr import DeAltHDR, DeAltHDRConfig
from vs_hdrvid.models.refinenet import RefineNet, RefineNetConfig
from vs_hdrvid.ops.merge import merge_exposures
from vs_hdrvid.ops.metrics import psnr_mu
from vs_hdrvid.ops.warp import flow_warp
from vs_hdrvid.train.config import TrainConfig
from vs_hdrvid.train.losses import epe, log_mu_l1, mu_l1, refine_l1, structure_loss

__all__ = ["Stage", "make_stage", "run_coarse_window"]

log = logging.getLogger("vs_hdrvid.train")


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


def coarse_inputs(net: CoarseNet, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(ldrs, evs, init_flows, init_conf)`` of a ``coarse``/``flow`` batch for ``net``."""
    if not net.needs_init_flows:
        return batch["ldrs"], batch["evs"], None, None
    return batch["ldrs"], batch["evs"], batch["init_flows"][:, 0], batch["init_conf"][:, 0]


def _weights_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.weights_dir) if cfg.weights_dir else W.WEIGHTS_DIR


def load_shipped(name: str, cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, dict] | None:
    """The shipped network ``name`` (sha256-checked) and its manifest entry, or None if absent."""
    folder = _weights_dir(cfg)
    spec = W.REGISTRY[name]
    if not (folder / spec.file).is_file() or spec.file not in W.read_manifest(folder):
        return None
    net, entry = W.load(name, device=device, folder=folder)
    return net.train(), entry


def load_into(net: nn.Module, path: Path, key: str) -> str:
    """Load weights for ``net`` from a ``.safetensors`` file or from a run's ``ckpt.pt`` (its
    ``nets[key]``). A safetensors file listed in its folder's manifest must match its sha256.

    Returns:
        a provenance string ``"<path> (sha256 ...)"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"train: --init-from {path} does not exist")
    if path.suffix == ".safetensors":
        entry = W.read_manifest(path.parent).get(path.name)
        digest = W.sha256_of(path)
        if entry is not None and entry["sha256"] != digest:
            raise W.WeightsError(f"{path}: sha256 {digest} but the manifest expects {entry['sha256']}")
        with safe_open(str(path), "pt") as f:
            stored = json.loads((f.metadata() or {}).get("config", "null"))
        if stored is not None and stored != json.loads(json.dumps(net.config.to_dict())):
            raise ValueError(f"train: {path} holds a network with config {stored}, not {net.config.to_dict()}")
        net.load_state_dict(load_file(str(path)))
        return f"{path} (sha256 {digest[:16]})"
    state = torch.load(path, map_location="cpu", weights_only=False)
    if key not in state.get("nets", {}):
        raise ValueError(f"train: checkpoint {path} holds {sorted(state.get('nets', {}))}, not {key!r}")
    net.load_state_dict(state["nets"][key])
    return f"{path} (step {state.get('step')})"


class Stage:
    """Base: ``nets`` (name -> module), ``trained`` (names optimised), ``ship_files``.

    ``previous`` holds the manifest entries of shipped weights a run continued from, so the
    manifest keeps the whole training history of a file.
    """

    kind = "coarse"  # data window kind
    trained: tuple[str, ...] = ("coarse",)  # networks optimised
    ship_files: tuple[str, ...] = ()
    metric = "val_psnr_mu"
    flow_scale = 1.0  # the flow net's lr relative to the base lr

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.nets: dict[str, nn.Module] = {}
        self.init_notes: list[str] = []
        self.previous: dict[str, dict] = {}  # shipped entries continued from

    @property
    def classical_flow(self) -> bool:
        """Whether the batches must carry the classical flows (a ``blend="merge"`` CoarseNet)."""
        net = self.nets.get("coarse")
        return isinstance(net, CoarseNet) and net.needs_init_flows

    # -- set-up
    def init(self) -> None:
        """Build (and initialise) the networks; called only when not resuming."""
        raise NotImplementedError

    def rebuild(self, configs: dict[str, dict]) -> None:
        """Networks from the configs a checkpoint stored (their weights are loaded after)."""
        self.nets = {name: W.build_network(name, c) for name, c in configs.items()}

    def param_groups(self) -> list[dict]:
        groups = []
        for name in self.trained:
            net = self.nets[name]
            if isinstance(net, CoarseNet):
                if net.flownet is not None:
                    groups.append({"params": list(net.flownet.parameters()), "lr_scale": self.flow_scale, "name": "flownet"})
                wn = net.weightnet
                scale = self.cfg.head_lr_scale if net.config.weight.residual_head else 1.0
                head = {id(p) for p in wn.out_conv.parameters()}
                groups.append({"params": [p for p in wn.parameters() if id(p) not in head],
                               "lr_scale": 1.0, "name": "weightnet"})
                groups.append({"params": list(wn.out_conv.parameters()), "lr_scale": scale, "name": "weightnet_head"})
            else:
                groups.append({"params": list(net.parameters()), "lr_scale": 1.0, "name": name})
        return groups

    def to(self) -> None:
        for name, net in self.nets.items():
            net.to(self.device)
            net.train(name in self.trained)
            net.requires_grad_(name in self.trained)

    # -- per batch
    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-crop values ``(B,)`` by metric name (the first is the stage's metric)."""
        raise NotImplementedError


def _coarse_config(cfg: TrainConfig) -> CoarseNetConfig:
    return CoarseNetConfig.for_exposures(cfg.exposures, cfg.blend, cfg.flow_refine)


def _shipped_coarse(stage: Stage, require: bool) -> CoarseNet | None:
    """The shipped CoarseNet of the run's pattern when it has the run's design, else None (or,
    with ``require``, an error naming the command that makes it)."""
    cfg, n = stage.cfg, stage.cfg.exposures
    name = f"coarse-{n}exp"
    shipped = load_shipped(name, cfg, stage.device)
    if shipped is not None and shipped[0].config == _coarse_config(cfg):
        stage.previous["coarse"] = shipped[1]
        stage.init_notes.append(f"CoarseNet {W.REGISTRY[name].file} (shipped, sha256 {shipped[1]['sha256'][:16]})")
        return shipped[0]
    if shipped is not None:
        log.warning("train: the shipped %s is not blend=%s flow_refine=%s; not continuing it",
                    W.REGISTRY[name].file, cfg.blend, cfg.flow_refine)
    if require:
        raise FileNotFoundError(f"train {cfg.stage}: needs a shipped blend={cfg.blend} CoarseNet in {_weights_dir(cfg)}; "
                                f"run `vs-hdrvid train coarse --exposures {n}` first")
    return None


def _ref_only(batch: dict[str, Tensor], center: int) -> Tensor:
    """Linearisation of the reference LDR alone, ``L**2.2 / 2**EV``."""
    return ldr_to_hdr(batch["ldrs"][:, center], batch["evs"][:, center])


class SpyNetStage(Stage):
    """CoarseNet's flow network alone on ground-truth flow (EPE). With ``blend="merge"`` it learns
    to correct the DIS flows (``refine_init``); validation reports the DIS flows' EPE beside it."""

    kind = "flow"
    metric = "val_epe"

    def init(self) -> None:
        cfg = self.cfg
        if not cfg.flow_refine and cfg.blend == "merge":
            raise ValueError("train spynet: --no-flow-refine leaves CoarseNet without a flow network to train")
        net = None if cfg.init_from else _shipped_coarse(self, require=False)
        self.nets["coarse"] = net if net is not None else CoarseNet(_coarse_config(cfg))
        if cfg.init_from and cfg.init_from != "none":
            self.init_notes.append(load_into(self.nets["coarse"], Path(cfg.init_from), "coarse"))

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.nets["coarse"].flownet.parameters()), "lr_scale": 1.0, "name": "flownet"}]

    def to(self) -> None:
        super().to()
        self.nets["coarse"].weightnet.requires_grad_(False)

    def loss(self, batch):
        net = self.nets["coarse"]
        ldrs, evs, init, _ = coarse_inputs(net, batch)
        loss = epe(net.flows(ldrs, evs, init), batch["flows"], batch["flow_valid"])
        return loss, {"epe": loss.item()}

    @torch.no_grad()
    def validate(self, batch):
        net = self.nets["coarse"]
        ldrs, evs, init, _ = coarse_inputs(net, batch)
        v, gt = batch["flow_valid"], batch["flows"]

        def per(f: Tensor) -> Tensor:  # mean end-point error over the valid pixels of each crop
            err = (f - gt).pow(2).sum(2, keepdim=True).sqrt()  # (B, K, 1, H, W)
            return (err * v).flatten(1).sum(1) / v.flatten(1).sum(1).clamp(min=1)
        res = {"val_epe": per(net.flows(ldrs, evs, init)), "val_epe_zero_flow": per(torch.zeros_like(gt))}
        if init is not None:
            res["val_epe_classical"] = per(init)
        return res


class CoarseStage(Stage):
    ship_files = ("coarse",)

    @property
    def flow_scale(self) -> float:  # type: ignore[override]
        return self.cfg.flow_lr_scale

    def init(self) -> None:
        cfg, n = self.cfg, self.cfg.exposures
        if cfg.init_from:
            self.nets["coarse"] = CoarseNet(_coarse_config(cfg))
            if cfg.init_from != "none":
                self.init_notes.append(load_into(self.nets["coarse"], Path(cfg.init_from), "coarse"))
            return
        shipped = _shipped_coarse(self, require=False)
        if shipped is not None:
            self.nets["coarse"] = shipped
            return
        self.nets["coarse"] = CoarseNet(_coarse_config(cfg))
        pre = Path(cfg.runs_dir) / f"spynet-{n}exp" / "ckpt.pt"
        if pre.is_file() and self.nets["coarse"].flownet is not None:
            state = torch.load(pre, map_location="cpu", weights_only=False)
            if state.get("net_configs", {}).get("coarse") == json.loads(json.dumps(_coarse_config(cfg).to_dict())):
                self.init_notes.append(load_into(self.nets["coarse"], pre, "coarse"))
        if not self.init_notes:
            log.info("train: no shipped CoarseNet of this design; starting from %s",
                     "the classical merge (zero-initialised corrections)" if cfg.blend == "merge" else "random weights")

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
               "val_psnr_mu_reference_only": psnr_mu(_ref_only(batch, net.center), gt, hs)}
        if net.needs_init_flows:  # the classical starting point: the merge with the same flows
            res["val_psnr_mu_merge"] = psnr_mu(classical_merge(net, batch), gt, hs)
        return res


class RefineStage(Stage):
    kind = "refine"
    ship_files = ("refine",)
    trained = ("refine",)

    def init(self) -> None:
        cfg, n = self.cfg, self.cfg.exposures
        self.nets["coarse"] = _shipped_coarse(self, require=True)
        if cfg.init_from and cfg.init_from != "none":
            self.nets["refine"] = RefineNet(RefineNetConfig.for_exposures(n))
            self.init_notes.append(load_into(self.nets["refine"], Path(cfg.init_from), "refine"))
            return
        shipped = None if cfg.init_from == "none" else load_shipped(f"refine-{n}exp", cfg, self.device)
        if shipped is not None:
            self.nets["refine"], self.previous["refine"] = shipped
            self.init_notes.append(f"RefineNet {W.REGISTRY[f'refine-{n}exp'].file} (shipped)")
        else:
            self.nets["refine"] = RefineNet(RefineNetConfig.for_exposures(n))

    def _forward(self, batch):
        n = self.cfg.exposures
        ldrs, evs = batch["ldrs"], batch["evs"]
        grad = "coarse" in self.trained
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            coarse = run_coarse_window(self.nets["coarse"], ldrs, evs, batch.get("init_flows"),
                                       batch.get("init_conf"))  # (B, 3, 3, H, W)
        return coarse, self.nets["refine"](coarse, ldrs[:, n - 1:n + 2], evs[:, n - 1:n + 2])

    def loss(self, batch):
        _, out = self._forward(batch)
        gt, hs = batch["gt"][:, 1], batch["h_sat"]
        l1 = refine_l1(out.hdr, gt, out.mask, hs)
        perc = structure_loss(out.hdr, gt, hs)
        return l1 + self.cfg.perc_weight * perc, {"eq6_l1": l1.item(), "structure": perc.item()}

    @torch.no_grad()
    def validate(self, batch):
        coarse, out = self._forward(batch)
        gt, hs = batch["gt"][:, 1], batch["h_sat"]
        return {"val_psnr_mu": psnr_mu(out.hdr, gt, hs),
                "val_psnr_mu_coarse": psnr_mu(coarse[:, 1], gt, hs),
                "val_psnr_mu_reference_only": psnr_mu(_ref_only(batch, self.cfg.exposures), gt, hs)}


class FinetuneStage(RefineStage):
    ship_files = ("coarse", "refine")
    trained = ("coarse", "refine")

    @property
    def flow_scale(self) -> float:  # type: ignore[override]
        return self.cfg.flow_lr_scale

    def init(self) -> None:
        n = self.cfg.exposures
        if load_shipped(f"refine-{n}exp", self.cfg, self.device) is None and self.cfg.init_from in ("", "none"):
            raise FileNotFoundError(f"train finetune: needs shipped coarse and refine weights; run "
                                    f"`vs-hdrvid train refine --exposures {n}` first")
        super().init()


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


class DeAltHDRStage(Stage):
    kind = "dealthdr"
    trained = ("dealthdr",)
    ship_files = ("dealthdr",)

    def _config(self) -> DeAltHDRConfig:
        return DeAltHDRConfig.small() if self.cfg.model == "small" else DeAltHDRConfig()

    def init(self) -> None:
        cfg = self.cfg
        if cfg.init_from and cfg.init_from != "none":
            self.nets["dealthdr"] = DeAltHDR(self._config())
            self.init_notes.append(load_into(self.nets["dealthdr"], Path(cfg.init_from), "dealthdr"))
            return
        shipped = None if cfg.init_from == "none" else load_shipped("dealthdr-2exp", cfg, self.device)
        if shipped is not None and shipped[0].config == self._config():
            self.nets["dealthdr"], self.previous["dealthdr"] = shipped
            self.init_notes.append(f"{_weights_dir(cfg) / W.REGISTRY['dealthdr-2exp'].file} (shipped)")
            return
        self.nets["dealthdr"] = DeAltHDR(self._config())

    def loss(self, batch):
        s = sample_sensitivity()
        out = self.nets["dealthdr"](batch["ldrs"], batch["evs"], s)
        gt, hs = batch["gt"][:, 0], batch["h_sat"]
        l1 = mu_l1(out.hdr, gt, hs)
        perc = structure_loss(out.hdr, gt, hs)
        flow = epe(out.flows, batch["flows"], batch["flow_valid"])
        loss = l1 + self.cfg.perc_weight * perc + self.cfg.flow_weight * flow
        return loss, {"mu_l1": l1.item(), "structure": perc.item(), "epe": flow.item(), "s": min(s, 1e9),
                      "attention_ratio": out.attention_ratio}

    @torch.no_grad()
    def validate(self, batch):
        net = self.nets["dealthdr"]
        gt, hs = batch["gt"][:, 0], batch["h_sat"]
        res = {"val_psnr_mu": psnr_mu(net(batch["ldrs"], batch["evs"], 15.0).hdr, gt, hs)}
        for name, s in (("s0", 0.0), ("sinf", math.inf)):
            res[f"val_psnr_mu_{name}"] = psnr_mu(net(batch["ldrs"], batch["evs"], s).hdr, gt, hs)
        res["val_psnr_mu_reference_only"] = psnr_mu(_ref_only(batch, net.center), gt, hs)
        return res


def make_stage(cfg: TrainConfig, device: torch.device) -> Stage:
    return {"spynet": SpyNetStage, "coarse": CoarseStage, "refine": RefineStage,
            "finetune": FinetuneStage, "dealthdr": DeAltHDRStage}[cfg.stage](cfg, device)
