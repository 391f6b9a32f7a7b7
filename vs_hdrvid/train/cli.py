"""The ``vs-hdrvid train`` subcommand.

Examples::

    vs-hdrvid train spynet --exposures 2 --steps 300 --batch 4 --patch 96   # FlowFill (--flow-net spynet: SpyNet)
    vs-hdrvid train coarse --exposures 2 --steps 2000 --max-minutes 30
    vs-hdrvid train refine --exposures 2 --steps 1000
    vs-hdrvid train coarse --exposures 2 --resume                 # continue runs/coarse-2exp/
    vs-hdrvid train coarse --exposures 2 --device cuda --steps 200000 --batch 16 --patch 256
        # continues the shipped weights/coarse_2exp.safetensors on a GPU and ships the result
    vs-hdrvid train dealthdr --steps 3000 --batch 4 --patch 96 --max-minutes 45       # CPU
    vs-hdrvid train dealthdr --model paper --device cuda --steps 300000 --batch 8 --patch 192
"""
from __future__ import annotations

import argparse
import logging
import math
import sys

from vs_hdrvid.train.config import TrainConfig

__all__ = ["add_cli", "run_cli", "run_training", "config_from_args", "log_to_stderr", "minutes_type", "add_option_arguments",
           "option_values"]

_OPTIONS = ("exposures", "root", "preset", "val_preset", "steps", "max_minutes", "batch", "patch", "lr",
            "device", "resume", "out_name", "seed", "workers", "init_from", "threads", "val_every",
            "ckpt_every", "log_every", "val_patch", "val_windows", "lr_halve_every", "weights_dir", "runs_dir",
            "ship", "val_at_start", "warmup", "fp32", "compile", "ema")


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` (one sub-command per training stage, with its own options) on an
    ``argparse`` subparsers object; returns its parser."""
    from vs_hdrvid.train.stages import stage_class, stage_names

    p = subparsers.add_parser(
        "train", help="train the Chen et al. and DeAltHDR networks on synthetic data",
        description="Train a stage of the Chen et al. (ICCV 2021) networks: spynet (flow pretraining), "
                    "coarse (CoarseNet), refine (RefineNet, CoarseNet frozen), finetune (both); or dealthdr "
                    "(DeAltHDR on the degraded day/night scenes, 2 exposures). Without "
                    "--init-from a stage continues the shipped weights when present. Progress goes to stderr; "
                    "the run folder holds ckpt.pt, log.jsonl and curve.png. `vs-hdrvid train STAGE --help` "
                    "lists a stage's own options.")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name in stage_names():
        cls = stage_class(name)
        if cls.metric is None:  # not trained on synthetic data (``adapt`` has its own command)
            continue
        sp = stages.add_parser(name, help=cls.summary, description=cls.summary)
        _add_common(sp, name)
        add_option_arguments(sp.add_argument_group(f"{name} options"), cls.Options)
    return p


def add_option_arguments(p, options_cls) -> None:
    """A ``--name`` argument for each field of a stage's ``Options`` (``--no-name`` for a
    boolean that defaults to True); unset arguments keep the field's default."""
    import dataclasses

    for f in options_cls.fields():
        flag, meta = "--" + f.name.replace("_", "-"), f.metadata
        if f.default is True:
            p.add_argument("--no-" + flag[2:], dest=f.name, action="store_false", default=None, help=meta.get("help"))
        elif f.default is False:
            p.add_argument(flag, dest=f.name, action="store_true", default=None, help=meta.get("help"))
        elif f.default is not dataclasses.MISSING and not isinstance(f.default, tuple) and f.default is not None:
            p.add_argument(flag, dest=f.name, type=type(f.default), choices=meta.get("choices"), default=None,
                           help=f"{meta.get('help', '')} (default: {f.default})")


def option_values(args: argparse.Namespace, options_cls) -> dict:
    """The stage options given on the command line (the others keep their defaults)."""
    return {f.name: getattr(args, f.name) for f in options_cls.fields() if getattr(args, f.name, None) is not None}


def _add_common(p: argparse.ArgumentParser, stage: str) -> None:
    d = TrainConfig(stage="coarse")
    p.add_argument("--exposures", type=int, choices=(2, 3), default=d.exposures)
    p.add_argument("--root", default=d.root, help=f"synthetic data root (default: {d.root})")
    p.add_argument("--preset", default=d.preset, help="training preset (default: train)")
    p.add_argument("--val-preset", default=d.val_preset, help="validation preset (default: val)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"total optimiser steps (default: {d.steps})")
    p.add_argument("--minutes", "--max-minutes", dest="max_minutes", type=minutes_type, default=0.0, metavar="M",
                   help="time budget: stop cleanly after M minutes of wall time and ship only what "
                        "validation says is better")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--patch", type=int, default=d.patch, help="square patch side, multiple of 16")
    from vs_hdrvid.train.stages import stage_class

    p.add_argument("--lr", type=float, default=None, help=f"base learning rate (default: {stage_class(stage).lr:g})")
    p.add_argument("--lr-halve-every", type=int, default=0, help="halve lr every N steps (default: steps/2)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--resume", action="store_true", help="continue runs/<out-name>/ckpt.pt")
    p.add_argument("--init-from", default="", metavar="PATH",
                   help="start from a .safetensors or ckpt.pt ('none': random; default: shipped weights)")
    p.add_argument("--out-name", default="", help="run name (default: <stage>-<n>exp)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers")
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--val-patch", type=int, default=d.val_patch)
    p.add_argument("--val-windows", type=int, default=d.val_windows, help="fixed validation crops per scene")
    p.add_argument("--no-val-at-start", dest="val_at_start", action="store_false",
                   help="skip the validation before the first step")
    p.add_argument("--weights-dir", default="", help="where to ship weights (default: the package's weights/)")
    p.add_argument("--runs-dir", default=d.runs_dir)
    p.add_argument("--ship", choices=("auto", "always", "never"), default=d.ship,
                   help="write shipped weights: auto = if none yet or validation is not worse")
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear lr warm-up steps (0: none)")
    p.add_argument("--fp32", action="store_true", help="the plain fp32 eager step (no fast path)")
    p.add_argument("--compile", action="store_true", help="torch.compile the trained networks")
    p.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="validate and ship a moving average of the weights with this decay, e.g. 0.999 "
                        "(default: 0, none)")


def minutes_type(text: str) -> float:
    """A positive, finite number of minutes (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text!r}")
    return value


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after set-up)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def log_to_stderr() -> None:
    """Timestamped progress of ``vs_hdrvid.train`` (training and adaptation) on stderr, once."""
    log = logging.getLogger("vs_hdrvid.train")
    if not log.handlers:
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from vs_hdrvid.train.stages import stage_class

    return TrainConfig(stage=args.stage, options=option_values(args, stage_class(args.stage).Options),
                       **{k: getattr(args, k) for k in _OPTIONS})


def run_cli(args: argparse.Namespace) -> int:
    """Run ``train`` from parsed arguments; returns the exit status (one error line on failure)."""
    return run_training(args, config_from_args, "train")


def run_training(args: argparse.Namespace, make_config, command: str, errors: tuple = ()) -> int:
    """Build a run's config from ``args`` and train it: exit status 2 for a bad config, 1 for a run
    that fails (``OSError``, ``RuntimeError``, ``ValueError`` and ``errors``), each one line."""
    from vs_hdrvid.cli import fail
    from vs_hdrvid.train.loop import train

    log_to_stderr()
    try:
        cfg = make_config(args)
    except ValueError as e:
        return fail(e, 2)
    try:
        summary = train(cfg)
    except (OSError, RuntimeError, ValueError, *errors) as e:
        return fail(e, 1)
    for f in summary["shipped"]:
        print(f"vs-hdrvid {command}: wrote {f}", file=sys.stderr)
    return 0
