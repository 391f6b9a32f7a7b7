"""Training losses of Chen et al. (ICCV 2021), sections 3.2-3.3, and flow pretraining.

* :func:`mu_l1`: the CoarseNet loss ``L_c = ||T(H_c) - T(H_gt)||_1`` on mu-law tonemapped HDR
  (equation 1, mu = 5000), mean over pixels and channels.
* :func:`refine_l1`: equation 6, the L1 of the tonemapped final HDR normalised by the badly exposed
  area ``||1 - M||_1`` instead of the image area.
* :func:`structure_loss`: the substitute for the VGG16 perceptual loss (relu1_2, relu2_2, relu3_3),
  whose ImageNet weights this project does not use: a multi-scale gradient L1 (horizontal and
  vertical finite differences at 1, 1/2 and 1/4 resolution) plus ``1 - SSIM`` (11x11 Gaussian
  window, sigma 1.5), both in the mu-law domain. Like the VGG features it penalises lost edges and
  texture that plain L1 tolerates; its weight in the RefineNet loss is a training option.
* :func:`epe`: average end-point error of flows for the flow-network pretraining.

All images are tonemapped with ``mu_law(clip(H / H_sat, 0, 1))`` (``vs_hdrvid.ops.metrics``),
``H_sat = 2**-min(EV)``, the normalisation of every metric in this project.

Convention: images ``(B, 3, H, W)`` linear HDR; masks ``(B, 1, H, W)``; flows ``(B, K, 2, H, W)``
or ``(B, 2, H, W)``; ``h_sat`` a float or ``(B,)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vs_hdrvid.ops.metrics import MU, mu_law, ssim_map

__all__ = ["normalised", "tonemap", "mu_l1", "linear_l1", "refine_l1", "gradient_l1", "structure_loss", "epe"]


def normalised(h: Tensor, h_sat: float | Tensor) -> Tensor:
    """``clip(H / H_sat, 0, 1)`` with ``h_sat`` a float or one value per batch item."""
    hs = torch.as_tensor(h_sat, dtype=h.dtype, device=h.device)
    if hs.dim() > 0:
        hs = hs.reshape(-1, *([1] * (h.dim() - 1)))
    return (h / hs).clamp(0.0, 1.0)


def tonemap(h: Tensor, h_sat: float | Tensor, mu: float = MU) -> Tensor:
    """``mu_law(clip(H / H_sat, 0, 1))`` with ``h_sat`` a float or one value per batch item."""
    return mu_law(normalised(h, h_sat), mu)


def mu_l1(pred: Tensor, gt: Tensor, h_sat: float | Tensor) -> Tensor:
    """CoarseNet loss (section 3.2): mean absolute difference of the mu-law tonemapped HDRs.

    Example:
        >>> float(mu_l1(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 1.0), 1.0))
        1.0
    """
    return (tonemap(pred, h_sat) - tonemap(gt, h_sat)).abs().mean()


def linear_l1(pred: Tensor, gt: Tensor, h_sat: float | Tensor) -> Tensor:
    """Mean absolute difference of the normalised linear HDRs ``clip(H / H_sat, 0, 1)``.

    The space of PSNR-L: where the mu-law compresses the highlights (a 1% error at the
    saturation level costs there what a 0.1% one costs in the shadows), this term weighs them by
    their radiance. DeAltHDR adds it to its mu-law losses (``lin_weight``), a deviation.

    Example:
        >>> float(linear_l1(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 2.0), 4.0))
        0.5
    """
    return (normalised(pred, h_sat) - normalised(gt, h_sat)).abs().mean()


def log_mu_l1(pred: Tensor, gt: Tensor, h_sat: float | Tensor, eps: float = 1e-4) -> Tensor:
    """Mean over the batch of ``log(eps + mu-law L1 of each crop)``.

    The mu-law L1 per crop weighted by its inverse: a crop of clean footage, whose errors are a
    tenth of a noisy crop's, moves the network as much as the noisy one, as it counts in the
    validation and test metric (the mean PSNR over crops, a log too). Used where a network
    corrects the weight-free merge (CoarseNet ``blend="merge"``), which must not trade the clean
    scenes for the noisy ones. A deviation from equation 1's plain L1.

    Example:
        >>> round(float(log_mu_l1(torch.zeros(2, 3, 2, 2), torch.ones(2, 3, 2, 2), 1.0, eps=0.0)), 6)
        0.0
    """
    err = (tonemap(pred, h_sat) - tonemap(gt, h_sat)).abs().flatten(1).mean(1)  # (B,)
    return torch.log(err + eps).mean()


def refine_l1(pred: Tensor, gt: Tensor, mask: Tensor, h_sat: float | Tensor, min_area: float = 0.05) -> Tensor:
    """RefineNet L1 of equation 6: ``||T - T_gt||_1 / ||1 - M||_1``.

    The numerator sums over pixels and channels, the denominator is three times the number of
    badly exposed pixels (``sum(1 - M)`` over a ``(B, 1, H, W)`` mask, one per channel), so a
    uniform error ``e`` confined to the badly exposed area gives ``e``. The area is floored at
    ``min_area`` of the batch's pixels: on small patches the badly exposed area is often a few
    pixels, and the whole-image numerator over it makes the loss (and Adam's second moments)
    jump by orders of magnitude; above the floor this is equation 6 unchanged.

    Args:
        pred: final HDR ``M * H_c + (1 - M) * H_r``.
        gt: ground truth.
        mask: ``M`` of equation 5, ``(B, 1, H, W)`` (or per channel ``(B, 3, H, W)``).
    """
    diff = (tonemap(pred, h_sat) - tonemap(gt, h_sat)).abs().sum()
    area = (1 - mask).sum() * (pred.shape[1] / mask.shape[1])
    return diff / area.clamp(min=min_area * pred[:, :1].numel() * pred.shape[1])


def gradient_l1(x: Tensor, y: Tensor, scales: int = 3) -> Tensor:
    """Mean L1 between the horizontal and vertical finite differences of ``x`` and ``y``,
    averaged over ``scales`` dyadic resolutions (2x2 average pooling between them)."""
    total = x.new_zeros(())
    for s in range(scales):
        if s:
            if min(x.shape[-2:]) < 4:
                return total / s
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        dx = (x[..., :, 1:] - x[..., :, :-1]) - (y[..., :, 1:] - y[..., :, :-1])
        dy = (x[..., 1:, :] - x[..., :-1, :]) - (y[..., 1:, :] - y[..., :-1, :])
        total = total + 0.5 * (dx.abs().mean() + dy.abs().mean())
    return total / scales


def structure_loss(pred: Tensor, gt: Tensor, h_sat: float | Tensor, scales: int = 3) -> Tensor:
    """Perceptual-loss substitute: ``gradient_l1 + (1 - SSIM)`` of the mu-law tonemapped images.

    Stands in for the VGG16 feature L1 of Chen et al. section 3.3 (relu1_2/2_2/3_3), which needs
    ImageNet weights this project does not ship; see the module docstring.

    Example:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> float(structure_loss(x, x, 1.0))
        0.0
    """
    tp, tg = tonemap(pred, h_sat), tonemap(gt, h_sat)
    k = min(11, *tp.shape[-2:])
    k -= 1 - k % 2  # odd window no larger than the image
    return gradient_l1(tp, tg, scales) + (1 - ssim_map(tp, tg, window_size=k).mean())


def log_epe(pred: Tensor, gt: Tensor, valid: Tensor, eps: float = 0.05) -> Tensor:
    """Mean over the batch of ``log(eps + EPE of each crop)`` (valid pixels only).

    As :func:`log_mu_l1` for the HDR: a crop whose flow is nearly right (clean footage, small
    motion) moves the network as much as one with errors ten times larger, so a correction learnt
    where the classical flow fails does not cost where it works. A deviation from the plain EPE.

    Shape: ``pred, gt (B, ..., 2, H, W)``, ``valid (B, ..., 1, H, W)``.

    Example:
        >>> v = torch.ones(1, 1, 1, 1)
        >>> round(float(log_epe(torch.zeros(1, 2, 1, 1), torch.ones(1, 2, 1, 1) * 3 ** 0.5, v, eps=0.0)), 4)
        0.8959
    """
    err = (pred - gt).pow(2).sum(-3, keepdim=True).clamp(min=1e-12).sqrt()
    per_crop = (err * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1.0)  # (B,)
    return torch.log(per_crop + eps).mean()


def epe(pred: Tensor, gt: Tensor, valid: Tensor | None = None) -> Tensor:
    """Average end-point error ``mean ||pred - gt||_2`` over the (valid) pixels.

    Args:
        pred, gt: flows ``(..., 2, H, W)``.
        valid: ``(..., 1, H, W)`` weights (1 = counted), or None for all pixels.

    Example:
        >>> float(epe(torch.zeros(1, 2, 1, 1), torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1)))
        5.0
    """
    err = (pred - gt).pow(2).sum(-3, keepdim=True).clamp(min=1e-12).sqrt()  # (..., 1, H, W)
    if valid is None:
        return err.mean()
    return (err * valid).sum() / valid.sum().clamp(min=1.0)
