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

__all__ = ["MergeConfig", "hat_weight", "merge_exposures", "Merge"]


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


def _luma(x: Tensor) -> Tensor:
    return 0.2126 * x[:, 0:1] + 0.7152 * x[:, 1:2] + 0.0722 * x[:, 2:3]


def merge_exposures(frames: Tensor, ev: Tensor, valid: Tensor | None = None, ref: int = 0,
                    config: MergeConfig = MergeConfig()) -> Tensor:
    """Merge aligned frames of different exposures into the reference frame's HDR.

    Args:
        frames: ``(B, T, 3, H, W)`` linear radiance, neighbours already aligned to the reference.
        ev: ``(T,)`` or ``(B, T)`` exposure of each frame in stops.
        valid: optional ``(B, T, 1, H, W)`` in [0, 1]: where each aligned neighbour is usable
            (inside the frame after warping, flow confidence). The reference is always valid.
        ref: index of the reference frame along ``T``.
        config: thresholds, see :class:`MergeConfig`.

    Returns:
        ``(B, 3, H, W)`` merged linear radiance of the reference frame.

    Shape:
        frames (B, T, 3, H, W), ev (T,) | (B, T) -> (B, 3, H, W)
    """
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
    b, t = frames.shape[:2]
    ev = torch.as_tensor(ev, dtype=frames.dtype, device=frames.device).expand(b, t)
    expo = torch.exp2(ev)[..., None, None, None]                       # (b, t, 1, 1, 1)
    c = config
    y = _luma(frames.flatten(0, 1)).unflatten(0, (b, t)).clamp(min=0)    # (b, t, 1, h, w) radiance
    ldr_y = (y * expo).clamp(0, 1).pow(1 / c.gamma)                     # LDR luminance
    ldr_max = (frames.amax(2, keepdim=True) * expo).clamp(0, 1).pow(1 / c.gamma)  # brightest channel
    w = hat_weight(ldr_y, c.low, 1.0) * (ldr_max < c.high).to(frames.dtype) * expo
    if valid is not None:
        w = w * valid

    # ghost rejection against the reference; what depends on the reference alone is computed once
    y_ref = y[:, ref].clamp(min=1e-8)
    l_ref = ldr_y[:, ref]
    h_sat_ref = 1.0 / expo[:, ref]                                      # (b, 1, 1, 1) clipping radiance
    tol = c.ghost_tolerance + c.noise_stops * (1 - (l_ref / 0.25).clamp(0, 1))  # looser where noisy
    well = hat_weight(l_ref, c.low, c.high)
    # reference clipped: the scene is at least this bright; nearly black: at most this bright
    clipped = ldr_max[:, ref] >= c.high
    lower = h_sat_ref * c.high ** c.gamma * 2.0 ** -c.bound_margin
    dark = l_ref <= c.low
    upper = h_sat_ref * (c.low ** c.gamma) * 2.0 ** (1 + c.bound_margin)
    for i in range(t):
        if i == ref:
            continue
        y_i = y[:, i]
        d = torch.log2(y_i.clamp(min=1e-8) / y_ref)
        if c.smooth > 1:
            d = F.avg_pool2d(d, c.smooth, 1, c.smooth // 2, count_include_pad=False)
        agree = (2 - d.abs() / tol).clamp(0, 1)
        ok = 1 - well * (1 - agree)
        ok = ok.masked_fill((clipped & (y_i < lower)) | (dark & (y_i > upper)), 0)
        if c.dilate > 1:
            ok = -F.max_pool2d(-ok, c.dilate, 1, c.dilate // 2)
        w[:, i] = w[:, i] * ok

    # a pixel no frame can vouch for (all rejected or clipped) falls back to the reference
    nobody = (w.sum(1) <= 0).to(frames.dtype)
    w[:, ref] = w[:, ref] + nobody * expo[:, ref]
    total = w.sum(1)
    merged = (w * frames).sum(1) / total
    # where every frame is clipped, the shortest exposure's clipped value is the best bound
    shortest = torch.argmin(ev, dim=1)
    h_short = frames[torch.arange(b, device=frames.device), shortest]
    all_clipped = (ldr_max >= c.high).all(1)
    return torch.where(all_clipped, torch.maximum(h_short, merged), merged)


class Merge(torch.nn.Module):
    """Module wrapper of :func:`merge_exposures` holding its :class:`MergeConfig`."""

    def __init__(self, config: MergeConfig = MergeConfig()):
        super().__init__()
        self.config = config

    def forward(self, frames: Tensor, ev: Tensor, valid: Tensor | None = None, ref: int = 0) -> Tensor:
        return merge_exposures(frames, ev, valid, ref, self.config)
