"""The clips a script gives vs-mlrt for an exported network, in the order of its planes.

``core.ort.Model(clips, path)`` (and ``core.ov.Model``, ``core.trt.Model``) stacks the planes of
``clips`` into the network's one input. :func:`network_clips` builds that list from a linearised
clip, as the network nodes build their windows: each window frame is the clip shifted with
:func:`~vs_hdrvid.bridge.windows.shift_clip` (at the ends, the nearest frame of the same exposure),
each flow a :func:`~vs_hdrvid.nodes.classical_flow` clip, and each frame's exposure a constant
GRAYS plane (:func:`ev_plane`), since vs-mlrt passes planes only. The layout is that of
:func:`vs_hdrvid.export.graphs.layout`, also stored in each file's ``vs_hdrvid.layout`` metadata.

Example (docs/onnx.md has the whole script)::

    lin = hv.linearize(hv.source("shot.mov"), exposures=[-1.5, 1.5])
    hdr = core.ort.Model(network_clips("coarse", lin), "onnx/coarse-2exp.onnx")
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import vapoursynth as vs

__all__ = ["ev_plane", "network_clips", "by_reference_exposure"]

core = vs.core


def _pattern(lin: vs.VideoNode) -> list[float]:
    from ..nodes._common import PATTERN_PROP, recall

    pattern = recall(lin).get(PATTERN_PROP)
    if not pattern or len(pattern) not in (2, 3):
        raise vs.Error("network_clips: give the output of hv.linearize (its exposure pattern of 2 or 3 EVs is "
                       "what the exposure planes are made from)")
    return [float(e) for e in pattern]


def ev_plane(lin: vs.VideoNode, offset: int, pattern: Sequence[float]) -> vs.VideoNode:
    """A GRAYS clip whose frame ``n`` is the constant EV of the window frame ``n + offset``.

    Frame ``m`` has the exposure ``pattern[m % len(pattern)]`` (the pattern from frame 0), and a
    window frame past either end keeps its exposure (:func:`~vs_hdrvid.bridge.windows.window_index`).
    """
    p, n = len(pattern), lin.num_frames
    per = -(-n // p)
    planes = [core.std.BlankClip(lin, format=vs.GRAYS, length=per, color=[pattern[(i + offset) % p]], keep=True)
              for i in range(p)]
    return core.std.Interleave(planes)[:n]


def _config(name: str, folder: str | os.PathLike | None) -> dict:
    from .. import weights as W

    path = Path(folder) if folder is not None else W.WEIGHTS_DIR
    entry = W.read_manifest(path.parent if path.is_file() else path).get(W.REGISTRY[name].file)
    if entry is None:
        raise vs.Error(f"network_clips: no {name} weights in {path}; give weights= the folder the graph was "
                       "exported from")
    return entry.config


def network_clips(kind: str, lin: vs.VideoNode, coarse: vs.VideoNode | None = None,
                  flows: Sequence[vs.VideoNode] | None = None, frames: int | None = None,
                  weights: str | os.PathLike | None = None) -> list[vs.VideoNode]:
    """The clips of an exported ``kind`` network's input, in the order of its planes.

    Args:
        kind: ``"coarse"``, ``"refine"`` or ``"dealthdr"``.
        lin: the output of ``hv.linearize`` (RGBS radiance). The window frames are not warped by
            ``hv.align``'s similarity props: the coarse flows include it, the other networks see
            the frames as they are.
        coarse: refine only: the coarse HDR clip (``hv.coarse`` or a vs-mlrt CoarseNet's output).
        flows: coarse: the flow clips per neighbour offset ``-(n-1)..-1, 1..n-1`` (default
            ``hv.classical_flow(lin, offset)``, as ``hv.coarse``); dealthdr: the flow clips for
            offsets ``-2, -1, 1, 2`` of a graph that takes flows (default ``hv.classical_flow``,
            as ``hv.dealthdr``; the reverse flows come from the same clips).
        frames: the window length of refine (3) or dealthdr (5), when not the default.
        weights: refine and dealthdr: the weights folder the graph was exported from (default:
            the shipped weights). DeAltHDR weights with ``flow_source="dis"`` give graphs that
            take flows; those with the paper's SpyNet estimate their own, and get no flow clips.
            RefineNet weights with ``temporal_base`` take the reference's coarse HDR through
            :func:`~vs_hdrvid.nodes.temporal_fuse`, as :func:`~vs_hdrvid.nodes.refine` does.

    Returns:
        the clips for ``core.ort.Model`` / ``core.ov.Model`` / ``core.trt.Model``.
    """
    from ..bridge.windows import shift_clip

    pattern = _pattern(lin)
    p = len(pattern)
    if kind == "coarse":
        offsets = list(range(-(p - 1), p))
    elif kind in ("refine", "dealthdr"):
        half = (frames or (3 if kind == "refine" else 5)) // 2
        offsets = list(range(-half, half + 1))
    else:
        raise vs.Error(f"network_clips: kind must be coarse, refine or dealthdr, got {kind!r}")
    nbrs = [o for o in offsets if o]
    clips: list[vs.VideoNode] = []
    if kind == "refine":
        if coarse is None:
            raise vs.Error("network_clips: refine needs coarse=, the coarse HDR clip")
        clips += [shift_clip(coarse, o, p) for o in offsets]
        if _config(f"refine-{p}exp", weights).get("temporal_base"):  # as hv.refine: the fused reference
            from ..nodes import temporal_fuse

            clips[offsets.index(0)] = temporal_fuse(coarse, lin)
    clips += [shift_clip(lin, o, p) for o in offsets]
    if kind == "coarse":
        from ..nodes import classical_flow

        clips += list(flows) if flows is not None else [classical_flow(lin, o) for o in nbrs]
    elif kind == "dealthdr" and _config("dealthdr-2exp", weights).get("flow_source", "spynet") == "dis":
        from ..nodes import classical_flow

        flows = list(flows) if flows is not None else [classical_flow(lin, o) for o in nbrs]
        clips += flows + [shift_clip(flows[nbrs.index(-o)], o, p) for o in nbrs]  # n -> t, as hv.dealthdr
    return clips + [ev_plane(lin, o, pattern) for o in offsets]


def by_reference_exposure(lin: vs.VideoNode, short: vs.VideoNode, long: vs.VideoNode) -> vs.VideoNode:
    """Each frame from the DeAltHDR graph of its own exposure: ``short`` where the frame is the
    pattern's shortest exposure, ``long`` elsewhere (two-exposure patterns). vs-mlrt then runs each
    graph on the frames it serves only."""
    pattern = _pattern(lin)
    if len(pattern) != 2:
        raise vs.Error("by_reference_exposure: DeAltHDR takes two-exposure patterns")
    first_short = pattern[0] <= pattern[1]
    even, odd = (short, long) if first_short else (long, short)
    return core.std.Interleave([even[0::2], odd[1::2]])[:lin.num_frames]
