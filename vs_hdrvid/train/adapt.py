"""Self-supervised adaptation of DeAltHDR on unlabeled footage (DeAltHDR section 3.4, Algorithm 1).

For a reference frame ``t`` of the footage:

* ``H^ = B(W)`` from the 5-frame window ``W = {L_{t-2} .. L_{t+2}}``;
* ``H~ = B(S)`` from a 3-frame subset ``S = {L_t, L_A, L_B}``: ``L_A`` drawn from ``t +- 2k`` (the
  current exposure) and ``L_B`` from ``t +- (2k - 1)`` (the other), ``k`` in 1..3, so the subset's
  motion ranges up to ``t +- 6`` (the motion-enhanced sampling). The 5-frame network sees ``S``
  as the window ``[L_A, L_B, L_t, L_B, L_A]``: every slot keeps the exposure it was trained with;
* ``L_time = |T(H~) - T(sg(H^))|_1`` (the richer 5-frame output is the pseudo-target) and
  ``L_ema = |T(H^) - T(sg(H^_ema))|_1`` against an EMA teacher (``a = 0.999``);
  ``L_total = L_time + beta * L_ema`` (``beta = 1``; ``beta = 0`` reproduces the collapse of Table J).

``T`` is the mu-law of ``clip(H / H_sat)``. Each batch draws the FGMA branch as training does.
The adapted network is written with its manifest entry to the output folder (``--weights`` of
``reconstruct`` and ``eval`` reads it); the run folder holds ``ckpt.pt`` (resumable) and ``log.jsonl``.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vs_hdrvid import weights as W
from vs_hdrvid.bridge import resolve_device
from vs_hdrvid.train.losses import tonemap
from vs_hdrvid.train.stages import sample_sensitivity

__all__ = ["AdaptConfig", "adapt", "load_footage", "subset_window", "adaptation_loss"]

log = logging.getLogger("vs_hdrvid.train")
NAME = "dealthdr-2exp"


@dataclass
class AdaptConfig:
    """One adaptation run.

    Attributes:
        footage: inputs ``vs-hdrvid reconstruct`` accepts (video, image pattern, ``.vpy``).
        out: folder for the adapted ``dealthdr_2exp.safetensors`` and its ``MANIFEST.json``.
        source: ``dealthdr`` (the shipped weights) or a folder holding DeAltHDR weights.
        exposures: the footage's EV pattern (None: props or detection, as ``linearize``).
        steps, batch, patch: optimiser steps, windows per step, square crop side.
        lr: AdamW learning rate, cosine-annealed to 1e-7 (the paper: 1e-6 over 20 epochs).
        beta: weight of ``L_ema``; ema: the teacher's decay ``a``; reach: largest subset offset.
        max_minutes: stop cleanly after this wall time (0: no limit).
        run_dir: checkpoint and log folder; resume: continue its ``ckpt.pt``.
    """

    footage: list[str]
    out: str
    source: str = "dealthdr"
    exposures: list[float] | None = None
    steps: int = 200
    batch: int = 2
    patch: int = 64
    lr: float = 1e-5
    beta: float = 1.0
    ema: float = 0.999
    reach: int = 6
    max_minutes: float = 0.0
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    log_every: int = 10
    ckpt_every: int = 50
    run_dir: str = "runs/adapt"
    resume: bool = False

    def __post_init__(self) -> None:
        if not self.footage:
            raise ValueError("adapt: give at least one footage input")
        if self.steps < 1 or self.batch < 1 or self.patch % 8 or self.patch < 32:
            raise ValueError(f"adapt: steps and batch must be positive and patch a multiple of 8 >= 32, got "
                             f"{self.steps}, {self.batch}, {self.patch}")
        if not 0 < self.ema < 1 or self.beta < 0 or self.reach < 2:
            raise ValueError(f"adapt: need 0 < ema < 1, beta >= 0 and reach >= 2, got {self.ema}, {self.beta}, {self.reach}")


def load_footage(path: str, exposures: list[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """The footage as the network sees it: gamma-2.2 LDR ``(T, 3, H, W)`` float32 and EVs ``(T,)``.

    Goes through :func:`~vs_hdrvid.nodes.source` and :func:`~vs_hdrvid.nodes.linearize`, then back
    to LDR with :func:`~vs_hdrvid.nodes._nets.radiance_to_ldr`, exactly as the node prepares frames.
    """
    from vs_hdrvid import nodes
    from vs_hdrvid.nodes._common import COUNT_PROP, EV_PROP
    from vs_hdrvid.nodes._nets import radiance_to_ldr

    lin = nodes.linearize(nodes.source(path), exposures=exposures, device="cpu")
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


def adaptation_loss(net: torch.nn.Module, teacher: torch.nn.Module, full: Tensor, full_ev: Tensor,
                    sub: Tensor, sub_ev: Tensor, s: float, beta: float) -> tuple[Tensor, dict[str, float]]:
    """Algorithm 1's ``L_time + beta * L_ema`` for a batch of windows.

    Shape: ``full, sub (B, 5, 3, P, P)``, ``full_ev, sub_ev (B, 5)``.
    """
    h_sat = torch.exp2(-full_ev.min(1).values)
    h_hat = net(full, full_ev, s).hdr
    h_tilde = net(sub, sub_ev, s).hdr
    t_hat = tonemap(h_hat, h_sat)
    l_time = (tonemap(h_tilde, h_sat) - t_hat.detach()).abs().mean()
    loss = l_time
    parts = {"l_time": l_time.item()}
    if beta > 0:
        with torch.no_grad():
            t_ema = tonemap(teacher(full, full_ev, s).hdr, h_sat)
        l_ema = (t_hat - t_ema).abs().mean()
        loss = loss + beta * l_ema
        parts["l_ema"] = l_ema.item()
    parts["mean_mu"] = t_hat.mean().item()
    return loss, parts


class _Windows:
    """Random training windows (full and subset) over several clips."""

    def __init__(self, clips: list[tuple[np.ndarray, np.ndarray]], patch: int, reach: int) -> None:
        self.clips, self.patch, self.reach = clips, patch, reach
        for ldr, _ in clips:
            if ldr.shape[0] < 2 * reach + 1 or min(ldr.shape[-2:]) < patch:
                raise ValueError(f"adapt: footage of {ldr.shape[0]} frames of {ldr.shape[-1]}x{ldr.shape[-2]} is "
                                 f"too small: needs {2 * reach + 1} frames and {patch}x{patch} pixels")

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
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
        return fl.copy(), evs[full], sb.copy(), evs[sub]


def _load_source(cfg: AdaptConfig, device: torch.device) -> tuple[torch.nn.Module, dict]:
    folder = W.WEIGHTS_DIR if cfg.source == "dealthdr" else Path(cfg.source)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"adapt: --from {cfg.source} is neither 'dealthdr' nor a weights folder")
    return W.load(NAME, device=device, folder=folder)


def adapt(cfg: AdaptConfig) -> dict:
    """Run (or resume) an adaptation; returns ``{"step", "stopped", "wall_time_s", "written", "run_dir"}``."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    net, entry = _load_source(cfg, device)
    clips = [load_footage(p, cfg.exposures) for p in cfg.footage]
    windows = _Windows(clips, cfg.patch, cfg.reach)
    teacher = copy.deepcopy(net).requires_grad_(False).eval()
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    run_dir = Path(cfg.run_dir)
    ckpt_path = run_dir / "ckpt.pt"
    step, wall0 = 0, 0.0
    if cfg.resume:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(state["net"])
        teacher.load_state_dict(state["teacher"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, wall0 = state["step"], state["wall_time_s"]
    run_dir.mkdir(parents=True, exist_ok=True)
    logf = open(run_dir / "log.jsonl", "a")
    stop = {"reason": None}
    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, lambda n, _f: stop.update(reason=signal.Signals(n).name))
           for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    t0, step0 = time.monotonic(), step

    def save() -> None:
        tmp = ckpt_path.with_suffix(".pt.part")
        torch.save({"net": net.state_dict(), "teacher": teacher.state_dict(), "optimizer": opt.state_dict(),
                    "torch_rng": torch.get_rng_state(), "step": step, "config": asdict(cfg),
                    "wall_time_s": wall0 + time.monotonic() - t0}, tmp)
        tmp.replace(ckpt_path)

    try:
        while step < cfg.steps and not stop["reason"]:
            rng = np.random.default_rng([cfg.seed, step])
            items = [windows.sample(rng) for _ in range(cfg.batch)]
            full, full_ev, sub, sub_ev = (torch.from_numpy(np.stack(x)).to(device) for x in zip(*items))
            lr = 1e-7 + (cfg.lr - 1e-7) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            for g in opt.param_groups:
                g["lr"] = lr
            loss, parts = adaptation_loss(net, teacher, full, full_ev, sub, sub_ev, sample_sensitivity(), cfg.beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for pt, ps in zip(teacher.parameters(), net.parameters()):
                    pt.mul_(cfg.ema).add_(ps, alpha=1 - cfg.ema)
            step += 1
            elapsed = time.monotonic() - t0
            if step % cfg.log_every == 0 or step == 1:
                rec = {"step": step, "loss": loss.item(), **parts, "lr": lr, "wall_s": round(wall0 + elapsed, 1)}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                log.info("adapt: step %d/%d loss %.5f %s (%.3f steps/s)", step, cfg.steps, loss.item(),
                         " ".join(f"{k} {v:.4f}" for k, v in parts.items()), (step - step0) / max(elapsed, 1e-9))
            if step % cfg.ckpt_every == 0:
                save()
            if cfg.max_minutes and elapsed > 60 * cfg.max_minutes:
                stop["reason"] = "max_minutes"
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        logf.close()
    save()
    wall = wall0 + time.monotonic() - t0
    out = Path(cfg.out)
    file = W.REGISTRY[NAME].file
    digest = W.save(net.eval(), out / file, json.loads(json.dumps(net.config.to_dict())))
    recipe = {"stages": "self-supervised adaptation (DeAltHDR Algorithm 1)", "footage": cfg.footage,
              "exposures": cfg.exposures, "steps": step, "batch": cfg.batch, "patch": cfg.patch,
              "lr_schedule": f"AdamW (0.9, 0.999) lr {cfg.lr:g}, cosine to 1e-07 over {cfg.steps} steps",
              "losses": f"L_time + {cfg.beta:g} x L_ema (mu-law L1), EMA a={cfg.ema:g}, subsets from t+-{cfg.reach}",
              "device": str(device), "wall_time_s": round(wall, 1),
              "command": f"vs-hdrvid adapt {' '.join(cfg.footage)} -o {cfg.out} --steps {cfg.steps} "
                         f"--batch {cfg.batch} --patch {cfg.patch} --lr {cfg.lr:g} --beta {cfg.beta:g}",
              "continued_from": {"sha256": entry["sha256"], "recipe": entry.get("recipe"),
                                 "metrics": entry.get("metrics")}}
    W.register_in_manifest(file, {"network": W.REGISTRY[NAME].network, "config": net.config.to_dict(),
                                  "sha256": digest, "parameters": sum(p.numel() for p in net.parameters()),
                                  "recipe": recipe, "metrics": {},
                                  "deviations": entry.get("deviations", [])}, out)
    log.info("adapt: wrote %s after %d steps (%s)", out / file, step, stop["reason"] or "steps")
    return {"step": step, "stopped": stop["reason"] or "steps", "wall_time_s": round(wall, 1),
            "written": str(out / file), "run_dir": str(run_dir)}
