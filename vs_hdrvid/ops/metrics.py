"""Full-reference HDR quality metrics: PSNR-mu, PSNR-L, SSIM-mu and the temporal warping error.

All metrics act on the project's radiometric scale ``H = f^-1(L) / 2**EV`` normalised by the
saturation radiance ``H_sat = 1 / 2**min(EV)`` (the brightest radiance any input frame of the
exposure pattern can record) and clipped to ``[0, 1]``; the mu-law (mu = 5000) tonemapped domain is
the one Chen et al. (ICCV 2021, Sec. 5) and DeAltHDR (Sec. 5, "Evaluation Configurations") report.

Convention: images are ``(B, 3, H, W)`` or ``(3, H, W)`` linear RGB; batched inputs give one value
per item (shape ``(B,)``), unbatched ones a scalar tensor. ``h_sat`` is a float or a ``(B,)``
tensor. Flows are ``(T, 2, H, W)`` with channel 0 = u (x, pixels) and 1 = v (y, pixels).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vs_hdrvid.ops.tonemap import mulaw as mu_law
from vs_hdrvid.ops.warp import flow_warp

__all__ = [
    "MU",
    "saturation_radiance",
    "mu_law",
    "mu_law_normalised",
    "psnr_mu",
    "psnr_l",
    "ssim_map",
    "ssim_mu",
    "temporal_warping_error",
    "PSNRMu",
    "PSNRL",
    "SSIMMu",
]

#: mu of the mu-law tonemapper used by every metric here.
MU: float = 5000.0


def saturation_radiance(exposures: list[float] | tuple[float, ...]) -> float:
    """``H_sat = 1 / 2**min(EV)``: the largest radiance any frame of the exposure pattern records."""
    if len(exposures) == 0:
        raise ValueError("saturation_radiance: exposures must not be empty")
    return 1.0 / 2.0 ** min(float(e) for e in exposures)


def _check_image(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() not in (3, 4) or x.shape[-3] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, 3, H, W) or (3, H, W) tensor, got {shape}")


def _check_pair(pred: Tensor, gt: Tensor) -> None:
    _check_image(pred, "pred")
    _check_image(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")


def _h_sat_like(h_sat: float | Tensor, x: Tensor) -> Tensor:
    """Broadcastable ``h_sat``: ``(B, 1, 1, 1)`` for batched ``x``, scalar otherwise."""
    h = torch.as_tensor(h_sat, dtype=x.dtype, device=x.device)
    if (h <= 0).any():
        raise ValueError(f"h_sat must be positive, got {h_sat}")
    if h.dim() == 0:
        return h
    if x.dim() != 4 or h.numel() != x.shape[0]:
        raise ValueError(f"h_sat must be a float or one value per batch item, got shape {tuple(h.shape)}")
    return h.reshape(-1, 1, 1, 1)


def _normalised(h: Tensor, h_sat: float | Tensor) -> Tensor:
    return (h / _h_sat_like(h_sat, h)).clamp(0.0, 1.0)


def mu_law_normalised(h: Tensor, h_sat: float | Tensor, mu: float = MU) -> Tensor:
    """Tonemap linear radiance with ``mu_law(clip(H / H_sat, 0, 1))``.

    Args:
        h: linear HDR radiance on the ``f^-1(L) / 2**EV`` scale.
        h_sat: saturation radiance ``1 / 2**min(EV)``; a float or one value per batch item.
        mu: compression strength.

    Returns:
        tonemapped values in ``[0, 1]``, same shape as ``h``.

    Shape:
        ``(B, 3, H, W)`` or ``(3, H, W)`` -> same.

    Example:
        >>> float(mu_law_normalised(torch.full((3, 1, 1), 2.0), h_sat=2.0)[0, 0, 0])
        1.0
    """
    _check_image(h, "h")
    return mu_law(_normalised(h, h_sat), mu)


def _psnr(a: Tensor, b: Tensor) -> Tensor:
    mse = (a - b).pow(2).flatten(-3).mean(-1)  # (B,) or ()
    return 10.0 * torch.log10(1.0 / mse)  # mse == 0 -> inf


def psnr_mu(pred: Tensor, gt: Tensor, h_sat: float | Tensor, mu: float = MU) -> Tensor:
    """PSNR in the mu-law domain: ``10 log10(1 / MSE(mu(pred), mu(gt)))`` with ``mu`` as in
    :func:`mu_law_normalised` (peak 1).

    Args:
        pred: reconstructed linear HDR.
        gt: ground-truth linear HDR.
        h_sat: saturation radiance ``1 / 2**min(EV)``.
        mu: mu-law strength.

    Returns:
        PSNR in dB per item; ``inf`` for identical inputs.

    Shape:
        ``(B, 3, H, W)`` -> ``(B,)``; ``(3, H, W)`` -> ``()``.
    """
    _check_pair(pred, gt)
    return _psnr(mu_law_normalised(pred, h_sat, mu), mu_law_normalised(gt, h_sat, mu))


def psnr_l(pred: Tensor, gt: Tensor, h_sat: float | Tensor) -> Tensor:
    """PSNR on the normalised linear values ``clip(H / H_sat, 0, 1)`` (peak 1).

    Args:
        pred: reconstructed linear HDR.
        gt: ground-truth linear HDR.
        h_sat: saturation radiance ``1 / 2**min(EV)``.

    Returns:
        PSNR in dB per item; ``inf`` for identical inputs.

    Shape:
        ``(B, 3, H, W)`` -> ``(B,)``; ``(3, H, W)`` -> ``()``.
    """
    _check_pair(pred, gt)
    return _psnr(_normalised(pred, h_sat), _normalised(gt, h_sat))


def _gaussian_window(size: int, sigma: float, x: Tensor) -> Tensor:
    r = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(x.shape[1], 1, size, size)  # (C, 1, k, k)


def ssim_map(x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """The SSIM map (Wang et al. 2004) of images in ``[0, 1]``; differentiable.

    The reference definition: a Gaussian window (11x11, sigma 1.5) over the *valid* region (no
    padding), ``C1 = 0.01**2``, ``C2 = 0.03**2`` for a dynamic range of 1, each channel a separate
    grey image. Its mean is the usual SSIM: :func:`ssim_mu` averages it per item, a loss over the
    whole batch.

    Shape:
        ``(B, C, H, W)`` with ``H, W >= window_size`` -> ``(B, C, H - k + 1, W - k + 1)``.
    """
    w = _gaussian_window(window_size, sigma, x)
    c = x.shape[1]

    def filt(z: Tensor) -> Tensor:
        return F.conv2d(z, w, groups=c)  # (B, C, H-k+1, W-k+1)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim_mu(pred: Tensor, gt: Tensor, h_sat: float | Tensor, mu: float = MU,
            window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """SSIM (Wang et al. 2004) on the mu-law tonemapped values.

    :func:`ssim_map` of the mu-law values, averaged over pixels and then over the three channels.

    Args:
        pred: reconstructed linear HDR.
        gt: ground-truth linear HDR.
        h_sat: saturation radiance ``1 / 2**min(EV)``.
        mu: mu-law strength.
        window_size: side of the Gaussian window (odd).
        sigma: standard deviation of the Gaussian window.

    Returns:
        SSIM in ``[-1, 1]`` per item (1 for identical inputs).

    Raises:
        ValueError: shapes differ or the image is smaller than the window.

    Shape:
        ``(B, 3, H, W)`` -> ``(B,)``; ``(3, H, W)`` -> ``()``.
    """
    _check_pair(pred, gt)
    if min(pred.shape[-2:]) < window_size:
        raise ValueError(f"ssim_mu: image {tuple(pred.shape[-2:])} smaller than the window {window_size}")
    x = mu_law_normalised(pred, h_sat, mu)
    y = mu_law_normalised(gt, h_sat, mu)
    unbatched = x.dim() == 3
    if unbatched:
        x, y = x[None], y[None]
    out = ssim_map(x, y, window_size, sigma).flatten(-2).mean(-1).mean(-1)  # (B,)
    return out[0] if unbatched else out


def _inside(flow: Tensor) -> Tensor:
    """``(B, H, W)`` mask of pixels whose target ``p + flow(p)`` lies inside the frame."""
    h, w = flow.shape[-2:]
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, w) + flow[:, 0]
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, h, 1) + flow[:, 1]
    return (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)


def temporal_warping_error(frames: Tensor, flows_bwd: Tensor, occ: Tensor | None,
                           h_sat: float, mu: float = MU) -> Tensor:
    """Temporal warping error (TWE) of a video in the mu-law domain, as in DeAltHDR Table 2.

    The flow-warping error of Lai et al. (ECCV 2018) with squared differences, averaged over
    channels: with ``V_t = mu_law_normalised(O_t, h_sat)``, ``W_t`` the backward warp of
    ``V_{t-1}`` with the flow ``t -> t-1`` (:func:`vs_hdrvid.ops.warp.flow_warp`: bilinear,
    ``align_corners=True``) and
    ``M_t = (occ_t == 0) & (p + flow(p) inside the frame)``,

    ``TWE = 1/(T-1) * sum_{t=1}^{T-1} [ sum_p M_t(p) * mean_c (V_t(c, p) - W_t(c, p))**2 / sum_p M_t(p) ]``

    Frames whose mask is empty are skipped. Tables multiply it by 10**3. Computed on the ground
    truth with the same (ground truth) flows it gives the floor that interpolation and occlusion
    edges leave.

    Args:
        frames: output video ``O_0 .. O_{T-1}``, linear HDR.
        flows_bwd: ``flows_bwd[t-1]`` is the flow from frame ``t`` to frame ``t-1``, ``t = 1..T-1``.
        occ: ``occ[t-1]`` marks pixels of frame ``t`` occluded in ``t-1`` (nonzero = occluded);
            ``None`` masks nothing but out-of-frame samples.
        h_sat: saturation radiance ``1 / 2**min(EV)``.
        mu: mu-law strength.

    Returns:
        scalar tensor; ``nan`` when no frame pair has a valid pixel.

    Shape:
        frames ``(T, 3, H, W)``, flows_bwd ``(T-1, 2, H, W)``, occ ``(T-1, H, W)``.
    """
    if frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"frames must be (T, 3, H, W) with T >= 2, got {tuple(frames.shape)}")
    t, _, h, w = frames.shape
    if tuple(flows_bwd.shape) != (t - 1, 2, h, w):
        raise ValueError(f"flows_bwd must be {(t - 1, 2, h, w)}, got {tuple(flows_bwd.shape)}")
    if occ is not None and tuple(occ.shape) != (t - 1, h, w):
        raise ValueError(f"occ must be {(t - 1, h, w)}, got {tuple(occ.shape)}")
    v = mu_law_normalised(frames, h_sat, mu)  # (T, 3, H, W)
    flows = flows_bwd.to(device=v.device, dtype=v.dtype)
    warped = flow_warp(v[:-1], flows)  # (T-1, 3, H, W)
    inside = _inside(flows)  # (T-1, H, W)
    mask = inside if occ is None else inside & (occ.to(v.device) == 0)
    err = (v[1:] - warped).pow(2).mean(1)  # (T-1, H, W)
    m = mask.to(v.dtype)
    count = m.flatten(1).sum(-1)
    per_t = (err * m).flatten(1).sum(-1) / count.clamp(min=1)
    valid = count > 0
    if not valid.any():
        return torch.tensor(float("nan"), dtype=v.dtype, device=v.device)
    return per_t[valid].mean()


class PSNRMu(nn.Module):
    """Module form of :func:`psnr_mu`; stores ``mu``."""

    def __init__(self, mu: float = MU) -> None:
        super().__init__()
        self.mu = mu

    def forward(self, pred: Tensor, gt: Tensor, h_sat: float | Tensor) -> Tensor:
        return psnr_mu(pred, gt, h_sat, self.mu)


class PSNRL(nn.Module):
    """Module form of :func:`psnr_l`."""

    def forward(self, pred: Tensor, gt: Tensor, h_sat: float | Tensor) -> Tensor:
        return psnr_l(pred, gt, h_sat)


class SSIMMu(nn.Module):
    """Module form of :func:`ssim_mu`; stores ``mu``, the window size and sigma."""

    def __init__(self, mu: float = MU, window_size: int = 11, sigma: float = 1.5) -> None:
        super().__init__()
        self.mu, self.window_size, self.sigma = mu, window_size, sigma

    def forward(self, pred: Tensor, gt: Tensor, h_sat: float | Tensor) -> Tensor:
        return ssim_mu(pred, gt, h_sat, self.mu, self.window_size, self.sigma)
