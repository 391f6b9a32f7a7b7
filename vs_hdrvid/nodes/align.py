"""``align``: global similarity transforms between consecutive frames, stored as frame props."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
import vapoursynth as vs

from ..bridge import NodeRunner, shift_clip
from ..ops.bands import BAND_PIXELS
from ..ops.similarity import estimate_similarity
from ..ops.warp import compose_affine, invert_affine, warp_similarity
from ._common import (EV_PROP, SIM_CONF_PROP, SIM_PROP, check_linear, error, exposure_pattern,
                      pick_device)

__all__ = ["align", "alignment_input", "similarity_between"]

NODE = "align"
IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


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


def pooled_luminance(h: torch.Tensor, factor: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Luminance box-downscaled by ``factor``, and its max and min over each box.

    What :func:`alignment_input` needs from the full-resolution frame; it does not depend on the
    exposure, so a node computes it once per frame for both pairs the frame is in. On CPU the
    full-resolution luminance is made band by band (a whole multiple of ``factor`` rows), never as
    a frame-sized temporary.

    Shape:
        ``(B, 3, H, W)`` -> ``(B, 1, H / factor, W / factor)`` three times.
    """
    def luma(x: torch.Tensor) -> torch.Tensor:
        y = x[:, 0:1] * 0.2126
        return y.add_(x[:, 1:2], alpha=0.7152).add_(x[:, 2:3], alpha=0.0722)

    if factor == 1:
        y = luma(h)
        return y, y, y
    b, _, rows, cols = h.shape
    hk = rows // factor
    out = [torch.empty(b, 1, hk, cols // factor, dtype=h.dtype, device=h.device) for _ in range(3)]
    step = max(1, BAND_PIXELS // max(cols * factor, 1)) if h.device.type == "cpu" else hk  # coarse rows per band
    for k0 in range(0, hk, step):
        k1 = min(hk, k0 + step)
        y = luma(h[..., k0 * factor:k1 * factor, :])
        y_max, y_min = _block_extremes(y, factor)
        for dst, src in zip(out, (F.avg_pool2d(y, factor), y_max, y_min)):
            dst[..., k0:k1, :] = src
    return out[0], out[1], out[2]


def alignment_input(h: torch.Tensor, ev: float, clip_level: float, factor: int = 1, lo: float = 0.04,
                    hi: float = 0.92, gamma: float = 2.2,
                    pooled: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exposure-normalised, clipped luminance (scaled to [0, 1]) and its well-exposed mask.

    Both frames of a pair are clipped at the same radiance ``clip_level`` (the lower of their
    saturation levels), so a highlight looks the same in both; pixels under- or over-exposed in
    their own frame are masked out. With ``factor > 1`` the luminance is box-downscaled by it, and
    a coarse pixel is usable only if every fine pixel under it is. ``pooled`` is
    :func:`pooled_luminance` of ``h`` when already computed.

    Shape:
        ``(B, 3, H, W)`` -> ``(B, 1, H / factor, W / factor)`` twice.
    """
    y, y_max, y_min = pooled if pooled is not None else pooled_luminance(h, factor)
    scale = 2.0 ** ev
    lo_lin, hi_lin = lo ** gamma / scale, hi ** gamma / scale  # the LDR range in radiance
    mask = ((y_min > lo_lin) & (y_max < min(hi_lin, clip_level))).to(y.dtype)
    return (y / clip_level).clamp(0, 1), mask


def _factor(shape: Sequence[int], max_side: int) -> int:
    return -(-max(shape[-2:]) // max_side)


def similarity_between(prev: torch.Tensor, cur: torch.Tensor, ev_prev: float, ev_cur: float,
                       max_side: int = 480) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity mapping ``prev`` onto ``cur`` (both linear radiance), and its confidence.

    Frames larger than ``max_side`` are box-downscaled by an integer factor for the estimate and the
    transform is scaled back: the estimate is accurate to ~0.01 px at the reduced size, so a few
    hundredths of a pixel at full size.

    Shape:
        ``(B, 3, H, W)`` x 2 -> ``(B, 2, 3)``, ``(B,)``.
    """
    k = _factor(cur.shape, max_side)
    return _similarity_pooled(pooled_luminance(prev.float(), k), pooled_luminance(cur.float(), k),
                              ev_prev, ev_cur, k)


def _similarity_pooled(prev: tuple, cur: tuple, ev_prev: float, ev_cur: float, k: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`similarity_between` from both frames' :func:`pooled_luminance` at factor ``k``."""
    level = min(2.0 ** -ev_prev, 2.0 ** -ev_cur) * 0.92 ** 2.2
    a, ma = alignment_input(None, ev_cur, level, k, pooled=cur)
    b, mb = alignment_input(None, ev_prev, level, k, pooled=prev)
    m, conf = estimate_similarity(a, b, ref_mask=ma, mov_mask=mb)
    if k == 1:
        return m, conf
    # box pooling by k maps full-res x to (x - (k - 1) / 2) / k at the coarse level
    to_small = torch.tensor([[1 / k, 0, -(k - 1) / (2 * k)], [0, 1 / k, -(k - 1) / (2 * k)]],
                            dtype=m.dtype, device=m.device).expand_as(m)
    return compose_affine(compose_affine(to_small, m), invert_affine(to_small)), conf


def align(clip: vs.VideoNode, warp: bool = False, device: str = "auto", fp32: bool = False,
          num_streams: int | None = None) -> vs.VideoNode:
    """Estimate the similarity transform (rotation, scale, translation) between consecutive frames.

    Estimated on exposure-normalised, clipped luminance with under/over-exposed pixels masked out
    (Chen et al. 2021, section 3.1, global alignment). Consumers compose the per-frame transforms
    for any neighbour offset.

    Args:
        clip: output of :func:`vs_hdrvid.linearize`.
        warp: return each frame registered onto its previous frame (warped by the inverse of its
            ``HdrSimilarityPrev``) for checking the alignment in a preview; frame pixels are
            otherwise passed through untouched.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        fp32: compute in float32 on CUDA too.
        num_streams: frames processed concurrently (one CUDA stream and lock each; on CPU, worker
            slots sharing torch's threads). None: 1 on CUDA, VapourSynth's thread count on CPU.

    Returns:
        the clip with ``HdrSimilarityPrev`` (6 floats, the row-major 2x3 matrix mapping frame n-1
        onto frame n in pixel coordinates, identity for frame 0) and ``HdrSimilarityConfidence``
        (0..1; 0 for frame 0) on every frame.
    """
    clip = check_linear(clip, NODE, min_frames=1)
    if not isinstance(warp, bool):
        raise error(NODE, f"warp must be True or False, got {warp!r}")
    dev, dtype = pick_device(device, fp32, NODE)
    period = len(exposure_pattern(clip))
    runner = NodeRunner(NODE, dev, dtype, cache_frames=4, num_streams=num_streams)
    if clip.num_frames < period:
        raise error(NODE, f"needs at least {period} frames (one exposure pattern), the clip has {clip.num_frames}")
    prev_clip = shift_clip(clip, -1, period) if clip.num_frames > 1 else clip
    factor = _factor((clip.height, clip.width), 480)
    pooled: OrderedDict[int, tuple] = OrderedDict()  # frame -> pooled_luminance, for its next pair
    lock = threading.Lock()

    def luminance(n: int, frame: vs.VideoFrame) -> tuple:
        with lock:
            hit = pooled.get(n)
        if hit is None:
            hit = pooled_luminance(runner.fetch(frame, key=(0, n))[None].float(), factor)
            with lock:
                pooled[n] = hit
                while len(pooled) > 4:
                    pooled.popitem(last=False)
        return hit

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        props = dict(f[0].props)
        if n == 0:
            props.update({SIM_PROP: IDENTITY, SIM_CONF_PROP: 0.0})
            return runner.emit(runner.fetch(f[0], key=(0, n)), f[0].format, props) if warp \
                else _passthrough(f[0], props)
        m, conf = _similarity_pooled(luminance(n - 1, f[1]), luminance(n, f[0]), float(f[1].props[EV_PROP]),
                                     float(f[0].props[EV_PROP]), factor)
        props.update({SIM_PROP: [float(v) for v in m[0].flatten().tolist()],
                      SIM_CONF_PROP: float(conf[0])})
        if not warp:
            return _passthrough(f[0], props)
        cur = runner.fetch(f[0], key=(0, n))
        registered = warp_similarity(cur[None].float(), invert_affine(m))[0].to(cur.dtype)
        return runner.emit(registered, f[0].format, props)

    return runner.map_frames(clip, [clip, prev_clip], process)


def _passthrough(frame: vs.VideoFrame, props: dict) -> vs.VideoFrame:
    """The same pixels with new props (a copy-on-write copy, no pixel copy)."""
    out = frame.copy()
    out.props.update(props)
    return out
