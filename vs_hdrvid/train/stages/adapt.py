"""``adapt``: self-supervised adaptation of DeAltHDR to unlabeled footage (DeAltHDR section 3.4, Algorithm 1).

For a reference frame ``t`` of the footage:

* ``H^ = B(W)`` from the 5-frame window ``W = {L_{t-2} .. L_{t+2}}``;
* ``H~ = B(S)`` from a 3-frame subset ``S = {L_t, L_A, L_B}``: ``L_A`` drawn from ``t +- 2k`` (the
  current exposure) and ``L_B`` from ``t +- (2k - 1)`` (the other), ``k`` in 1..3, so the subset's
  motion ranges up to ``t +- 6`` (the motion-enhanced sampling). The 5-frame network sees ``S``
  as the window ``[L_A, L_B, L_t, L_B, L_A]``: every slot keeps the exposure it was trained with;
* ``L_time = |T(H~) - T(sg(H^))|_1`` (the richer 5-frame output is the pseudo-target) and
  ``L_ema = |T(H^) - T(sg(H^_ema))|_1`` against an EMA teacher (``a = 0.999``);
  ``L_total = L_time + beta * L_ema`` (``beta = 1``; ``beta = 0`` reproduces the collapse of Table J).

``T`` is the mu-law of ``clip(H / H_sat)``. Each batch draws the FGMA branch as training does. The
run is the training loop's (resumable checkpoint with the teacher, budget, signals, log); there is
no validation (the footage has no ground truth). The adapted network is written with its manifest
entry to ``--out`` (``--weights`` of ``reconstruct`` and ``eval`` reads it).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vs_hdrvid import weights as W
from vs_hdrvid.train.data import window_classical_flows
from vs_hdrvid.train.losses import tonemap
from vs_hdrvid.train.stages.base import Stage, StageOptions, register
from vs_hdrvid.train.stages.dealthdr import sample_sensitivity

__all__ = ["AdaptOptions", "AdaptStage", "FootageWindows", "load_footage", "subset_window", "adaptation_loss"]

NAME = "dealthdr-2exp"


@dataclass(frozen=True)
class AdaptOptions(StageOptions):
    footage: tuple[str, ...] = field(default=(), metadata={
        "run": True, "help": "inputs vs-hdrvid reconstruct accepts (video, image pattern, .vpy)"})
    out: str = field(default="", metadata={"help": "folder for the adapted weights and their manifest"})
    source: str = field(default="dealthdr", metadata={
        "help": "'dealthdr' (the shipped weights) or a folder holding DeAltHDR weights"})
    ev_pattern: tuple[float, ...] | None = field(default=None, metadata={
        "help": "the footage's EV pattern (None: props or detection, as linearize)"})
    beta: float = field(default=1.0, metadata={"help": "weight of L_ema (0 disables it)"})
    ema: float = field(default=0.999, metadata={"help": "the EMA teacher's decay a"})
    reach: int = field(default=6, metadata={"help": "largest subset offset"})

    def check(self, cfg) -> None:
        if not self.footage:
            raise ValueError("adapt: give at least one footage input")
        if not self.out:
            raise ValueError("adapt: give an output folder (-o)")
        if not 0 < self.ema < 1 or self.beta < 0 or self.reach < 2:
            raise ValueError(f"adapt: need 0 < ema < 1, beta >= 0 and reach >= 2, got {self.ema}, {self.beta}, "
                             f"{self.reach}")
        if cfg.exposures != 2:
            raise ValueError("adapt: DeAltHDR adapts 2-exposure footage")
        if cfg.patch < 32:
            raise ValueError(f"adapt: patch must be at least 32, got {cfg.patch}")


def load_footage(path: str, exposures: list[float] | tuple[float, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """The footage as the network sees it: gamma-2.2 LDR ``(T, 3, H, W)`` float32 and EVs ``(T,)``.

    Goes through :func:`~vs_hdrvid.nodes.source` and :func:`~vs_hdrvid.nodes.linearize`, then back
    to LDR with :func:`~vs_hdrvid.models.blocks.radiance_to_ldr`, exactly as the node prepares frames.
    """
    from vs_hdrvid import nodes
    from vs_hdrvid.nodes._common import COUNT_PROP, EV_PROP
    from vs_hdrvid.models.blocks import radiance_to_ldr

    lin = nodes.linearize(nodes.source(path), exposures=list(exposures) if exposures else None, device="cpu")
    if int(lin.get_frame(0).props[COUNT_PROP]) != 2:
        raise ValueError(f"adapt: {path} does not alternate 2 exposures")
    frames, evs = [], []
    for f in lin.frames():
        h = torch.from_numpy(np.stack([np.asarray(f[p]) for p in range(3)]))
        ev = float(f.props[EV_PROP])
        frames.append(radiance_to_ldr(h[None], torch.tensor([ev]))[0].numpy())
        evs.append(ev)
    return np.stack(frames).astype(np.float32), np.array(evs, np.float32)


def subset_window(t: int, a: int, b: int) -> list[int]:
    """Frame indices of the 3-frame subset laid out as a 5-frame window ``[A, B, t, B, A]``."""
    return [a, b, t, b, a]


def adaptation_loss(net: nn.Module, teacher: nn.Module, full: Tensor, full_ev: Tensor,
                    sub: Tensor, sub_ev: Tensor, s: float, beta: float,
                    full_flows: tuple[Tensor, Tensor] | None = None,
                    sub_flows: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, dict[str, float]]:
    """Algorithm 1's ``L_time + beta * L_ema`` for a batch of windows.

    ``full_flows``/``sub_flows``: the windows' classical flows ``(fwd, bwd)`` for a network that
    takes them (``flow_source="dis"``), else None.

    Shape: ``full, sub (B, 5, 3, P, P)``, ``full_ev, sub_ev (B, 5)``, flows ``(B, 4, 2, P, P)``.
    """
    h_sat = torch.exp2(-full_ev.min(1).values)
    h_hat = net(full, full_ev, s, flows=full_flows).hdr
    h_tilde = net(sub, sub_ev, s, flows=sub_flows).hdr
    t_hat = tonemap(h_hat, h_sat)
    l_time = (tonemap(h_tilde, h_sat) - t_hat.detach()).abs().mean()
    loss = l_time
    parts = {"l_time": l_time.item()}
    if beta > 0:
        with torch.no_grad():
            t_ema = tonemap(teacher(full, full_ev, s, flows=full_flows).hdr, h_sat)
        l_ema = (t_hat - t_ema).abs().mean()
        loss = loss + beta * l_ema
        parts["l_ema"] = l_ema.item()
    parts["mean_mu"] = t_hat.mean().item()
    return loss, parts


class FootageWindows(Dataset):
    """Training windows (full and subset) over several clips; item ``i`` is drawn from the
    generator seeded ``(seed, i)``, so a resumed run continues the same sequence. With ``flows``
    each window also carries its classical flows (``full_fwd``, ``full_bwd``, ``sub_fwd``,
    ``sub_bwd``; :func:`~vs_hdrvid.train.data.window_classical_flows` on the crop)."""

    def __init__(self, paths: tuple[str, ...], ev_pattern, patch: int, reach: int, seed: int,
                 flows: bool = False) -> None:
        self.paths, self.patch, self.reach, self.seed, self.flows = paths, patch, reach, seed, flows
        self.clips = [load_footage(p, ev_pattern) for p in paths]
        for ldr, _ in self.clips:
            if ldr.shape[0] < 2 * reach + 1 or min(ldr.shape[-2:]) < patch:
                raise ValueError(f"adapt: footage of {ldr.shape[0]} frames of {ldr.shape[-1]}x{ldr.shape[-2]} is "
                                 f"too small: needs {2 * reach + 1} frames and {patch}x{patch} pixels")

    def __len__(self) -> int:
        return 2 ** 31 - 1

    def preload(self) -> None:
        """The clips are decoded at construction."""

    def describe(self) -> dict:
        return {"footage": list(self.paths), "frames": [int(c[0].shape[0]) for c in self.clips]}

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, i])
        ldr, evs = self.clips[int(rng.integers(len(self.clips)))]
        r, p = self.reach, self.patch
        t = int(rng.integers(r, ldr.shape[0] - r))
        k = int(rng.integers(1, r // 2 + 1))
        a = t + int(rng.choice((-1, 1))) * 2 * k
        k = int(rng.integers(1, (r + 1) // 2 + 1))
        b = t + int(rng.choice((-1, 1))) * (2 * k - 1)
        y, x = int(rng.integers(0, ldr.shape[-2] - p + 1)), int(rng.integers(0, ldr.shape[-1] - p + 1))
        full, sub = list(range(t - 2, t + 3)), subset_window(t, a, b)
        crop = ldr[:, :, y:y + p, x:x + p]
        fl, sb = crop[full], crop[sub]
        if rng.random() < 0.5:
            fl, sb = fl[..., ::-1], sb[..., ::-1]
        out = {"full": fl.copy(), "full_ev": evs[full], "sub": sb.copy(), "sub_ev": evs[sub]}
        if self.flows:
            for name in ("full", "sub"):
                out[f"{name}_fwd"], out[f"{name}_bwd"] = window_classical_flows(out[name], out[f"{name}_ev"], 2)
        return out


@register
class AdaptStage(Stage):
    name = "adapt"
    order = 5
    summary = "self-supervised adaptation of DeAltHDR to unlabeled footage (Algorithm 1)"
    Options = AdaptOptions
    lr = 1e-5
    schedule = "cosine"
    patch_multiple = 8
    kind = "footage"
    trained = ("dealthdr",)
    ship_files = ("dealthdr",)
    metric = None

    @property
    def deviations(self) -> list[str]:  # type: ignore[override]
        prev = self.previous.get("dealthdr")
        return prev.deviations if prev else []

    @property
    def losses(self) -> str:  # type: ignore[override]
        o = self.opt
        return f"L_time + {o.beta:g} x L_ema (mu-law L1), EMA a={o.ema:g}, subsets from t+-{o.reach}"

    def network_kind(self, name: str) -> str:
        return "dealthdr"

    def init(self) -> None:
        folder = W.WEIGHTS_DIR if self.opt.source == "dealthdr" else Path(self.opt.source)
        if folder.is_file():
            folder = folder.parent
        if not folder.is_dir():
            raise FileNotFoundError(f"adapt: --from {self.opt.source} is neither 'dealthdr' nor a weights folder")
        net, entry = W.load(NAME, device=self.device, folder=folder)
        self.nets = {"dealthdr": net, "ema": copy.deepcopy(net)}
        self.previous["dealthdr"] = entry
        self.init_notes.append(f"{folder / W.REGISTRY[NAME].file} (sha256 {entry.sha256[:16]})")

    def datasets(self, val: bool = True) -> tuple[Any, ...]:
        cfg = self.cfg
        train = FootageWindows(self.opt.footage, self.opt.ev_pattern, cfg.patch, self.opt.reach, cfg.seed,
                               flows=self.nets["dealthdr"].needs_flows)
        return (train, None) if val else (train,)

    def loss(self, batch):
        flows = {n: (batch[f"{n}_fwd"], batch[f"{n}_bwd"]) if f"{n}_fwd" in batch else None for n in ("full", "sub")}
        return adaptation_loss(self.nets["dealthdr"], self.nets["ema"], batch["full"], batch["full_ev"],
                               batch["sub"], batch["sub_ev"], sample_sensitivity(), self.opt.beta,
                               flows["full"], flows["sub"])

    @torch.no_grad()
    def after_step(self) -> None:
        a = self.opt.ema
        for pt, ps in zip(self.nets["ema"].parameters(), self.nets["dealthdr"].parameters()):
            pt.mul_(a).add_(ps, alpha=1 - a)

    def ship_folder(self) -> Path:
        return Path(self.opt.out)

    def recipe(self, key: str, digests: dict[str, str]) -> dict[str, Any]:
        return {"stages": "self-supervised adaptation (DeAltHDR Algorithm 1)", "losses": self.losses,
                "augmentation": "horizontal flips"}

    def run_deviations(self, device: torch.device) -> list[str]:
        return []

    def command(self) -> str:
        cfg, o = self.cfg, self.opt
        return (f"vs-hdrvid adapt {' '.join(o.footage)} -o {o.out} --steps {cfg.steps} --batch {cfg.batch} "
                f"--patch {cfg.patch} --lr {cfg.lr:g} --beta {o.beta:g}")
