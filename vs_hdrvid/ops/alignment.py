"""Global alignment between frames of different exposures (Chen et al. 2021, section 3.1).

The similarity between two frames is estimated on exposure-normalised luminance: both frames are
clipped at the same radiance (the lower of their saturation levels), so a highlight looks the same
in both, and pixels under- or over-exposed in their own frame are masked out. Large frames are
box-downscaled by an integer factor first and the transform is scaled back.

Convention: frames are linear radiance ``(B, 3, H, W)`` on the ``H = f^-1(L) / 2**EV`` scale;
transforms are ``(B, 2, 3)`` in pixel coordinates, mapping the previous frame onto the current one.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .bands import BAND_PIXELS
from .color import rgb_to_luminance
from .similarity import estimate_similarity_from_pyramids, similarity_pyramid
from .warp import compose_affine, invert_affine

__all__ = ["pooling_factor", "pooled_luminance", "alignment_input", "similarity_between",
           "similarity_from_pooled", "pair_clip_level", "alignment_pyramid"]

Pooled = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def pooling_factor(shape: Sequence[int], max_side: int = 480) -> int:
    """The integer box factor that brings the longer side of ``shape[-2:]`` to at most ``max_side``."""
    return -(-max(shape[-2:]) // max_side)


def _block_extremes(y: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max and min over non-overlapping ``factor x factor`` blocks (remainder rows/columns dropped).

    Equals ``F.max_pool2d(y, factor)`` and ``-F.max_pool2d(-y, factor)``, reduced along x then y
    (a third of the time of pooling at 1080p).

    Shape:
        ``(B, 1, H, W)`` -> ``(B, 1, H / factor, W / factor)`` twice.
    """
    b, c, h, w = y.shape
    hk, wk = h // factor, w // factor
    rows = y[..., :hk * factor, :wk * factor].reshape(b, c, hk * factor, wk, factor)
    out = []
    for reduce in (torch.amax, torch.amin):
        r = reduce(rows, -1).view(b, c, hk, factor, wk)                     # along x, then along y
        out.append(reduce(r, 3))
    return out[0], out[1]


def pooled_luminance(h: torch.Tensor, factor: int = 1) -> Pooled:
    """Luminance box-downscaled by ``factor``, and its max and min over each box.

    What :func:`alignment_input` needs from the full-resolution frame; it does not depend on the
    exposure, so a node computes it once per frame for both pairs the frame is in. On CPU the
    full-resolution luminance is made band by band (a whole multiple of ``factor`` rows), never as
    a frame-sized temporary.

    Shape:
        ``(B, 3, H, W)`` -> ``(B, 1, H / factor, W / factor)`` three times.
    """
    if factor == 1:
        y = rgb_to_luminance(h, fused=True)
        return y, y, y
    b, _, rows, cols = h.shape
    hk = rows // factor
    out = [torch.empty(b, 1, hk, cols // factor, dtype=h.dtype, device=h.device) for _ in range(3)]
    step = max(1, BAND_PIXELS // max(cols * factor, 1)) if h.device.type == "cpu" else hk  # coarse rows per band
    for k0 in range(0, hk, step):
        k1 = min(hk, k0 + step)
        y = rgb_to_luminance(h[..., k0 * factor:k1 * factor, :], fused=True)
        y_max, y_min = _block_extremes(y, factor)
        for dst, src in zip(out, (F.avg_pool2d(y, factor), y_max, y_min)):
            dst[..., k0:k1, :] = src
    return out[0], out[1], out[2]


def alignment_input(h: torch.Tensor | None, ev: float, clip_level: float, factor: int = 1, lo: float = 0.04,
                    hi: float = 0.92, gamma: float = 2.2, pooled: Pooled | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exposure-normalised, clipped luminance (scaled to [0, 1]) and its well-exposed mask.

    Both frames of a pair are clipped at the same radiance ``clip_level`` (the lower of their
    saturation levels), so a highlight looks the same in both; pixels under- or over-exposed in
    their own frame are masked out. With ``factor > 1`` the luminance is box-downscaled by it, and
    a coarse pixel is usable only if every fine pixel under it is. ``pooled`` is
    :func:`pooled_luminance` of ``h`` when already computed (``h`` may then be None).

    Shape:
        ``(B, 3, H, W)`` -> ``(B, 1, H / factor, W / factor)`` twice.
    """
    y, y_max, y_min = pooled if pooled is not None else pooled_luminance(h, factor)
    scale = 2.0 ** ev
    lo_lin, hi_lin = lo ** gamma / scale, hi ** gamma / scale  # the LDR range in radiance
    mask = ((y_min > lo_lin) & (y_max < min(hi_lin, clip_level))).to(y.dtype)
    return (y / clip_level).clamp(0, 1), mask


def similarity_between(prev: torch.Tensor, cur: torch.Tensor, ev_prev: float, ev_cur: float,
                       max_side: int = 480) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity mapping ``prev`` onto ``cur`` (both linear radiance), and its confidence.

    Frames larger than ``max_side`` are box-downscaled by an integer factor for the estimate and the
    transform is scaled back: the estimate is accurate to ~0.01 px at the reduced size, so a few
    hundredths of a pixel at full size.

    Shape:
        ``(B, 3, H, W)`` x 2 -> ``(B, 2, 3)``, ``(B,)``.
    """
    k = pooling_factor(cur.shape, max_side)
    return similarity_from_pooled(pooled_luminance(prev.float(), k), pooled_luminance(cur.float(), k),
                                  ev_prev, ev_cur, k)


def pair_clip_level(ev_a: float, ev_b: float) -> float:
    """The radiance both frames of a pair are clipped at: the lower of their saturation levels."""
    return min(2.0 ** -ev_a, 2.0 ** -ev_b) * 0.92 ** 2.2


def alignment_pyramid(pooled: Pooled, ev: float, clip_level: float, factor: int) -> list[torch.Tensor]:
    """One frame's :func:`~vs_hdrvid.ops.similarity.similarity_pyramid` of its :func:`alignment_input`.

    It depends on the frame and the pair's clip level only, so a frame aligned with both its
    neighbours at the same clip level (every frame of a 2-exposure pattern) needs it once.
    """
    y, mask = alignment_input(None, ev, clip_level, factor, pooled=pooled)
    return similarity_pyramid(y, mask)


def similarity_from_pooled(prev: Pooled, cur: Pooled, ev_prev: float, ev_cur: float, k: int,
                           pyramids: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`similarity_between` from both frames' :func:`pooled_luminance` at factor ``k``.

    ``pyramids`` are both frames' :func:`alignment_pyramid` at :func:`pair_clip_level` when the
    caller has them (``prev``'s, then ``cur``'s); the result is the same bit for bit.
    """
    if pyramids is None:
        level = pair_clip_level(ev_prev, ev_cur)
        pyramids = alignment_pyramid(prev, ev_prev, level, k), alignment_pyramid(cur, ev_cur, level, k)
    m, conf = estimate_similarity_from_pyramids(pyramids[1], pyramids[0], tuple(cur[0].shape[-2:]))
    if k == 1:
        return m, conf
    # box pooling by k maps full-res x to (x - (k - 1) / 2) / k at the coarse level
    to_small = torch.tensor([[1 / k, 0, -(k - 1) / (2 * k)], [0, 1 / k, -(k - 1) / (2 * k)]],
                            dtype=m.dtype, device=m.device).expand_as(m)
    return compose_affine(compose_affine(to_small, m), invert_affine(to_small)), conf
