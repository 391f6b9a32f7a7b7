"""The ``vs-hdrvid eval`` subcommand: argument parsing around :func:`vs_hdrvid.eval.harness.evaluate`."""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_cli", "run_cli"]


def _scenes(value: str) -> int | list[str]:
    """``--scenes 3`` = the first three scenes; ``--scenes a,b`` = those scene ids."""
    return int(value) if value.isdigit() else [s for s in value.split(",") if s]


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` on a ``vs-hdrvid`` subparsers object (``vs_hdrvid.cli`` runs :func:`run_cli`)."""
    from vs_hdrvid.eval.harness import METHODS

    p = subparsers.add_parser(
        "eval", help="score methods against ground truth on a synthetic preset",
        description="Run each method through `vs-hdrvid reconstruct` on every scene and write "
                    "results.json, results.md (tables per scene group and exposure) and crops.png.")
    p.add_argument("--root", default="data/synth", help="dataset root (default: data/synth)")
    p.add_argument("--preset", default="test", help="dataset preset (default: test)")
    p.add_argument("--methods", default="reference,merge,merge+dis",
                   help=f"comma-separated method specs from: {', '.join(METHODS)}, dealthdr@s<S> (S a number or inf), "
                        "<network>@fp32 (the exact float32 path, e.g. coarse@fp32), <network>@compile / @nocompile "
                        "(torch.compile or not, whatever the clip's length)")
    p.add_argument("--out", default="runs/eval", help="output folder (default: runs/eval)")
    p.add_argument("--scenes", type=_scenes, default=None,
                   help="first N scenes, or comma-separated scene ids (default: all)")
    p.add_argument("--frames", default=None, metavar="A:B", help="half-open frame range per scene")
    p.add_argument("--device", default="auto", help="--device passed to every run (default: auto)")
    p.add_argument("--no-cvvdp", dest="cvvdp", action="store_false", help="skip ColorVideoVDP")
    p.add_argument("--cvvdp-max-side", type=int, default=None,
                   help="downscale for ColorVideoVDP so the longer side is at most this (speed)")
    p.add_argument("--remove-outputs", dest="keep_outputs", action="store_false",
                   help="delete the reconstructed EXR frames after scoring")
    p.add_argument("--weights", default=None, help="folder of network weights and MANIFEST.json for the "
                   "network methods (default: the shipped weights/)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Run the evaluation; 0 if every run succeeded, 1 if some failed, 2 on bad arguments or data."""
    from vs_hdrvid.eval.harness import evaluate

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        res = evaluate(args.root, args.preset, methods, args.out, scenes=args.scenes, frames=args.frames,
                       cvvdp=args.cvvdp, progress=not args.quiet, device=args.device,
                       keep_outputs=args.keep_outputs, cvvdp_max_side=args.cvvdp_max_side,
                       weights=args.weights)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"vs-hdrvid eval: {e}", file=sys.stderr)
        return 2
    if res["failures"]:
        print(f"vs-hdrvid eval: {len(res['failures'])} run(s) failed; see {args.out}/results.md",
              file=sys.stderr)
        return 1
    return 0
