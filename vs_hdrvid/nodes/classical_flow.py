"""``classical_flow``: dense optical flow between exposure-normalised frames (OpenCV DIS/Farneback)."""
from __future__ import annotations

import numpy as np
import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like
from ..ops.classical_flow import exposure_flow
from ..ops.warp import flow_warp, similarity_to_flow, warp_similarity
from ._common import check_linear, error, exposure_pattern
from ._window import ExposureWindow

__all__ = ["classical_flow"]

NODE = "classical_flow"


def classical_flow(clip: vs.VideoNode, offset: int, method: str = "dis", preset: str = "medium"
                   ) -> vs.VideoNode:
    """Flow from frame n to frame n + ``offset`` (exposure-aware at the ends), Kang et al. 2003 style.

    Both frames are clipped at the radiance where the longer exposure saturates, so they look
    alike; the neighbour is first aligned by the composed ``align`` similarity when present, and the
    residual flow is composed back, so the result is the whole motion.

    Args:
        clip: output of :func:`linearize` (optionally through :func:`align`).
        offset: neighbour offset, non-zero.
        method: ``"dis"`` or ``"farneback"``.
        preset: ``"ultrafast"``, ``"fast"`` or ``"medium"``.

    Returns:
        RGBS clip: planes u, v (pixels) and the forward-backward confidence in [0, 1]; backward
        warping frame n + offset with (u, v) aligns it on frame n. Usable as ``merge(flow=...)``.
    """
    clip = check_linear(clip, NODE)
    if not isinstance(offset, int) or offset == 0:
        raise error(NODE, f"offset must be a non-zero integer, got {offset!r}")
    if method not in ("dis", "farneback"):
        raise error(NODE, f"method must be 'dis' or 'farneback', got {method!r}")
    pattern = exposure_pattern(clip)
    window = ExposureWindow(clip, sorted({0, offset}), len(pattern), NODE)
    slot = window.offsets.index(offset)
    ref = window.offsets.index(0)
    runner = NodeRunner(NODE, torch.device("cpu"), num_streams=1, cache_frames=4)
    k = len(window.clips)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        w = window.gather(n, f[:k], runner)
        m = w.to_ref[slot][None]
        mov, inside = warp_similarity(w.frames[slot][None], m, return_mask=True)
        mov = mov[0]
        fw, conf = exposure_flow(w.frames[ref], mov, float(w.ev.max()), method, preset)
        # no confidence where the neighbour's pixel lies outside its frame (border padding)
        landed = flow_warp(inside, torch.from_numpy(fw)[None])[0, 0].numpy()
        conf = conf * (landed > 0.999)
        # residual flow lands in the warped neighbour; map it back through the similarity
        res = torch.from_numpy(fw)[None]
        total = res + flow_warp(similarity_to_flow(m, *res.shape[-2:]), res)
        out = torch.cat([total[0], torch.from_numpy(np.asarray(conf, np.float32))[None]])
        return runner.emit(out, f[ref].format, w.props, publish=False)

    return runner.map_frames(blank_like(clip), window.clips, process)

