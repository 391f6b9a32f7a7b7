"""``vs-hdrvid train-all``: continue every network's training within one time budget.

One command for all networks, in sequence, sharing ``--minutes``: each run continues its own run
folder when there is one (``runs/<stage>-<n>exp/ckpt.pt``, resumable across sessions) and
otherwise starts from the shipped weights, or from the classical answer for a design not shipped
yet. Each stops cleanly at its share of the budget, validates, and ships only what validation says
is better (the training loop's ``ship="auto"``: not below the shipped weights, and a correction of
the merge not below the merge it starts from). Time a run does not use goes to the runs after it.

Examples::

    vs-hdrvid train-all --minutes 60                      # a session's spare CPU time
    vs-hdrvid train-all --minutes 8 --device cuda --profile gpu --workers 12
    vs-hdrvid train-all --minutes 30 --only coarse-2exp,coarse-3exp
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vs_hdrvid.train.config import TrainConfig

__all__ = ["PlanItem", "PLAN", "PROFILES", "plan_configs", "run_plan", "add_cli", "run_cli"]

log = logging.getLogger("vs_hdrvid.train")

#: The schedule stays put across sessions: budgets decide how far a run gets, not its lr curve.
TOTAL_STEPS = 200_000
HALVE_EVERY = 50_000


@dataclass(frozen=True)
class PlanItem:
    """One network's run: its stage, pattern, share of the budget, the stage's options and the
    :class:`TrainConfig` fields it sets (``train``)."""

    name: str
    stage: str
    exposures: int
    share: float
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


PLAN: tuple[PlanItem, ...] = (
    # The DIS flows corrected by FlowFill (2 exposures; its pretraining run, ``train spynet --flow-net fill``,
    # is for a design not shipped yet) or as they are (3 exposures: a FlowFill CoarseNet validated +0.07 to
    # +0.18 dB but was not better on the test split), and the weight network's residual over the merge.
    # Fine-tuned at lr 5e-5 with the weights' moving average (decay 0.999) validated and shipped: the raw
    # weights' validation swung by +-0.1 dB from check to check, the average's rose steadily for 12000 steps
    PlanItem("coarse-2exp", "coarse", 2, 0.35, {"flow_net": "fill"}, {"lr": 5e-5, "ema": 0.999}),
    PlanItem("coarse-3exp", "coarse", 3, 0.25, {"flow_refine": False}, {"lr": 5e-5, "ema": 0.999}),
    # on the shipped CoarseNets, over the temporal fusion of their window; lr 1e-4 as their shipped runs
    PlanItem("refine-2exp", "refine", 2, 0.15, {"flow_net": "fill"}, {"lr": 1e-4, "ema": 0.999}),
    PlanItem("refine-3exp", "refine", 3, 0.10, {"flow_refine": False}, {"lr": 1e-4, "ema": 0.999}),
    # as its shipped runs: fp32 (train.fastpath.FP32_STAGES), the structure term at 0.1 of the mu-law L1's
    # weight, lr 5e-5 with the moving average, the attention at 50x (its last run); validation rose at every check
    PlanItem("dealthdr-2exp", "dealthdr", 2, 0.15, {"perc_weight": 0.1, "attention_lr_scale": 50.0},
             {"lr": 5e-5, "ema": 0.999}),
)

#: Batch and patch per stage kind, for the 2-core CPU and for a lent H100/H200.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {"coarse": {"batch": 4, "patch": 128}, "spynet": {"batch": 4, "patch": 96},
            "refine": {"batch": 2, "patch": 64}, "finetune": {"batch": 2, "patch": 64},
            "dealthdr": {"batch": 4, "patch": 96}},
    "gpu": {"coarse": {"batch": 16, "patch": 256}, "spynet": {"batch": 16, "patch": 256},
            "refine": {"batch": 8, "patch": 256}, "finetune": {"batch": 8, "patch": 256},
            "dealthdr": {"batch": 8, "patch": 192}},
    # the test suite's end-to-end run on the 64x48 ``micro`` preset
    "tiny": {k: {"batch": 2, "patch": 32} for k in ("coarse", "spynet", "refine", "finetune", "dealthdr")},
}


def plan_configs(minutes: float, profile: str = "cpu", only: tuple[str, ...] = (), **common: Any
                 ) -> list[tuple[PlanItem, TrainConfig]]:
    """The plan's items (all, or those named in ``only``) with their configs; ``max_minutes`` is
    the item's share of ``minutes`` and is recomputed by :func:`run_plan` as time is used."""
    if profile not in PROFILES:
        raise ValueError(f"train-all: profile must be one of {sorted(PROFILES)}, got {profile!r}")
    if not (minutes > 0 and math.isfinite(minutes)):
        raise ValueError(f"train-all: --minutes must be a positive number, got {minutes}")
    known = [p.name for p in PLAN]
    unknown = sorted(set(only) - set(known))
    if unknown:
        raise ValueError(f"train-all: unknown networks {unknown}; the plan has {known}")
    items = [p for p in PLAN if not only or p.name in only]
    total = sum(p.share for p in items)
    out = []
    for item in items:
        sizes = PROFILES[profile][item.stage]
        cfg = TrainConfig(stage=item.stage, exposures=item.exposures, steps=TOTAL_STEPS,
                          lr_halve_every=HALVE_EVERY if item.stage != "dealthdr" else 0,
                          max_minutes=minutes * item.share / total,
                          options=item.options,
                          batch=sizes["batch"], patch=sizes["patch"], **(common | item.train))
        out.append((item, cfg))
    return out


