"""The ``vs-hdrvid synth`` subcommand: fetch the panoramas and synthesise a preset.

Examples::

    vs-hdrvid synth --fetch-panoramas                   # data/panoramas/*.exr (blender-data, CC0)
    vs-hdrvid synth --preset test                       # data/synth/test/<scene>/...
    vs-hdrvid synth --preset shifted                    # adaptation domain shift (not in `make data`)
    vs-hdrvid synth --preset sample --root examples     # examples/sample/
    vs-hdrvid synth --preset train --scenes 400 --workers 2
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_cli", "run_cli"]


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``synth`` on an ``argparse`` subparsers object; returns its parser."""
    from vs_hdrvid.synth.presets import PRESETS

    p = subparsers.add_parser("synth", help="synthesise alternating-exposure training/test data",
                              description="Synthesise alternating-exposure sequences with ground-truth "
                                          "HDR and flow (Chen et al. 2021 and DeAltHDR recipes).")
    p.add_argument("--preset", choices=sorted(PRESETS), help="which preset to generate")
    p.add_argument("--root", default="data/synth", help="output root (default: data/synth)")
    p.add_argument("--fetch-panoramas", action="store_true",
                   help="download the blender-data CC0 panoramas into --panoramas first")
    p.add_argument("--panoramas", default="data/panoramas", metavar="DIR",
                   help="folder of the named panoramas, or of your own EXR/HDR images and EXR "
                        "sequence folders (default: data/panoramas)")
    p.add_argument("--scenes", type=int, metavar="N", help="number of scenes (overrides the preset)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="regenerate scenes that already exist")
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Run ``synth`` from parsed arguments; returns the exit status (one error line on failure)."""
    from vs_hdrvid.synth.dataset import generate
    from vs_hdrvid.synth.sources import fetch_panoramas

    if not args.fetch_panoramas and args.preset is None:
        print("vs-hdrvid synth: give --preset NAME and/or --fetch-panoramas", file=sys.stderr)
        return 2
    if args.scenes is not None and args.scenes < 1:
        print("vs-hdrvid synth: --scenes must be at least 1", file=sys.stderr)
        return 2
    try:
        if args.fetch_panoramas:
            paths = fetch_panoramas(args.panoramas)
            print(f"synth: {len(paths)} panoramas in {args.panoramas}", file=sys.stderr)
        if args.preset is not None:
            metas = generate(args.preset, root=args.root, scenes=args.scenes, workers=args.workers,
                             panoramas=args.panoramas, overwrite=args.overwrite)
            print(f"synth: {len(metas)} scene(s) of {args.preset!r} under {args.root}", file=sys.stderr)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"vs-hdrvid synth: {msg}", file=sys.stderr)
        return 1
    return 0
