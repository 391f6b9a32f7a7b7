"""The reconstruction pipeline behind ``vs-hdrvid reconstruct``: build the graph, write the output."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import vapoursynth as vs

from . import nodes
from .bridge.requests import trimmed
from .nodes._common import recall, remember
from .encode import encode_hdr10, iterate_frames
from .ops.exr import write_exr as write_exr_file
from .ops.images import write_png
from .outputs import Atomic, Claim, OutputError, claim

__all__ = ["METHODS", "FLOWS", "Options", "build", "delivery_clip", "write_image", "write_output", "output_kind"]

log = logging.getLogger("vs_hdrvid")
METHODS = ("reference", "merge", "coarse", "refine", "dealthdr")
FLOWS = ("none", "dis", "farneback")


@dataclass
class Options:
    """What ``reconstruct`` was asked for (the command line's flags)."""

    exposures: Sequence[float] | None = None
    method: str = "merge"
    flow: str = "none"
    crf: str = "gamma"
    device: str = "auto"
    frames: tuple[int, int | None] | None = None
    radius: int = 1
    weights: str | None = None  # folder of the network weights (default: weights/)
    s: float = 15.0  # dealthdr's FGMA sensitivity
    fp32: bool = False  # networks: the exact float32 path (default: bf16 autocast where native, fp16 on CUDA)
    compile: bool | None = None  # networks: torch.compile (None: the nodes' rule, long clips on a CPU)
    tile: int | None = None  # coarse/refine: tile side in pixels
    max_memory: float | None = None  # coarse/refine: GiB per forward pass; larger frames are tiled
    backend: str = "torch"  # networks: torch, or ort/ov/trt for their ONNX graphs
    temporal_fuse: bool = False  # merge/coarse/dealthdr: hv.temporal_fuse on the result


def output_kind(path: str) -> str:
    """``"exr"``, ``"png"`` (patterns) or ``"video"``, from the output name."""
    low = path.lower()
    if low.endswith((".mkv", ".mp4", ".mov")):
        return "video"
    if low.endswith((".exr", ".png")):
        if not re.search(r"%0?\d*d", path):
            raise ValueError(f"image output needs a frame-number pattern like out/%05d{Path(path).suffix}")
        return low.rsplit(".", 1)[1]
    raise ValueError(f"unknown output type {Path(path).suffix or path!r}: use .exr/.png patterns or .mkv/.mp4/.mov")


def build(clip: vs.VideoNode, opts: Options) -> vs.VideoNode:
    """Linear HDR clip for ``clip`` by ``opts.method`` (the radiometry of docs/design.md).

    ``opts.frames`` trims the result, not the input, so the exposure pattern stays anchored at
    frame 0 and the first frames of the range keep their neighbours.
    """
    lin = nodes.linearize(clip, exposures=opts.exposures, crf=opts.crf, device=opts.device)
    facts = recall(lin)  # the pattern and where it came from, for what is built on it
    if opts.method == "reference":
        hdr = lin
    elif opts.method == "merge":
        lin = nodes.align(lin, device=opts.device)  # keeps the pattern linearize recorded
        flows = None
        if opts.flow != "none":
            offsets = [o for o in range(-opts.radius, opts.radius + 1) if o]
            flows = [nodes.classical_flow(lin, o, method=opts.flow) for o in offsets]
        hdr = nodes.merge(lin, radius=opts.radius, flow=flows, device=opts.device)
    elif opts.method in ("coarse", "refine"):
        lin = nodes.align(lin, device=opts.device)  # keeps the pattern linearize recorded
        net = dict(weights=opts.weights, device=opts.device, fp32=opts.fp32, compile=opts.compile, tile=opts.tile,
                   max_memory=opts.max_memory, backend=opts.backend)
        hdr = nodes.coarse(lin, **net)
        if opts.method == "refine":
            hdr = nodes.refine(hdr, lin, **net)
    elif opts.method == "dealthdr":
        lin = nodes.align(lin, device=opts.device)  # keeps the pattern linearize recorded
        hdr = nodes.dealthdr(lin, s=opts.s, weights=opts.weights, device=opts.device, fp32=opts.fp32,
                             compile=opts.compile, backend=opts.backend)
    else:
        raise ValueError(f"unknown method {opts.method!r}; choose from {', '.join(METHODS)}")
    if opts.temporal_fuse:
        if opts.method in ("reference", "refine"):
            raise ValueError(f"--temporal-fuse follows merge, coarse or dealthdr, not {opts.method} "
                             "(the shipped RefineNet corrects that fusion already)")
        hdr = nodes.temporal_fuse(hdr, lin, device=opts.device)
    if opts.frames is not None:
        a, b = opts.frames
        b = clip.num_frames if b is None else b
        if not 0 <= a < b <= clip.num_frames:
            raise ValueError(f"--frames {a}:{b} is outside the clip's 0:{clip.num_frames}")
        hdr = trimmed(hdr[a:b], hdr, a)
    return remember(hdr, **facts)


def delivery_clip(hdr: vs.VideoNode, kind: str, peak_nits: float = 1000.0) -> vs.VideoNode:
    """The frames an output of ``kind`` (:func:`output_kind`) holds: the linear HDR itself for
    ``exr``, its PQ YUV420P10 for ``video`` (HDR10), its 8-bit SDR preview for ``png``."""
    if kind == "video":
        return nodes.tonemap(hdr, "pq", peak_nits=peak_nits)
    if kind == "png":
        return nodes.tonemap(hdr, "sdr")
    return hdr


def write_image(kind: str, path: str, frame: vs.VideoFrame, atomic: Atomic) -> None:
    """Write one frame of a :func:`delivery_clip` as an ``exr`` (half float) or ``png`` file,
    through ``atomic`` (a temporary name, renamed when complete)."""
    rgb = np.stack([np.asarray(frame[p]) for p in range(3)], -1)
    if kind == "exr":
        with atomic(path) as tmp:
            write_exr_file(tmp, rgb)
        return
    try:
        write_png(path, rgb, atomic=atomic)
    except ValueError as e:
        raise OutputError(f"cannot encode {path} as PNG: {e}") from None


def write_output(hdr: vs.VideoNode, output: str, progress: bool = True, peak_nits: float = 1000.0,
                 first: int = 0, report: dict | None = None, target: Claim | None = None) -> list[str]:
    """Write linear HDR ``hdr`` to ``output`` (EXR or PNG pattern, or an HDR10 video).

    Image files are numbered from ``first`` (the source frame number of the clip's frame 0).

    The output is locked for the run (:func:`vs_hdrvid.outputs.claim`): a second run writing the
    same output is refused. Every file is written under a temporary name and renamed when complete;
    if the run fails or is interrupted, the files this run wrote (and the folders it created) are
    removed again, so no partial result is left, and no other run's files are touched.

    Args:
        report: filled with ``max_cll`` and ``max_fall`` (cd/m2) measured over an HDR10 video's
            frames.
        target: the run's claim on ``output`` when the caller took it already (to hold the lock
            from before the graph is built); by default one is taken here.

    Returns:
        the paths written.

    Raises:
        OutputError: the output is being written by another run, or cannot be written (one line).
    """
    kind = output_kind(output)
    if target is None:
        with claim(output) as own:
            return write_output(hdr, output, progress, peak_nits, first, report, own)
    clip = delivery_clip(hdr, kind, peak_nits)
    if kind == "video":
        encode_hdr10(clip, output, progress=progress, atomic=target.atomic, report=report)
        return list(target.written)
    for n, f in iterate_frames(clip, progress, desc=f"writing {Path(output).name}"):
        write_image(kind, output % (first + n), f, target.atomic)
    return list(target.written)
