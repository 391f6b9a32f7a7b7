"""The ``vs-hdrvid adapt`` subcommand (DeAltHDR's self-supervised adaptation, Algorithm 1).

Example::

    vs-hdrvid adapt clip1.mov clip2.mov --exposures -2,1 --from dealthdr -o weights/adapted --steps 300
    vs-hdrvid reconstruct clip1.mov -o out.mkv --method dealthdr --weights weights/adapted
"""
from __future__ import annotations

import argparse

__all__ = ["add_cli", "run_cli"]


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``adapt`` on an ``argparse`` subparsers object; returns its parser."""
    from vs_hdrvid.cli import _exposures
    from vs_hdrvid.train.stages.adapt import AdaptOptions

    d = AdaptOptions()
    p = subparsers.add_parser(
        "adapt", help="adapt DeAltHDR to unlabeled footage (self-supervised)",
        description="Fine-tune DeAltHDR on unlabeled alternating-exposure footage: the 5-frame output is the "
                    "pseudo-target of 3-frame subsets sampled from t-6..t+6, with an EMA teacher (DeAltHDR "
                    "Algorithm 1). Writes dealthdr_2exp.safetensors and MANIFEST.json into -o; use it with "
                    "`reconstruct --method dealthdr --weights DIR`. The run is resumable (--resume) and "
                    "stops cleanly on --minutes or Ctrl-C.")
    p.add_argument("footage", nargs="+", help="video files, image sequence patterns or .vpy scripts")
    p.add_argument("-o", "--out", required=True, help="folder for the adapted weights and their manifest")
    p.add_argument("--from", dest="source", default=d.source,
                   help="'dealthdr' (the shipped weights) or a folder holding DeAltHDR weights")
    p.add_argument("--exposures", type=_exposures, help="EV pattern from frame 0, e.g. -2,1 (default: props "
                   "or detection)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, default=64, help="square crop side, multiple of 8")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate, cosine-annealed (default 1e-05)")
    p.add_argument("--beta", type=float, default=d.beta, help="weight of the EMA loss (0 disables it)")
    p.add_argument("--ema", type=float, default=d.ema, help="EMA teacher decay")
    p.add_argument("--minutes", "--max-minutes", dest="max_minutes", type=float, default=0.0,
                   help="stop cleanly after this wall time")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default="runs/adapt", help="checkpoint and log folder")
    p.add_argument("--resume", action="store_true", help="continue --run-dir's ckpt.pt")
    return p


def config_from_args(args: argparse.Namespace):
    """The ``adapt`` stage's :class:`~vs_hdrvid.train.config.TrainConfig` of the command line."""
    from pathlib import Path

    from vs_hdrvid.train.config import TrainConfig

    run = Path(args.run_dir)
    return TrainConfig(
        stage="adapt", options={"footage": tuple(args.footage), "out": args.out, "source": args.source,
                                "ev_pattern": tuple(args.exposures) if args.exposures else None,
                                "beta": args.beta, "ema": args.ema},
        steps=args.steps, batch=args.batch, patch=args.patch, lr=args.lr, max_minutes=args.max_minutes,
        device=args.device, threads=args.threads, seed=args.seed, runs_dir=str(run.parent), out_name=run.name,
        resume=args.resume, ship="always", ckpt_every=50, warmup=0, synth_if_missing=False)


def run_cli(args: argparse.Namespace) -> int:
    """Run ``adapt``; returns the exit status (one error line on failure)."""
    import vapoursynth as vs

    from vs_hdrvid.train.cli import run_training

    return run_training(args, config_from_args, "adapt", errors=(vs.Error,))
