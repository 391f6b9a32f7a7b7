"""``vs-hdrvid bench-train``: training steps per second, the plain fp32 eager step against the fast path.

The real training step of a stage (its networks, loss and optimiser, :func:`~vs_hdrvid.train.loop.
train_step`) on the real data pipeline (the training preset's windows, augmented, through the same
DataLoader), run for ``--seconds`` twice in one process: first as the fp32 eager baseline, then on
the default :class:`~vs_hdrvid.train.fastpath.FastPath` of this machine. The networks are those
``train-all`` trains (its plan's options for the stage). Each phase warms up for a
few steps first (and compiles, where the fast path compiles). Both phases start from the same
weights. Nothing is written.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from typing import Any

import torch

from vs_hdrvid.train.config import TrainConfig
from vs_hdrvid.train.fastpath import FastPath, cpu_features

__all__ = ["bench_train", "bench_stages", "add_cli", "run_cli"]

WARMUP_STEPS = 3


def bench_stages() -> tuple[str, ...]:
    """The stages trained on the synthetic data (the ones a fixed-time benchmark can feed)."""
    from vs_hdrvid.train.stages import stage_class, stage_names

    return tuple(n for n in stage_names() if stage_class(n).metric is not None)


def _phase(cfg: TrainConfig, nets0: dict, stage_cls, device, loader_items, fast: FastPath, seconds: float,
           make_optimizer, train_step) -> dict[str, float]:
    stage = stage_cls(cfg, device)
    stage.nets = copy.deepcopy(nets0)
    stage.to()
    fast.prepare(stage.nets, stage.trained)
    opt = make_optimizer(cfg, stage, 0)
    lr = float(cfg.lr)
    it = iter(loader_items)
    t_warm = time.perf_counter()
    for _ in range(WARMUP_STEPS):
        train_step(stage, opt, next(it), lr, fast)
    warm = time.perf_counter() - t_warm
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        train_step(stage, opt, next(it), lr, fast)
        steps += 1
    elapsed = time.perf_counter() - t0
    torch.set_flush_denormal(False)
    return {"steps": steps, "seconds": round(elapsed, 2), "steps_per_s": steps / elapsed,
            "pixels_per_s": steps * cfg.batch * cfg.patch ** 2 / elapsed, "warmup_s": round(warm, 2)}


def bench_train(stage: str = "coarse", seconds: float = 60.0, exposures: int = 2, compile: bool = False,
                **overrides: Any) -> dict[str, Any]:
    """Steps/s of ``stage``'s training step, fp32 eager against the fast path, in this process.

    Returns:
        ``{"stage", "cpu", "device", "batch", "patch", "baseline": {...}, "fast": {...},
        "fast_path": {...}, "speedup"}``; each phase has ``steps``, ``seconds``, ``steps_per_s``,
        ``pixels_per_s``, ``warmup_s``.
    """
    from vs_hdrvid.devices import resolve_device
    from vs_hdrvid.train.loop import _to, make_optimizer, train_step
    from vs_hdrvid.train.stages import make_stage

    if stage not in bench_stages():
        raise ValueError(f"bench-train: stage must be one of {bench_stages()}, got {stage!r}")
    if not seconds > 0:
        raise ValueError(f"bench-train: --seconds must be positive, got {seconds}")
    from vs_hdrvid.train.plan import PLAN

    n = 2 if stage == "dealthdr" else exposures
    planned = next((p for p in PLAN if p.stage == stage and p.exposures == n), None)
    cfg = TrainConfig(stage=stage, exposures=n, synth_if_missing=False, ship="never", warmup=0,
                      options=planned.options if planned else None, **overrides)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    built = make_stage(cfg, device)
    built.init()
    (train_ds,) = built.datasets(val=False)
    train_ds.preload()
    n_batches = WARMUP_STEPS + 1 + int(seconds * 50)  # far more than either phase can use

    def batches():
        for i in range(n_batches):
            items = [train_ds[i * cfg.batch + j] for j in range(cfg.batch)]
            yield _to(torch.utils.data.default_collate(items), device)

    fast = FastPath.detect(device, compile=compile, stage=stage)
    phases = {}
    for name, path in (("baseline", FastPath.baseline()), ("fast", fast)):
        phases[name] = _phase(cfg, built.nets, type(built), device, batches(), path, seconds,
                              make_optimizer, train_step)
    return {"stage": stage, "exposures": cfg.exposures, "cpu": cpu_features(), "device": str(device),
            "batch": cfg.batch, "patch": cfg.patch, **phases, "fast_path": fast.describe(),
            "speedup": phases["fast"]["steps_per_s"] / phases["baseline"]["steps_per_s"]}


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``bench-train`` on an ``argparse`` subparsers object; returns its parser."""
    p = subparsers.add_parser("bench-train", help="training steps/s: fp32 eager against the fast path",
                              description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=bench_stages(), default="coarse")
    p.add_argument("--exposures", type=int, choices=(2, 3), default=2)
    p.add_argument("--seconds", type=float, default=60.0, help="timed seconds per phase (default: 60)")
    p.add_argument("--batch", type=int, help="batch size (default: train-all's CPU profile for the stage)")
    p.add_argument("--patch", type=int, help="patch side (default: train-all's CPU profile for the stage)")
    p.add_argument("--root", default="data/synth")
    p.add_argument("--preset", default="train")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="include torch.compile in the fast path")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return p


def run_cli(args: argparse.Namespace) -> int:
    from vs_hdrvid.cli import fail

    try:
        from vs_hdrvid.train.plan import PROFILES

        sizes = PROFILES["cpu"][args.stage] | {k: v for k, v in (("batch", args.batch), ("patch", args.patch)) if v}
        res = bench_train(args.stage, args.seconds, args.exposures, args.compile, **sizes, root=args.root,
                          preset=args.preset, device=args.device)
    except FileNotFoundError as e:
        return fail(f"{e}", 2)
    except ValueError as e:
        return fail(e, 2)
    cpu = res["cpu"]
    flags = ", ".join(k for k in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if cpu[k]) or "none"
    out = sys.stdout
    print(f"bench-train {res['stage']} ({res['exposures']} exposures), batch {res['batch']} x "
          f"{res['patch']}x{res['patch']}, device {res['device']}", file=out)
    print(f"CPU: {cpu['model']}; features: {flags}; torch ISA {cpu['torch_isa']}, {cpu['threads']} threads", file=out)
    print("fast path: " + (", ".join(k for k, v in res["fast_path"].items() if v) or "none"), file=out)
    for name in ("baseline", "fast"):
        r = res[name]
        print(f"  {name:8s}: {r['steps_per_s']:.3f} steps/s, {r['pixels_per_s'] / 1e6:.3f} Mpixel/s "
              f"({r['steps']} steps in {r['seconds']} s, warm-up {r['warmup_s']} s)", file=out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    print(f"speedup {res['speedup']:.2f}x over the fp32 eager baseline", file=out)
    return 0
