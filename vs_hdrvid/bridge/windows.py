"""Temporal windows as frame requests to the host graph: shifted clips, never a private decoder.

Past either end of a clip a window's neighbour is replaced by the nearest in-range frame with the
same exposure index (:func:`window_index`), so every window has the exposures it expects;
:func:`shift_clip` builds that mapping from trims and splices, so VapourSynth serves the requests.
"""
from __future__ import annotations

import vapoursynth as vs

__all__ = ["window_index", "shift_clip", "clamped_shift"]

core = vs.core


def window_index(n: int, offset: int, num_frames: int, period: int) -> int:
    """Source frame for slot ``offset`` of the window centred on ``n``.

    Past either end the neighbour is replaced by the nearest in-range frame with the same exposure
    index, shifting by whole pattern periods, so every window has the exposures it expects.

    Raises:
        IndexError: the clip holds no frame with that exposure index.
    """
    m = n + offset
    if m < 0:
        m += -(m // period) * period  # whole periods up to the first in-range frame
    elif m >= num_frames:
        m -= -(-(m - num_frames + 1) // period) * period
    if not 0 <= m < num_frames:
        raise IndexError(f"no frame with exposure index {(n + offset) % period} within the clip")
    return m


def shift_clip(clip: vs.VideoNode, offset: int, period: int) -> vs.VideoNode:
    """``clip`` shifted so frame ``n`` is source frame :func:`window_index` ``(n, offset)``.

    Built from trims and splices, so the host graph serves the frame requests.
    """
    if offset == 0:
        return clip
    n_frames = clip.num_frames
    idx = [window_index(n, offset, n_frames, period) for n in range(n_frames)]
    runs: list[tuple[int, int]] = []  # contiguous source runs [a, b]
    for m in idx:
        if runs and m == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], m)
        else:
            runs.append((m, m))
    return core.std.Splice([clip[a:b + 1] for a, b in runs]) if len(runs) > 1 else clip[runs[0][0]:runs[0][1] + 1]


def clamped_shift(clip: vs.VideoNode, offset: int) -> vs.VideoNode:
    """``clip`` shifted by ``offset`` with plain clamping at the ends (the first or last frame repeats).

    For props that do not depend on the exposure (alignment transforms, a frame's statistics).
    """
    n = clip.num_frames
    if offset == 0:
        return clip
    if offset > 0:
        return core.std.Splice([clip[offset:]] + [clip[n - 1]] * min(offset, n)) if offset < n else clip[n - 1] * n
    k = -offset
    return core.std.Splice([clip[0]] * min(k, n) + [clip[:n - k]]) if k < n else clip[0] * n
