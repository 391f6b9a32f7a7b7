"""The weight-free merge of one window, band by band, with each neighbour warped on the way.

:func:`merge_window` gives :func:`~vs_hdrvid.ops.merge.merge_exposures` of the aligned window bit
for bit, but the aligned window never exists as a frame-sized stack: each band of rows (about 256 K
pixels plus the rows the box and min filters reach) samples its rows of every warped neighbour
(:class:`~vs_hdrvid.ops.warp.SimilarityBands`), reads the reference and unmoved frames in place,
and writes its merged rows straight into the output. The passes of the weights are the same
floating-point operations in the same order as :func:`~vs_hdrvid.ops.merge.merge_exposures`
(so the same roundings), with fewer of them: no clones (``1 - x`` written where ``x`` is used),
the brightest channel by two ``maximum`` instead of a reduction, the reference's clipped and dark
bounds folded into one lower and one upper bound per pixel (two comparisons per neighbour instead
of ten passes), the validity mask of a warp applied only to the columns it can be 0 in, and the
ramps of the hat weights shared between a frame's weight and the reference's well-exposed test.

Convention: frames ``(B, 3, H, W)`` of linear radiance on the ``H = f^-1(L) / 2**EV`` scale; ``ev``
in stops, one per frame.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager, Sequence

import torch
from torch import Tensor

from .bands import BAND_PIXELS
from .color import LUMA_COEFFS
from .merge import MergeConfig, _box_mean, _min_filter_, merge_exposures
from .warp import SimilarityBands, warp_similarity

__all__ = ["merge_window", "WINDOW_BAND_PIXELS"]

# about 256 K pixels per band measured fastest on real 1080p windows on a 2-core AMD EPYC (against
# 64 K and 512 K): smaller bands pay more in per-call overhead than they gain in cache
WINDOW_BAND_PIXELS = BAND_PIXELS


def merge_window(frames: Sequence[Tensor], ev: Sequence[float] | Tensor, ref: int,
                 warps: Sequence[Tensor | None] | None = None, valid: Sequence[Tensor | None] | None = None,
                 config: MergeConfig = MergeConfig(), out: Tensor | None = None,
                 band_pixels: int = WINDOW_BAND_PIXELS,
                 timed: Callable[[str], ContextManager] | None = None, work: dict | None = None) -> Tensor:
    """Merge a window of frames into the reference frame's HDR, warping neighbours band by band.

    Equals ``merge_exposures(stack(aligned), ev, stack(usable), ref, config)`` bit for bit, where
    ``aligned[i]`` is ``warp_similarity(frames[i], warps[i])`` (or ``frames[i]`` when
    ``warps[i]`` is None) and ``usable[i]`` is the warp's validity mask times ``valid[i]`` (1 where
    either is None).

    Args:
        frames: T tensors ``(B, 3, H, W)``, as recorded (read, never written).
        ev: the T exposures in stops.
        ref: index of the reference frame.
        warps: per frame None (already aligned) or the ``(B, 2, 3)`` similarity mapping it onto the
            reference, as :func:`~vs_hdrvid.ops.warp.warp_similarity` takes it. None: no warps.
        valid: per frame None or ``(B, 1, H, W)`` in [0, 1] (a flow's confidence); None: none.
        config: thresholds, see :class:`~vs_hdrvid.ops.merge.MergeConfig`.
        out: optional ``(B, 3, H, W)`` tensor to write the result into.
        band_pixels: about how many pixels a band has (plus the filters' reach); the result
            does not depend on it.
        timed: for benchmarks, a context per part of the work: ``timed("warps")`` around the
            warps, ``timed("weights")`` around the weights and the blend.
        work: a dict the caller keeps from call to call (one per thread) to hold the band planes,
            so that they are not allocated (and page-faulted) afresh for every frame.

    Returns:
        ``(B, 3, H, W)`` merged linear radiance (``out`` when given).

    Raises:
        ValueError: frames of different shapes or not ``(B, 3, H, W)``, a warp on the reference,
            or ``ev``, ``warps`` or ``valid`` not one per frame.
    """
    t = len(frames)
    if t < 1 or any(f.ndim != 4 or f.shape[1] != 3 or f.shape != frames[0].shape for f in frames):
        raise ValueError(f"frames must be (B, 3, H, W) tensors of one shape, got {[tuple(f.shape) for f in frames]}")
    warps = list(warps) if warps is not None else [None] * t
    valid = list(valid) if valid is not None else [None] * t
    evs = torch.as_tensor(ev, dtype=frames[0].dtype).flatten()
    if len(evs) != t or len(warps) != t or len(valid) != t:
        raise ValueError(f"ev, warps and valid need one entry per frame ({t}), got {len(evs)}, {len(warps)}, {len(valid)}")
    if not 0 <= ref < t or warps[ref] is not None:
        raise ValueError(f"ref must index a frame that is not warped, got ref={ref}")
    b, _, h, w = frames[0].shape
    c = config
    reach = c.smooth // 2 + c.dilate // 2  # rows the box and min filters reach
    if (c.smooth > 1 and c.smooth % 2 == 0) or (c.dilate > 1 and c.dilate % 2 == 0) or min(h, w) < 8:
        return _stacked(frames, evs, ref, warps, valid, c, out)  # the rare shapes: the plain merge
    rows = max(8, band_pixels // w)
    if h <= rows + reach or frames[0].device.type != "cpu":
        rows = h  # one band: the whole frame (CUDA runs each pass as one kernel either way)
    if out is None:
        out = torch.empty(b, 3, h, w, dtype=frames[0].dtype, device=frames[0].device)
    timed = timed or (lambda part: nullcontext())
    warpers = [SimilarityBands(f, m) if m is not None else None for f, m in zip(frames, warps)]
    consts = _Constants(evs, ref, c)
    buffers: dict[tuple, _Buffers] = work if work is not None else {}
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        a, e = max(0, r0 - reach), min(h, r1 + reach)
        band = slice(a, e)
        xs, masks = [], []
        with timed("warps"):
            for f, wp, v in zip(frames, warpers, valid):
                if wp is None:
                    xs.append(f[..., band, :])
                    masks.append([] if v is None else [(slice(None), v[..., band, :])])
                    continue
                xs.append(wp.image(band).to(f.dtype))
                c0, c1 = wp.inside(band)  # the mask is 1 in columns c0:c1 of every row of the band
                m = [(s, wp.mask(band, s)) for s in ((slice(0, w),) if c0 >= c1 else (slice(0, c0), slice(c1, w)))
                     if s.stop > s.start]
                masks.append(m + ([] if v is None else [(slice(None), v[..., band, :])]))
        key = (e - a, w, b, frames[0].dtype, str(frames[0].device))
        buf = buffers.get(key)
        if buf is None:
            buf = buffers[key] = _Buffers(xs[ref][:, :1])
        with timed("weights"):
            _merge_band(xs, masks, consts, slice(r0 - a, r1 - a), out[..., r0:r1, :], buf, a == 0, e == h)
    return out


def _stacked(frames, evs, ref, warps, valid, config, out):
    """The window aligned into one stack and merged by :func:`merge_exposures` (what merge_window equals)."""
    aligned, usable = [], []
    for f, m, v in zip(frames, warps, valid):
        mask = torch.ones_like(f[:, :1])
        if m is not None:
            f, mask = warp_similarity(f, m, return_mask=True)
        aligned.append(f)
        usable.append(mask if v is None else mask * v)
    any_valid = any(m is not None for m in warps) or any(v is not None for v in valid)
    return merge_exposures(torch.stack(aligned, 1), evs, torch.stack(usable, 1) if any_valid else None, ref,
                           config, out=out)


class _Constants:
    """The scalars of the merge, computed as :func:`merge_exposures` computes them (same roundings),
    as 0-dim tensors: an operation with a Python number wraps it in a new tensor on every call."""

    def __init__(self, evs: Tensor, ref: int, c: MergeConfig):
        expo = torch.exp2(evs)                                    # (T,) in the frames' dtype
        self.c, self.ref = c, ref
        self.high_lin = c.high ** c.gamma
        h_sat_ref = 1.0 / expo[ref]
        self.lower = float(h_sat_ref * c.high ** c.gamma * 2.0 ** -c.bound_margin)
        self.upper = float(h_sat_ref * (c.low ** c.gamma) * 2.0 ** (1 + c.bound_margin))
        self.shortest = int(torch.argmin(evs))
        # a neighbour's luminance clamped at 1e-8 instead of 0 compares the same with both bounds
        self.tiny_ok = self.lower > 1e-8 and self.upper >= 1e-8
        t = lambda v: torch.tensor(v, dtype=evs.dtype, device=evs.device)  # noqa: E731
        self.ev, self.expo = [t(float(v)) for v in evs], [t(float(v)) for v in expo]
        self.kr, self.kg, self.kb = (t(k) for k in LUMA_COEFFS["709"])
        self.a, self.inv_gamma, self.tenth, self.quarter = t(0.5 * c.low), t(1 / c.gamma), t(0.1), t(0.25)
        self.one, self.two, self.zero, self.high, self.low = t(1.0), t(2.0), t(0.0), t(c.high), t(c.low)
        self.high_t, self.noise, self.ghost = t(self.high_lin), t(c.noise_stops), t(c.ghost_tolerance)
        self.lower_t, self.neg_lower, self.upper_t = t(self.lower), t(-self.lower), t(self.upper)
        self.big = t(float(torch.finfo(evs.dtype).max))


class _Buffers:
    """Work planes of one band shape, reused from band to band (so they stay in cache)."""

    def __init__(self, like: Tensor):  # keeps its shape, dtype and device, not the tensor
        self.shape, self.dtype, self.device, self._bufs = tuple(like.shape), like.dtype, like.device, {}

    def __call__(self, name: str, channels: int = 1, dw: int = 0, dh: int = 0) -> Tensor:
        key = (name, channels, dw, dh)
        buf = self._bufs.get(key)
        if buf is None:
            b, _, r, w = self.shape
            buf = self._bufs[key] = torch.empty(b, channels, r - dh, w - dw, dtype=self.dtype, device=self.device)
        return buf


def _box3_(d: Tensor, row: Tensor, out: Tensor, top: bool, bottom: bool) -> Tensor:
    """``_box_mean(d, 3)`` into ``out`` (``row`` a buffer like it), the same sums in the same order.

    The rows at the top and bottom of a band are corrected for their clipped window only where
    they are the frame's (``top``, ``bottom``): elsewhere they are halo rows nothing reads.
    """
    torch.add(d[..., :-1], d[..., 1:], out=row[..., :-1])
    row[..., -1:].copy_(d[..., -1:])
    row[..., 1:].add_(d[..., :-1])
    torch.add(row[..., :-1, :], row[..., 1:, :], out=out[..., :-1, :])
    out[..., -1:, :].copy_(row[..., -1:, :])
    out[..., 1:, :].add_(row[..., :-1, :])
    out.div_(9)
    if top:
        out[..., 0, :] *= 1.5
    if bottom:
        out[..., -1, :] *= 1.5
    out[..., :, 0] *= 1.5
    out[..., :, -1] *= 1.5
    return out


def _min3_(x: Tensor, pair_w: Tensor, pair_h: Tensor) -> Tensor:
    """``_min_filter_(x, 3)`` with the pair minima in the given buffers ``(.., R, W-1)``, ``(.., R-1, W)``."""
    torch.minimum(x[..., :-1], x[..., 1:], out=pair_w)
    torch.minimum(pair_w[..., :-1], pair_w[..., 1:], out=x[..., 1:-1])
    x[..., :1].copy_(pair_w[..., :1])
    x[..., -1:].copy_(pair_w[..., -1:])
    torch.minimum(x[..., :-1, :], x[..., 1:, :], out=pair_h)
    torch.minimum(pair_h[..., :-1, :], pair_h[..., 1:, :], out=x[..., 1:-1, :])
    x[..., :1, :].copy_(pair_h[..., :1, :])
    x[..., -1:, :].copy_(pair_h[..., -1:, :])
    return x


def _merge_band(xs: list[Tensor], masks: list[list[tuple[slice, Tensor]]], k: _Constants, core: slice,
                out: Tensor, buf: _Buffers, top: bool, bottom: bool) -> None:
    """:func:`merge_exposures`'s passes on one band of rows; writes the ``core`` rows into ``out``.

    ``xs`` are the aligned band of each frame ``(B, 3, R, W)``; ``masks`` per frame the factors
    ``(columns, (B, 1, R, n))`` its weight is multiplied by (validity); ``top`` and ``bottom`` say
    whether the band starts or ends at the frame's edge. A pass whose factor is 1 everywhere in
    the band (no clipped pixel, no LDR value above the hat's upper ramp, no dark reference
    pixel) is skipped: multiplying by 1 changes nothing.
    """
    c, ref = k.c, k.ref
    ys, lys, ws, maxes = [], [], [], []
    clipped_any = []  # the brightest recorded channel of each frame in the band
    for i, x in enumerate(xs):
        r, g, b_ = x.split(1, dim=1)
        y = torch.mul(r, k.kr, out=buf("y", dh=0) if i == ref else buf(f"y{i}"))  # (b, 1, r, w) radiance
        y.add_(g, alpha=LUMA_COEFFS["709"][1]).add_(b_, alpha=LUMA_COEFFS["709"][2])
        ly = buf(f"ly{i}")
        if i == ref or k.tiny_ok:  # clamp(clamp(y, 0), 1e-8) in one pass
            torch.log2(y.clamp_(min=1e-8), out=ly)
        else:
            torch.log2(torch.clamp(y.clamp_(min=0), min=1e-8, out=ly), out=ly)
        ldr = torch.add(ly, k.ev[i], out=buf("ldr") if i != ref else buf("lref"))
        ldr.clamp_(max=0).mul_(k.inv_gamma).exp2_()                      # LDR luminance
        m = torch.maximum(r, g, out=buf(f"m{i}"))
        torch.maximum(m, b_, out=m).mul_(k.expo[i])                      # brightest channel, recorded
        # hat_weight(ldr, low, 1.0) times unclipped, times the exposure
        wt = buf(f"w{i}")
        rise = torch.sub(ldr, k.a, out=wt if i != ref else buf("rise")).div_(k.a).clamp_(0, 1)
        over = float(ldr.max()) > 0.9  # else (1 - ldr) / 0.1 >= 1 everywhere: the upper ramp is 1
        if i == ref:
            l_ref, rise_ref = ldr, rise
            if over:  # 1 - ldr (one subtraction, as ldr.neg_().add_(1) rounds it)
                fall = torch.sub(k.one, ldr, out=buf("fall")).div_(k.tenth).clamp_(0, 1)
                torch.mul(rise, fall, out=wt)
            else:
                wt.copy_(rise)
        elif over:
            wt.mul_(torch.sub(k.one, ldr, out=ldr).div_(k.tenth).clamp_(0, 1))
        brightest = float(m.max())
        clipped_any.append(brightest)
        if brightest >= float(k.high_t):  # some pixel is clipped: lt(m, high) is not 1 everywhere
            unclipped = torch.lt(m, k.high_t, out=buf("unc") if i != ref else buf("uref"))
            wt.mul_(unclipped)
            if i == ref:
                unclipped_ref = unclipped
        wt.mul_(k.expo[i])
        for cols, v in masks[i]:
            wt[..., cols].mul_(v)
        ys.append(y)
        lys.append(ly)
        ws.append(wt)
        maxes.append(m)

    # the reference's tests: tolerance, well-exposed weight, and the bounds its clipped / dark pixels set
    ly_ref = lys[ref]
    # ghost_tolerance + noise_stops * (1 - clamp(l / 0.25)); 1 - x as one subtraction (as -x + 1 rounds)
    tol = torch.div(l_ref, k.quarter, out=buf("tol")).clamp_(0, 1)
    tol = torch.sub(k.one, tol, out=tol).mul_(k.noise).add_(k.ghost)
    well = torch.sub(k.high, l_ref, out=buf("well")).div_(k.tenth).clamp_(0, 1).mul_(rise_ref)
    lo = hi = None
    if clipped_any[ref] >= float(k.high_t):  # a clipped reference: y >= lower there, else y >= 0 (true of the luminance)
        lo = torch.mul(unclipped_ref, k.neg_lower, out=buf("lo")).add_(k.lower_t)  # exactly 0 or lower
    if float(l_ref.min()) <= float(k.low):  # a dark reference: y <= upper there, else y <= the largest float
        hi = torch.gt(l_ref, k.low, out=buf("hi")).mul_(k.big).add_(k.upper_t)
    bound = buf("bound")
    for i in range(len(xs)):
        if i == ref:
            continue
        d = torch.sub(lys[i], ly_ref, out=buf("d"))
        if c.smooth == 3:
            d = _box3_(d, buf("row"), buf("box"), top, bottom)
        elif c.smooth > 1:
            d = _box_mean(d, c.smooth)
        ok = torch.sub(k.two, d.abs_().div_(tol), out=d).clamp_(0, 1)   # agreement
        ok = torch.sub(k.one, torch.sub(k.one, ok, out=ok).mul_(well), out=ok)  # 1 - well * (1 - agree)
        if lo is not None:                                              # a ghost outside the bounds
            ok.mul_(torch.ge(ys[i], lo, out=bound))
        if hi is not None:
            ok.mul_(torch.le(ys[i], hi, out=bound))
        if float(ok.min()) >= 1:  # the neighbour agrees everywhere: its weight stays
            continue
        if c.dilate == 3:
            ok = _min3_(ok, buf("pair_w", dw=1), buf("pair_h", dh=1))
        elif c.dilate > 1:
            ok = _min_filter_(ok, c.dilate)
        ws[i].mul_(ok)

    # the core rows: fallback to the reference where nobody vouches, the blend, the all-clipped lift
    wc = [wt[..., core, :] for wt in ws]
    n = core.stop - core.start
    total = torch.add(wc[0], wc[1], out=buf("total", dh=ws[0].shape[-2] - n)) if len(wc) > 1 else wc[0].clone()
    for i in range(2, len(wc)):
        total.add_(wc[i])
    fallback = torch.le(total, k.zero, out=buf("fallback", dh=ws[0].shape[-2] - n)).mul_(k.expo[ref])
    wc[ref].add_(fallback)
    total.add_(fallback)
    xc = [x[..., core, :] for x in xs]
    merged = torch.mul(xc[0], wc[0], out=out)
    for i in range(1, len(xc)):
        merged.addcmul_(xc[i], wc[i])
    merged.div_(total)
    if min(clipped_any) < k.high_lin:  # the least brightest channel cannot reach the clipping level
        return
    least = torch.minimum(maxes[0][..., core, :], maxes[1][..., core, :], out=fallback) if len(maxes) > 1 \
        else maxes[0][..., core, :].clone()
    for m in maxes[2:]:
        torch.minimum(least, m[..., core, :], out=least)
    if float(least.max()) >= k.high_lin:  # merged += all_clipped * max(h_short - merged, 0)
        lift = torch.sub(xc[k.shortest], merged).clamp_(min=0)
        merged.add_(lift.mul_(torch.ge(least, k.high_t, out=total)))
