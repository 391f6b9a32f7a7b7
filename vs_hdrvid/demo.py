"""``vs-hdrvid demo``: the whole weight-free pipeline on the bundled sample, scored against its truth
(and the shipped networks, when their weights are in ``weights/``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import vapoursynth as vs

from . import nodes
from . import weights as weights_mod
from .ops.exr import read_exr
from .ops.images import write_png
from .ops.metrics import psnr_mu
from .reconstruct import Options, build, write_output
from .resources import data_dir

__all__ = ["add_cli", "run_cli", "run_demo", "SAMPLE", "shipped_methods"]

SAMPLE = data_dir("sample")  # inside the package when installed from a wheel, else examples/sample


def _planes(f: vs.VideoFrame) -> np.ndarray:
    return np.stack([np.asarray(f[p]) for p in range(3)], -1)


def _score(clip: vs.VideoNode, gt: list[np.ndarray], evs: list[float]) -> dict[str, float]:
    """Mean PSNR-mu per reference exposure and overall (docs/design.md, "Evaluation")."""
    h_sat = 2.0 ** -min(evs)
    per: dict[str, list[float]] = {}
    for n in range(clip.num_frames):
        pred = torch.from_numpy(_planes(clip.get_frame(n))).permute(2, 0, 1)[None]
        ref = torch.from_numpy(gt[n]).permute(2, 0, 1)[None]
        value = float(psnr_mu(pred, ref, h_sat))
        per.setdefault(f"EV{evs[n % len(evs)]:+g}", []).append(value)
        per.setdefault("all", []).append(value)
    return {k: float(np.mean(v)) for k, v in per.items()}


def _contact_sheet(ldr: vs.VideoNode, hdr: vs.VideoNode, path: Path, count: int = 4) -> None:
    """Input exposures above, their reconstruction (SDR preview) below."""
    sdr_in = vs.core.resize.Point(ldr, format=vs.RGB24)
    sdr_out = nodes.tonemap(hdr, "sdr")
    idx = np.linspace(0, ldr.num_frames - 1, count).round().astype(int)
    top = np.concatenate([_planes(sdr_in.get_frame(int(i))) for i in idx], 1)
    bottom = np.concatenate([_planes(sdr_out.get_frame(int(i))) for i in idx], 1)
    write_png(str(path), np.concatenate([top, bottom], 0))


def shipped_methods(period: int) -> list[str]:
    """The network methods whose weights for a ``period``-exposure pattern are in ``weights/``."""
    manifest = weights_mod.read_manifest(weights_mod.WEIGHTS_DIR)
    names = {"coarse": [f"coarse-{period}exp"], "refine": [f"coarse-{period}exp", f"refine-{period}exp"],
             "dealthdr": [f"dealthdr-{period}exp"]}
    return [m for m, needed in names.items()
            if all(n in weights_mod.REGISTRY and weights_mod.REGISTRY[n].file in manifest for n in needed)]


def run_demo(sample: Path = SAMPLE, out: Path = Path("out/demo"), progress: bool = True) -> dict:
    """Reconstruct the sample with ``reference``, ``merge`` and the shipped networks; write EXR, HDR10
    and a contact sheet of ``merge``.

    Returns:
        PSNR-mu per method (per reference exposure and overall).
    """
    pattern = sample / "ldr" / "%05d.png"
    if not (sample / "exposures.txt").is_file():
        raise FileNotFoundError(f"the sample is missing: {sample} (regenerate it with "
                                "`vs-hdrvid synth --preset sample --root examples`)")
    clip = nodes.read_images(pattern)
    evs = nodes.linearize(clip).get_frame(0).props["HdrExposurePattern"]
    evs = [float(e) for e in evs]
    gt = [read_exr(p) for p in sorted((sample / "gt").glob("*.exr"))]
    if len(gt) != clip.num_frames:
        raise FileNotFoundError(f"{sample / 'gt'} has {len(gt)} frames for {clip.num_frames} inputs")
    scores = {}
    for method in ["reference", "merge"] + shipped_methods(len(evs)):
        scores[method] = _score(build(clip, Options(method=method)), gt, evs)
    merged = build(clip, Options(method="merge"))
    out.mkdir(parents=True, exist_ok=True)
    write_output(merged, str(out / "exr" / "%05d.exr"), progress=progress)
    write_output(merged, str(out / "merge_hdr10.mkv"), progress=progress)
    _contact_sheet(clip, merged, out / "contact_sheet.png")
    return scores


def add_cli(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="reconstruct the bundled sample and score each method against its truth")
    p.add_argument("--sample", type=Path, default=SAMPLE, help="sample folder (ldr/, gt/, exposures.txt)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="where to write the results")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run_cli(args: argparse.Namespace) -> int:
    scores = run_demo(args.sample, args.out, progress=not args.quiet)
    print(f"PSNR-mu against the sample's ground truth ({args.sample}):")
    keys = sorted((k for k in scores["merge"] if k != "all"), key=lambda k: float(k[2:])) + ["all"]
    print(f"  {'method':<10}" + "".join(f"{k:>10}" for k in keys))
    for method, s in scores.items():
        print(f"  {method:<10}" + "".join(f"{s[k]:>10.2f}" for k in keys))
    print(f"wrote {args.out}/exr/*.exr, {args.out}/merge_hdr10.mkv, {args.out}/contact_sheet.png",
          file=sys.stderr)
    return 0
