"""Weight-free HDR merge of aligned alternating-exposure frames, with ghost rejection.

The baseline every learned method must beat. Each frame is a noisy, clipped measurement of the same
radiance ``H``: a frame of exposure ``t = 2**EV`` records ``x = t * H`` (linear, clipped at 1).
The merge is the weighted mean of those measurements in linear radiance, with

- hat weights on the LDR value (zero where a frame is clipped or near black),
- times the exposure ``t``: longer exposures carry more signal per noise, so they win in the dark
  while the hat hands highlights to shorter ones,
- ghost rejection: a neighbour is dropped where it contradicts the reference. Inside the
  reference's well-exposed range the two must agree within noise (a log-ratio test); where the
  reference is clipped the scene is at least as bright as its clipping level, and where it is
  nearly black at most as bright as its black level, so a neighbour outside those bounds is a ghost.

Convention: tensors ``(B, 3, H, W)`` of linear radiance on the ``H = f^-1(L) / 2**EV`` scale;
``ev`` in stops.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .bands import BAND_PIXELS
from .color import rgb_to_luminance

__all__ = ["MergeConfig", "hat_weight", "merge_exposures", "merge_weights", "blend_exposures", "Merge"]


@dataclass(frozen=True)
class MergeConfig:
    """Knobs of :func:`merge_exposures`.

    Attributes:
        low, high: LDR levels (gamma domain) below/above which a frame's pixel is not trusted.
        ghost_tolerance: allowed |log2| disagreement (stops) with the reference in its well-exposed
            range; acceptance falls linearly from 1 at the tolerance to 0 at twice it.
        noise_stops: extra tolerance (stops) for dark pixels, where noise dominates the ratio.
        bound_margin: slack (stops) on the clipped/black bounds of the reference.
        smooth: box size averaging the log-ratio before the test, so noise alone does not reject a
            neighbour (1: off).
        dilate: size of the min-filter spreading a rejection to neighbouring pixels, so thin
            edges of a moving object are rejected with it (1: off).
        gamma: gamma used to judge exposure levels from linear values.
    """

    low: float = 0.05
    high: float = 0.92
    ghost_tolerance: float = 0.25
    noise_stops: float = 0.6
    bound_margin: float = 0.25
    smooth: int = 3
    dilate: int = 3
    gamma: float = 2.2


def hat_weight(ldr: Tensor, low: float = 0.05, high: float = 0.92) -> Tensor:
    """Trapezoid weight on LDR values: 0 at/below ``low/2`` and at/above ``high``, 1 in between.

    Ramps over ``[low/2, low]`` and ``[high - 0.1, high]``.
    """
    rise = ((ldr - 0.5 * low) / (0.5 * low)).clamp(0, 1)
    fall = ((high - ldr) / 0.1).clamp(0, 1)
    return rise * fall


def _box_mean(x: Tensor, k: int) -> Tensor:
    """Mean over the in-bounds part of a ``k x k`` window (``k`` odd), separable.

    Equals ``F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)`` up to rounding, with
    ``2 (k - 1)`` shifted adds instead of ``k**2`` taps per pixel; the first add of each direction
    writes a new buffer (no copy of the input first). The taps are summed in the order
    ``x_j + x_{j+1} + x_{j-1} + x_{j+2} + ...``, which :func:`vs_hdrvid.ops.merge_window` relies on.

    Shape:
        ``(B, C, H, W)`` -> same.
    """
    r = k // 2
    h, w = x.shape[-2:]
    if r == 0:
        return x.clone()
    if h < k or w < k:  # windows clipped on both sides
        return F.avg_pool2d(x, k, 1, r, count_include_pad=False)
    out = x
    for dim, n in ((-1, w), (-2, h)):  # horizontal sums of the in-bounds taps, then vertical
        src, out = out, torch.empty_like(x)
        torch.add(src.narrow(dim, 0, n - 1), src.narrow(dim, 1, n - 1), out=out.narrow(dim, 0, n - 1))
        out.narrow(dim, n - 1, 1).copy_(src.narrow(dim, n - 1, 1))
        out.narrow(dim, 1, n - 1).add_(src.narrow(dim, 0, n - 1))
        for s in range(2, r + 1):
            out.narrow(dim, 0, n - s).add_(src.narrow(dim, s, n - s))
            out.narrow(dim, s, n - s).add_(src.narrow(dim, 0, n - s))
    out /= k * k
    for s in range(r):  # the border rows and columns saw fewer taps
        fix = k / (k - r + s)
        out[..., s, :] *= fix
        out[..., h - 1 - s, :] *= fix
        out[..., :, s] *= fix
        out[..., :, w - 1 - s] *= fix
    return out


def _min_filter_(x: Tensor, k: int) -> Tensor:
    """Minimum over the in-bounds part of a ``k x k`` window (``k`` odd), in place and separable.

    Equals ``-F.max_pool2d(-x, k, 1, k // 2)`` exactly (a minimum does not round). For ``k = 3``
    each direction is two passes: the minimum of neighbouring pairs, then of neighbouring pairs
    of those.
    """
    r = k // 2
    h, w = x.shape[-2:]
    if h <= r or w <= r:
        return x.copy_(-F.max_pool2d(-x, k, 1, r))
    for dim, n in ((-1, w), (-2, h)):
        if r == 1:
            pair = torch.minimum(x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1))  # min(x_j, x_j+1)
            if n > 2:
                torch.minimum(pair.narrow(dim, 0, n - 2), pair.narrow(dim, 1, n - 2), out=x.narrow(dim, 1, n - 2))
            x.narrow(dim, 0, 1).copy_(pair.narrow(dim, 0, 1))
            x.narrow(dim, n - 1, 1).copy_(pair.narrow(dim, n - 2, 1))
            continue
        src = x.clone()
        for s in range(1, r + 1):
            lo, hi = src.narrow(dim, 0, n - s), src.narrow(dim, s, n - s)
            torch.minimum(x.narrow(dim, 0, n - s), hi, out=x.narrow(dim, 0, n - s))
            torch.minimum(x.narrow(dim, s, n - s), lo, out=x.narrow(dim, s, n - s))
    return x


def merge_exposures(frames: Tensor, ev: Tensor, valid: Tensor | None = None, ref: int = 0,
                    config: MergeConfig = MergeConfig(), out: Tensor | None = None) -> Tensor:
    """Merge aligned frames of different exposures into the reference frame's HDR.

    Args:
        frames: ``(B, T, 3, H, W)`` linear radiance, neighbours already aligned to the reference.
        ev: ``(T,)`` or ``(B, T)`` exposure of each frame in stops.
        valid: optional ``(B, T, 1, H, W)`` in [0, 1]: where each aligned neighbour is usable
            (inside the frame after warping, flow confidence). The reference is always valid.
        ref: index of the reference frame along ``T``.
        config: thresholds, see :class:`MergeConfig`.
        out: optional ``(B, 3, H, W)`` tensor to write the result into.

    Returns:
        ``(B, 3, H, W)`` merged linear radiance of the reference frame (``out`` when given).

    Shape:
        frames (B, T, 3, H, W), ev (T,) | (B, T) -> (B, 3, H, W)

    Note:
        Written as in-place passes over one-channel planes, run band by band (about 256 K pixels
        per band, plus the rows the box and min filters reach) so a band's temporaries stay in
        cache instead of each pass streaming a 1080p plane through memory. Levels judged in the
        gamma domain are compared in the linear domain instead (``clamp(v)**(1/g) < high`` iff
        ``clamp(v) < high**g``), and the LDR luminance is ``exp2(min(log2 y + ev, 0) / g)``,
        which shares ``log2 y`` with the ghost test.
    """
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
    h, w = frames.shape[-2:]
    rows = max(8, BAND_PIXELS // max(w, 1))  # plus the halo rows the filters reach
    if h <= rows + 8 or torch.compiler.is_compiling() or frames.device.type != "cpu":
        merged = _merge_block(frames, ev, valid, ref, config)
        return merged if out is None else out.copy_(merged)
    halo = max(config.smooth, 1) // 2 + max(config.dilate, 1) // 2  # rows the filters reach
    if out is None:
        out = torch.empty(frames.shape[0], 3, h, w, dtype=frames.dtype, device=frames.device)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        a, b = max(0, r0 - halo), min(h, r1 + halo)
        part = _merge_block(frames[..., a:b, :], ev, None if valid is None else valid[..., a:b, :], ref, config)
        out[..., r0:r1, :] = part[..., r0 - a:r1 - a, :]
    return out


def _weights(frames: Tensor, ev: Tensor, valid: Tensor | None, ref: int, config: MergeConfig
             ) -> tuple[Tensor, Tensor, Tensor, float]:
    """The merge's weights ``w (b, t, 1, h, w)`` (fallback included), their sum, the least clipping
    level ``(b, 1, h, w)`` over the frames and the linear clipping level it is compared with."""
    b, t = frames.shape[:2]
    dtype = frames.dtype
    ev = torch.as_tensor(ev, dtype=dtype, device=frames.device).expand(b, t)
    expo = torch.exp2(ev)[..., None, None, None]                       # (b, t, 1, 1, 1)
    ev5 = ev[..., None, None, None]
    c = config
    y = rgb_to_luminance(frames, fused=True).clamp_(min=0)             # (b, t, 1, h, w) radiance
    ly = y.clamp(min=1e-8).log2_()                                      # log2 radiance
    # LDR luminance (gamma domain); below 1e-8 radiance it is not 0 but stays far under `low / 2`,
    # so the hat weight and the reference's dark test and well-exposed weight are unchanged
    ldr_y = torch.add(ly, ev5).clamp_(max=0).mul_(1 / c.gamma).exp2_()
    # brightest channel below `high` in the gamma domain <=> below high**gamma in the linear one;
    # masks are kept as 0/1 floats: comparisons into float and multiplications by them are
    # vectorised, masked_fill and bool arithmetic are not
    lin_max = frames.amax(2, keepdim=True).mul_(expo)
    high_lin = c.high ** c.gamma
    unclipped = torch.lt(lin_max, high_lin, out=torch.empty_like(lin_max))
    l_ref = ldr_y[:, ref].clone()
    # hat_weight(ldr_y, low, 1.0) in place
    a = 0.5 * c.low
    w = torch.sub(ldr_y, a).div_(a).clamp_(0, 1)
    w.mul_(ldr_y.neg_().add_(1.0).div_(0.1).clamp_(0, 1))
    del ldr_y
    w.mul_(unclipped).mul_(expo)
    if valid is not None:
        w.mul_(valid)

    # ghost rejection against the reference; what depends on the reference alone is computed once
    ly_ref = ly[:, ref]
    h_sat_ref = 1.0 / expo[:, ref]                                      # (b, 1, 1, 1) clipping radiance
    tol = (l_ref / 0.25).clamp_(0, 1).neg_().add_(1).mul_(c.noise_stops).add_(c.ghost_tolerance)
    well = hat_weight(l_ref, c.low, c.high)
    # reference clipped: the scene is at least this bright; nearly black: at most this bright
    clipped = unclipped[:, ref].neg().add_(1)
    lower = h_sat_ref * c.high ** c.gamma * 2.0 ** -c.bound_margin
    dark = torch.le(l_ref, c.low, out=l_ref)
    upper = h_sat_ref * (c.low ** c.gamma) * 2.0 ** (1 + c.bound_margin)
    bound = torch.empty_like(dark)
    for i in range(t):
        if i == ref:
            continue
        y_i = y[:, i]
        d = torch.sub(ly[:, i], ly_ref)
        if c.smooth > 1:
            d = _box_mean(d, c.smooth) if c.smooth % 2 else F.avg_pool2d(
                d, c.smooth, 1, c.smooth // 2, count_include_pad=False)
        ok = d.abs_().div_(tol).neg_().add_(2).clamp_(0, 1)             # agreement
        ok.neg_().add_(1).mul_(well).neg_().add_(1)                     # 1 - well * (1 - agree)
        # a ghost outside the reference's clipped / black bounds
        ok.mul_(torch.lt(y_i, lower, out=bound).mul_(clipped).neg_().add_(1))
        ok.mul_(torch.gt(y_i, upper, out=bound).mul_(dark).neg_().add_(1))
        if c.dilate > 1:
            ok = _min_filter_(ok, c.dilate) if c.dilate % 2 else -F.max_pool2d(
                -ok, c.dilate, 1, c.dilate // 2)
        w[:, i].mul_(ok)

    # a pixel no frame can vouch for (all rejected or clipped) falls back to the reference
    total = w[:, 0].clone()
    for i in range(1, t):
        total.add_(w[:, i])
    w[:, ref].add_(torch.le(total, 0, out=bound).mul_(expo[:, ref]))
    total.add_(bound)  # the fallback weight joins the (zero) total
    least = lin_max[:, 0].clone()
    for i in range(1, t):
        torch.minimum(least, lin_max[:, i], out=least)
    return w, total, least, high_lin


def _merge_block(frames: Tensor, ev: Tensor, valid: Tensor | None, ref: int, config: MergeConfig) -> Tensor:
    """:func:`merge_exposures` on a whole frame or a band of rows (exact away from the band's cut edges)."""
    b, t = frames.shape[:2]
    w, total, least, high_lin = _weights(frames, ev, valid, ref, config)
    ev = torch.as_tensor(ev, dtype=frames.dtype, device=frames.device).expand(b, t)
    if torch.compiler.is_compiling():
        return blend_exposures(frames, w, ev, (least >= high_lin).to(frames.dtype))
    merged = frames[:, 0] * w[:, 0]
    for i in range(1, t):
        merged.addcmul_(frames[:, i], w[:, i])
    merged.div_(total)
    if float(least.max()) >= high_lin:  # merged += all_clipped * max(h_short - merged, 0), in place
        bound = torch.empty_like(least)
        for j, i in enumerate(torch.argmin(ev, dim=1).tolist()):
            lift = torch.sub(frames[j, i], merged[j]).clamp_(min=0)
            merged[j].add_(lift.mul_(torch.ge(least[j], high_lin, out=bound[j])))
    return merged


def merge_weights(frames: Tensor, ev: Tensor, valid: Tensor | None = None, ref: int = 0,
                  config: MergeConfig = MergeConfig()) -> tuple[Tensor, Tensor]:
    """The weights :func:`merge_exposures` gives each frame, and where every frame is clipped.

    For the networks that learn a correction of the merge (CoarseNet's ``blend="merge"``):
    ``blend_exposures(frames, weights, ev, all_clipped)`` is the merge itself, bit for bit.

    Returns:
        ``weights (B, T, 1, H, W)`` (non-negative, at least one positive per pixel: where every
        frame was rejected the reference takes over) and ``all_clipped (B, 1, H, W)`` (0/1).
    """
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
    w, _, least, high_lin = _weights(frames, ev, valid, ref, config)
    return w, (least >= high_lin).to(frames.dtype)


def blend_exposures(frames: Tensor, weights: Tensor, ev: Tensor, all_clipped: Tensor) -> Tensor:
    """Normalised weighted mean of the frames; where every frame is clipped, at least the shortest
    exposure's value (the merge's last step). Differentiable, out of place.

    Shape:
        ``frames (B, T, 3, H, W)``, ``weights (B, T, 1 | 3, H, W)``, ``ev (B, T)``,
        ``all_clipped (B, 1, H, W)`` -> ``(B, 3, H, W)``.
    """
    b, t = frames.shape[:2]
    merged = frames[:, 0] * weights[:, 0]
    total = weights[:, 0]
    for i in range(1, t):
        merged = torch.addcmul(merged, frames[:, i], weights[:, i])
        total = total + weights[:, i]
    merged = merged / total
    shortest = torch.argmin(torch.as_tensor(ev, device=frames.device).expand(b, t), dim=1)
    h_short = frames[torch.arange(b, device=frames.device), shortest]
    return merged + (h_short - merged).clamp(min=0) * all_clipped


class Merge(torch.nn.Module):
    """Module wrapper of :func:`merge_exposures` holding its :class:`MergeConfig`."""

    def __init__(self, config: MergeConfig = MergeConfig()):
        super().__init__()
        self.config = config

    def forward(self, frames: Tensor, ev: Tensor, valid: Tensor | None = None, ref: int = 0) -> Tensor:
        return merge_exposures(frames, ev, valid, ref, self.config)
