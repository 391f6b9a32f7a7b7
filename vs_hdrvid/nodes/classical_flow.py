"""``classical_flow``: dense optical flow between exposure-normalised frames (OpenCV DIS/Farneback)."""
from __future__ import annotations

import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like
from ..ops.classical_flow import FLOW_METHODS, FLOW_PRESETS, aligned_exposure_flow
from ._common import check_linear, error, exposure_pattern
from ._window import ExposureWindow

__all__ = ["classical_flow"]

NODE = "classical_flow"


def classical_flow(clip: vs.VideoNode, offset: int, method: str = "dis", preset: str = "medium",
                   num_streams: int | None = None) -> vs.VideoNode:
    """Flow from frame n to frame n + ``offset`` (exposure-aware at the ends), Kang et al. 2003 style.

    Both frames are clipped at the radiance where the longer exposure saturates, so they look
    alike; the neighbour is first aligned by the composed ``align`` similarity when present, and the
    residual flow is composed back, so the result is the whole motion
    (:func:`~vs_hdrvid.ops.classical_flow.aligned_exposure_flow`). Computed on the CPU.

    Args:
        clip: output of :func:`linearize` (optionally through :func:`align`).
        offset: neighbour offset, non-zero.
        method: ``"dis"`` or ``"farneback"``.
        preset: ``"ultrafast"``, ``"fast"`` or ``"medium"``.
        num_streams: frames processed concurrently; None: the default of every node
            (:func:`~vs_hdrvid.bridge.default_streams`: VapourSynth's thread count, as it runs on CPU).

    Returns:
        RGBS clip: planes u, v (pixels) and the forward-backward confidence in [0, 1]; backward
        warping frame n + offset with (u, v) aligns it on frame n. Usable as ``merge(flow=...)``.
    """
    clip = check_linear(clip, NODE)
    if not isinstance(offset, int) or offset == 0:
        raise error(NODE, f"offset must be a non-zero integer, got {offset!r}")
    if method not in FLOW_METHODS:
        raise error(NODE, f"method must be one of {', '.join(map(repr, FLOW_METHODS))}, got {method!r}")
    if preset not in FLOW_PRESETS:
        raise error(NODE, f"preset must be one of {', '.join(map(repr, FLOW_PRESETS))}, got {preset!r}")
    pattern = exposure_pattern(clip)
    window = ExposureWindow(clip, sorted({0, offset}), len(pattern), NODE)
    slot = window.offsets.index(offset)
    ref = window.offsets.index(0)
    runner = NodeRunner(NODE, torch.device("cpu"), num_streams=num_streams, cache_frames=4)
    k = len(window.clips)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        w = window.gather(n, f[:k], runner)
        out = aligned_exposure_flow(w.frames[ref], w.frames[slot], w.to_ref[slot][None], float(w.ev.max()),
                                    method, preset)
        return runner.emit(out, f[ref].format, w.props, publish=False)

    return runner.map_frames(blank_like(clip), window.clips, process)
