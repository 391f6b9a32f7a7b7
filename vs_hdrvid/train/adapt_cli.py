"""The ``vs-hdrvid adapt`` subcommand (DeAltHDR's self-supervised adaptation, Algorithm 1).

Example::

    vs-hdrvid adapt clip1.mov clip2.mov --exposures -2,1 --from dealthdr -o weights/adapted --steps 300
    vs-hdrvid reconstruct clip1.mov -o out.mkv --method dealthdr --weights weights/adapted
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_cli", "run_cli"]


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``adapt`` on an ``argparse`` subparsers object; returns its parser."""
    from vs_hdrvid.cli import _exposures
    from vs_hdrvid.train.adapt import AdaptConfig

    d = AdaptConfig(footage=["-"], out="-")
    p = subparsers.add_parser(
        "adapt", help="adapt DeAltHDR to unlabeled footage (self-supervised)",
        description="Fine-tune DeAltHDR on unlabeled alternating-exposure footage: the 5-frame output is the "
                    "pseudo-target of 3-frame subsets sampled from t-6..t+6, with an EMA teacher (DeAltHDR "
                    "Algorithm 1). Writes dealthdr_2exp.safetensors and MANIFEST.json into -o; use it with "
                    "`reconstruct --method dealthdr --weights DIR`.")
    p.add_argument("footage", nargs="+", help="video files, image sequence patterns or .vpy scripts")
    p.add_argument("-o", "--out", required=True, help="folder for the adapted weights and their manifest")
    p.add_argument("--from", dest="source", default=d.source,
                   help="'dealthdr' (the shipped weights) or a folder holding DeAltHDR weights")
    p.add_argument("--exposures", type=_exposures, help="EV pattern from frame 0, e.g. -2,1 (default: props "
                   "or detection)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--patch", type=int, default=d.patch, help="square crop side, multiple of 8")
    p.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate, cosine-annealed (default {d.lr:g})")
    p.add_argument("--beta", type=float, default=d.beta, help="weight of the EMA loss (0 disables it)")
    p.add_argument("--ema", type=float, default=d.ema, help="EMA teacher decay")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop cleanly after this wall time")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--run-dir", default=d.run_dir, help="checkpoint and log folder")
    p.add_argument("--resume", action="store_true", help="continue --run-dir's ckpt.pt")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Run ``adapt``; returns the exit status (one error line on failure)."""
    import vapoursynth as vs

    from vs_hdrvid.train.adapt import AdaptConfig, adapt
    from vs_hdrvid.train.cli import log_to_stderr

    log_to_stderr()
    try:
        cfg = AdaptConfig(footage=args.footage, out=args.out, source=args.source, exposures=args.exposures,
                          steps=args.steps, batch=args.batch, patch=args.patch, lr=args.lr, beta=args.beta,
                          ema=args.ema, max_minutes=args.max_minutes, device=args.device, threads=args.threads,
                          seed=args.seed, run_dir=args.run_dir, resume=args.resume)
        res = adapt(cfg)
    except ValueError as e:
        print(f"vs-hdrvid adapt: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError, vs.Error) as e:
        print(f"vs-hdrvid adapt: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    print(f"vs-hdrvid adapt: wrote {res['written']}", file=sys.stderr)
    return 0
