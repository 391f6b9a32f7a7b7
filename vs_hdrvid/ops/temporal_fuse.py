"""Temporal fusion of consecutive HDR estimates: the classical base RefineNet corrects.

RefineNet (Chen et al. 2021, section 3.3) fuses the coarse HDRs of ``t-1, t, t+1``. Its classical
counterpart, the base of its residual when ``RefineNetConfig.temporal_base`` is set: each
neighbouring HDR is aligned on the reference by DIS flow between the two HDRs, mu-law encoded
(both are whole HDR frames, so no exposure normalisation is needed), and averaged with the
reference with the weight

    ``conf * sigma**2 / (sigma**2 + (flow_error * |grad m|)**2) * exp(-(d / (strength * sigma))**2)``

``sigma`` is the reference's noise level at that brightness, estimated from the frame itself
(:func:`noise_sigma`), ``d`` the local mean absolute mu-law difference between the warped
neighbour and the reference (ghosts), ``conf`` the flow's forward-backward consistency, and the
middle factor weighs the noise an average removes against the error a flow ``flow_error`` pixels
off adds on the reference's gradient ``grad m``. Noisy footage is averaged where it is aligned;
clean footage, where a sub-pixel misalignment costs more than the noise, keeps its reference.

Convention: HDRs are linear radiance ``(B, N, 3, H, W)`` on one scale, reference at ``N // 2``,
already aligned on it by the global similarity; ``h_sat`` ``(B,)`` is the radiance mapped to 1
before the mu-law.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vs_hdrvid.ops.classical_flow import dense_flow, flow_confidence
from vs_hdrvid.ops.tonemap import mulaw
from vs_hdrvid.ops.warp import flow_warp

__all__ = ["TemporalFuseConfig", "noise_sigma", "hdr_flows", "fuse_window", "temporal_fuse"]

_PATCH, _QUANTILE = 7, 0.1
# the level of unit white noise before scaling (3x512x512, measured): the high-pass keeps sqrt(8/9)
# of its std, and the 10% quantile of 7x7 stds lies below their mean
_UNIT_NOISE_LEVEL = 0.860


@dataclass(frozen=True)
class TemporalFuseConfig:
    """Parameters of :func:`temporal_fuse` (tuned on training scenes and the val split).

    Attributes:
        strength: ghost tolerance in units of the reference's noise level.
        flow_error: the flows' assumed error in pixels, against which the noise is weighed.
        radius: the mu-law difference is averaged over a ``2 radius + 1`` square.
        preset: DIS preset of the HDR-to-HDR flows.
    """

    strength: float = 4.0
    radius: int = 2
    flow_error: float = 1.0
    preset: str = "medium"


def noise_sigma(m: Tensor, bins: int = 8) -> Tensor:
    """Noise level of mu-law images as a function of brightness, per pixel: ``(B, C, H, W) -> (B, 1, H, W)``.

    A noise level function: the frame's pixels are split by their brightness into ``bins`` of equal
    count; in each bin the level is the 10% quantile of the local std of the 3x3 high-pass over 7x7
    squares (so the bin's weakly textured squares set it: texture only adds to a square's std),
    scaled back to the std of white noise, and between the bins' centres it is interpolated
    linearly. Sensor noise, large in the dark after the mu-law, is heteroscedastic, so one figure
    per frame would understate it in the shadows and overstate it in the highlights.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> m = torch.linspace(0.1, 0.9, 256).expand(1, 3, 256, 256)
        >>> round(float(noise_sigma(m + 0.02 * torch.randn(1, 3, 256, 256, generator=g)).median()), 3)
        0.02
    """
    hp = m - F.avg_pool2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, 1)
    r = _PATCH // 2
    local = F.avg_pool2d(F.pad(hp.square().mean(1, keepdim=True), (r, r, r, r), mode="replicate"), _PATCH, 1).sqrt()
    lum = m.mean(1, keepdim=True)
    out = torch.empty_like(lum)
    q = torch.linspace(0, 1, 2 * bins + 1, device=m.device, dtype=m.dtype)
    for i in range(m.shape[0]):
        y, a = lum[i].flatten(), local[i].flatten()
        step = max(1, y.numel() >> 19)  # the statistics from at most 0.5-1 M pixels (and torch.quantile takes 16 M)
        ys, a = y[::step].contiguous(), a[::step]
        marks = ys.quantile(q)  # bin edges at even marks, bin centres at odd ones
        idx = torch.bucketize(ys, marks[2:-1:2].contiguous())
        level = torch.stack([a[idx == k].quantile(_QUANTILE) if (idx == k).any() else a.quantile(_QUANTILE)
                             for k in range(bins)]) / _UNIT_NOISE_LEVEL
        # linear between the bin centres, so that the level is continuous in the brightness
        centres = marks[1::2].contiguous()
        j = torch.bucketize(y, centres).clamp(1, bins - 1)
        lo, hi = centres[j - 1], centres[j]
        t = ((y - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
        out[i] = torch.lerp(level[j - 1], level[j], t).reshape(lum[i].shape)
    return out


def hdr_flows(m: Tensor, preset: str = "medium") -> tuple[Tensor, Tensor]:
    """DIS flows from the reference to every other frame of mu-law windows, with their confidence.

    Shape: ``m (B, N, 3, H, W)`` in [0, 1] -> flows ``(B, N, 2, H, W)`` and confidence ``(B, N, 1, H, W)``
    (the reference's own: zero flow, confidence 1).
    """
    b, n, _, h, w = m.shape
    ci = n // 2
    gray = m.mean(2).float().cpu().numpy()  # (B, N, H, W)
    flows = np.zeros((b, n, 2, h, w), np.float32)
    conf = np.ones((b, n, 1, h, w), np.float32)
    for i in range(b):
        for j in range(n):
            if j != ci:
                fw = dense_flow(gray[i, ci], gray[i, j], preset=preset, gamma=1.0)
                bw = dense_flow(gray[i, j], gray[i, ci], preset=preset, gamma=1.0)
                flows[i, j], conf[i, j, 0] = fw, flow_confidence(fw, bw)
    return torch.from_numpy(flows).to(m.device), torch.from_numpy(conf).to(m.device)


def fuse_window(hdrs: Tensor, flows: Tensor, conf: Tensor, h_sat: Tensor,
                config: TemporalFuseConfig = TemporalFuseConfig()) -> Tensor:
    """The reference HDR averaged with its window aligned by ``flows`` (see the module docstring).

    Shape: ``hdrs (B, N, 3, H, W)``, ``flows (B, N, 2, H, W)``, ``conf (B, N, 1, H, W)``, ``h_sat (B,)``
    -> ``(B, 3, H, W)``.
    """
    b, n, c, h, w = hdrs.shape
    ci = n // 2
    scale = h_sat.to(hdrs.dtype).reshape(b, 1, 1, 1)
    ref = hdrs[:, ci]
    m_ref = mulaw((ref / scale).clamp(0, 1))
    sigma = noise_sigma(m_ref)  # (B, 1, H, W)
    tol = (config.strength * sigma).clamp_min(1e-6)
    gy, gx = torch.gradient(m_ref.mean(1, keepdim=True), dim=(2, 3))
    warp_err = config.flow_error * (gx.square() + gy.square()).sqrt()
    shrink = sigma.square() / (sigma.square() + warp_err.square() + 1e-12)  # noise against misalignment
    k = 2 * config.radius + 1
    num, den = ref, torch.ones_like(ref[:, :1])
    for j in range(n):
        if j == ci:
            continue
        warped = flow_warp(hdrs[:, j], flows[:, j])
        d = (mulaw((warped / scale).clamp(0, 1)) - m_ref).abs().mean(1, keepdim=True)
        d = F.avg_pool2d(F.pad(d, (config.radius,) * 4, mode="replicate"), k, 1)
        weight = shrink * conf[:, j] * torch.exp(-(d / tol).square())
        num, den = num + weight * warped, den + weight
    return num / den


@torch.no_grad()
def _mulaw_window(hdrs: Tensor, h_sat: Tensor) -> Tensor:
    return mulaw((hdrs / h_sat.to(hdrs.dtype).reshape(-1, 1, 1, 1, 1)).clamp(0, 1))


def temporal_fuse(hdrs: Tensor, h_sat: Tensor, config: TemporalFuseConfig = TemporalFuseConfig()) -> Tensor:
    """:func:`fuse_window` with the flows of :func:`hdr_flows` (DIS on the CPU).

    Shape: ``hdrs (B, N, 3, H, W)``, ``h_sat (B,)`` -> ``(B, 3, H, W)``.

    Example:
        >>> hdrs = torch.rand(1, 3, 3, 32, 32).expand(1, 3, 3, 32, 32).clone()
        >>> hdrs[:, 0] = hdrs[:, 2] = hdrs[:, 1]  # a static window is its reference
        >>> torch.allclose(temporal_fuse(hdrs, torch.ones(1)), hdrs[:, 1], atol=1e-5)
        True
    """
    if hdrs.ndim != 5 or hdrs.shape[2] != 3 or hdrs.shape[1] % 2 == 0:
        raise ValueError(f"temporal_fuse: hdrs must be (B, N, 3, H, W) with N odd, got {tuple(hdrs.shape)}")
    flows, conf = hdr_flows(_mulaw_window(hdrs, h_sat), config.preset)
    return fuse_window(hdrs, flows.to(hdrs.dtype), conf.to(hdrs.dtype), h_sat, config)