def _resumable(cfg: TrainConfig) -> bool:
    return (Path(cfg.runs_dir) / cfg.out_name / "ckpt.pt").is_file()


def run_plan(minutes: float, profile: str = "cpu", only: tuple[str, ...] = (), **common: Any) -> list[dict]:
    """Run the plan in sequence within ``minutes`` of wall time; returns one summary per item.

    A failing item is logged and reported (``{"name", "error"}``) and the plan goes on.
    """
    import dataclasses

    from vs_hdrvid.train.loop import train

    items = plan_configs(minutes, profile, only, **common)
    deadline = time.monotonic() + 60 * minutes
    results = []
    for i, (item, cfg) in enumerate(items):
        left = (deadline - time.monotonic()) / 60
        share = item.share / sum(p.share for p, _ in items[i:])
        budget = left * share
        if budget < 0.5:
            log.warning("train-all: %s skipped, %.1f minutes left", item.name, left)
            results.append({"name": item.name, "skipped": True})
            continue
        cfg = dataclasses.replace(cfg, max_minutes=budget, resume=_resumable(cfg))
        log.info("train-all: %s for %.1f of the %.1f minutes left (%s)", item.name, budget, left,
                 "resuming its run" if cfg.resume else "a new run")
        try:
            summary = train(cfg)
        except (OSError, RuntimeError, ValueError) as e:
            log.warning("train-all: %s failed: %s", item.name, str(e).splitlines()[0] if str(e) else type(e).__name__)
            results.append({"name": item.name, "error": str(e).splitlines()[0] if str(e) else type(e).__name__})
            continue
        results.append({"name": item.name, **summary})
    return results


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``train-all`` on an ``argparse`` subparsers object; returns its parser."""
    from vs_hdrvid.train.cli import minutes_type

    d = TrainConfig(stage="coarse")
    p = subparsers.add_parser(
        "train-all", help="continue every network's training within one time budget",
        description="Continue the training of every network in sequence (" + ", ".join(
            f"{x.name} {x.share:.0%}" for x in PLAN) + " of the budget), each resuming its run "
        "folder or starting from the shipped weights, and ship what validation says is better.")
    p.add_argument("--minutes", type=minutes_type, required=True, help="the whole budget in minutes of wall time")
    p.add_argument("--only", default="", help="comma-separated networks of the plan (default: all)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu", help="batch and patch sizes")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers")
    p.add_argument("--root", default=d.root, help=f"synthetic data root (default: {d.root})")
    p.add_argument("--preset", default=d.preset, help="training preset (default: train)")
    p.add_argument("--val-preset", default=d.val_preset, help="validation preset (default: val)")
    p.add_argument("--weights-dir", default="", help="where to ship weights (default: the package's weights/)")
    p.add_argument("--runs-dir", default=d.runs_dir)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--fp32", action="store_true", help="the plain fp32 eager step (no fast path)")
    return p


def _val_patch(profile: str) -> int:
    """Validation crops of the profile: the default (comparable with the shipped entries), but
    small enough for the ``tiny`` profile's 64x48 scenes."""
    return 32 if profile == "tiny" else TrainConfig(stage="coarse").val_patch


def run_cli(args: argparse.Namespace) -> int:
    """Run ``train-all``; exit status 1 when an item failed (the others still ran)."""
    from vs_hdrvid.cli import fail
    from vs_hdrvid.train.cli import log_to_stderr

    log_to_stderr()
    only = tuple(x for x in args.only.split(",") if x)
    try:
        results = run_plan(args.minutes, args.profile, only, device=args.device, workers=args.workers,
                           root=args.root, preset=args.preset, val_preset=args.val_preset,
                           weights_dir=args.weights_dir, runs_dir=args.runs_dir, val_patch=_val_patch(args.profile),
                           val_every=args.val_every, fp32=args.fp32)
    except ValueError as e:
        return fail(e, 2)
    for r in results:
        state = ("skipped" if r.get("skipped") else f"failed: {r['error']}" if "error" in r
                 else f"step {r['step']} ({r['stopped']}), val {r['val'].get('val_psnr_mu', r['val'].get('val_epe', math.nan)):.3f}, "
                      + (f"shipped {', '.join(Path(f).name for f in r['shipped'])}" if r["shipped"] else "not shipped"))
        print(f"train-all: {r['name']}: {state}", flush=True)
    failed = [r["name"] for r in results if "error" in r]
    return fail(f"train-all: {', '.join(failed)} failed (see above)") if failed else 0
