"""Global similarity (rotation, isotropic scale, translation) between frames of different exposure.

Method: coarse-to-fine inverse-compositional Lucas-Kanade (Baker & Matthews 2004, Sec. 3.2) on the
four similarity parameters, with iteratively reweighted Geman-McClure weights (Black & Anandan 1996)
so that moving objects and clipped or noisy regions do not dominate, and per-iteration zero-mean,
unit-variance normalisation of both images inside the jointly valid mask (which absorbs the
residual exposure mismatch, as in ECC, Evangelidis & Psarakis 2008).

Convention: pixel centres at integers, x right, y down; the returned ``M`` maps points of ``mov``
onto ``ref``, so ``warp_similarity(mov, M)`` (``out(q) = mov(M^-1 q)``) is aligned with ``ref``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import pyrdown
from torch import Tensor, nn

from .warp import invert_affine

__all__ = ["estimate_similarity", "estimate_similarity_from_pyramids", "similarity_pyramid", "SimilarityEstimator"]


def _check(x: object, name: str, like: Tensor | None = None) -> None:
    ok = isinstance(x, Tensor) and x.dim() == 4 and x.shape[1] == 1 and x.is_floating_point()
    if not ok:
        raise ValueError(f"{name} must be a float (B, 1, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{name} {tuple(x.shape)} must have the shape of ref {tuple(like.shape)}")


def _masked_moments(x: Tensor, w: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Weighted mean and standard deviation per batch element: ``(B, 1, 1, 1)`` each."""
    sw = w.sum((1, 2, 3), keepdim=True).clamp_min(eps)
    mean = (x * w).sum((1, 2, 3), keepdim=True) / sw
    var = ((x - mean).pow(2) * w).sum((1, 2, 3), keepdim=True) / sw
    return mean, var.clamp_min(eps).sqrt()


def _erode(mask: Tensor) -> Tensor:
    """Minimum over the in-bounds 3x3 window: ``-F.max_pool2d(-mask, 3, 1, 1)`` exactly, separably."""
    h, w = mask.shape[-2:]
    if h < 2 or w < 2:
        return -F.max_pool2d(-mask, 3, stride=1, padding=1)
    out = mask.clone()
    for dim, n in ((-1, w), (-2, h)):
        src = out.clone()
        torch.minimum(out.narrow(dim, 0, n - 1), src.narrow(dim, 1, n - 1), out=out.narrow(dim, 0, n - 1))
        torch.minimum(out.narrow(dim, 1, n - 1), src.narrow(dim, 0, n - 1), out=out.narrow(dim, 1, n - 1))
    return out


def _gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences with replicated borders."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]), 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1])


def _to3(m: Tensor) -> Tensor:
    last = torch.zeros_like(m[:, :1])
    last[:, 0, 2] = 1
    return torch.cat((m, last), 1)


def _level_scale(k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """3x3 map from level-k pixel coordinates to level-0 ones: ``p0 = 2**k (p + 0.5) - 0.5``."""
    s = float(2**k)
    return torch.tensor([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]], dtype=dtype, device=device)


def _default_iters(levels: int) -> tuple[int, ...]:
    """Iterations per level, coarsest first: many where pixels are cheap, few at full resolution."""
    if levels == 1:
        return (20,)
    if levels == 2:
        return (30, 4)
    return (30,) + (15,) * (levels - 3) + (8, 4)


@torch.no_grad()
def estimate_similarity(
    ref: Tensor,
    mov: Tensor,
    ref_mask: Tensor | None = None,
    mov_mask: Tensor | None = None,
    levels: int | None = None,
    iters: Sequence[int] | None = None,
    init: Tensor | None = None,
    min_size: int = 32,
    robust_scale: float = 3.0,
    compress: bool = True,
    tol: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Estimate the similarity that aligns ``mov`` onto ``ref``.

    Inputs are linear luminance *the caller prepares*: both frames linearised and exposure-
    normalised to the common radiometry (``H = f^-1(L) / 2**EV``), then clipped to the range both
    frames can record (e.g. ``[0, 1 / 2**max(EV)]``). Masks are 1 where a frame is well exposed
    (e.g. its LDR luminance within 0.02..0.95) and 0 where it is clipped or too dark.

    Args:
        ref: the frame that stays put.
        mov: the frame to align onto ``ref``.
        ref_mask, mov_mask: well-exposed masks, 1 (or True) where usable; all ones when None.
        levels: pyramid levels; by default as many as keep the coarsest side >= ``min_size``.
        iters: Gauss-Newton iterations per level, coarsest first.
        init: initial ``(B, 2, 3)`` estimate (e.g. the previous frame pair's), identity when None.
        min_size: smallest side of the coarsest level when ``levels`` is None.
        robust_scale: Geman-McClure scale in units of the residual's robust standard deviation.
        compress: match ``sqrt`` of the inputs (evens out the weight of dark and bright regions).
        tol: stop a level once every update moves the image corners by less than this (pixels).

    Returns:
        ``M`` ``(B, 2, 3)`` mapping ``mov`` points to ``ref`` points (``warp_similarity(mov, M)``
        aligns ``mov`` with ``ref``) and a confidence ``(B,)`` in [0, 1]: the normalised
        correlation of the aligned frames over the usable pixels (about 1 for a static scene, lower
        where moving objects cover the frame, about 0 for unrelated frames) times the usable
        fraction of the frame (saturating at 20 % inliers); 0 when there is no usable texture.

    Shape:
        ref, mov, masks ``(B, 1, H, W)`` -> ``(B, 2, 3)``, ``(B,)``.

    Convention:
        pixel centres at integers, x right, y down; float32 arithmetic (float64 for float64 input)
        on the inputs' device.

    Note:
        The capture range comes from the pyramid: with the default levels, shifts of about 1/10 of
        the frame width and rotations of a few degrees converge; pass ``init`` for larger motion.
        Most of the cost is the finest level; ``iters=(..., 0)`` skips it for about half the time
        and twice the error. Runs without autograd.

    Example:
        >>> ref = torch.rand(1, 1, 64, 64); M, conf = estimate_similarity(ref, ref)
    """
    _check(ref, "ref")
    _check(mov, "mov", ref)
    for name, m in (("ref_mask", ref_mask), ("mov_mask", mov_mask)):
        if m is not None and (not isinstance(m, Tensor) or m.shape != ref.shape):
            raise ValueError(f"{name} must be a (B, 1, H, W) tensor like ref {tuple(ref.shape)}, got "
                             f"{tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__}")
    b, _, h, w = ref.shape
    levels = _check_levels(h, w, levels, min_size)
    m, conf = estimate_similarity_from_pyramids(similarity_pyramid(ref, ref_mask, levels, compress),
                                                similarity_pyramid(mov, mov_mask, levels, compress), (h, w),
                                                iters=iters, init=init, robust_scale=robust_scale, tol=tol)
    return m.to(ref.dtype), conf.to(ref.dtype)


def _check_levels(h: int, w: int, levels: int | None, min_size: int) -> int:
    if min(h, w) < 8:
        raise ValueError(f"frames must be at least 8x8 pixels, got {h}x{w}")
    if levels is None:
        levels = max(1, int(math.floor(math.log2(min(h, w) / max(min_size, 4)))) + 1)
    if levels < 1 or min(h, w) >> (levels - 1) < 4:
        raise ValueError(f"levels={levels} is out of range for a {h}x{w} frame")
    return levels


def similarity_pyramid(image: Tensor, mask: Tensor | None = None, levels: int | None = None,
                       compress: bool = True, min_size: int = 32) -> list[Tensor]:
    """One frame's half of :func:`estimate_similarity`'s set-up: its image and mask, blurred, per level.

    The frame is padded to a multiple of ``2**(levels - 1)`` (replicated, the mask 0 there) and
    blurred, then halved ``levels - 1`` times. The blur and halving act on each channel alone, so a
    frame's pyramid is the same whichever frame it is paired with: a node that aligns every frame
    with the next builds each pyramid once (:func:`estimate_similarity_from_pyramids`).

    Args:
        image: ``(B, 1, H, W)`` luminance as :func:`estimate_similarity` takes it.
        mask: well-exposed mask like ``image`` (all ones when None).
        levels, compress, min_size: as for :func:`estimate_similarity`.

    Returns:
        per level, finest first, ``(B, 2, H_k, W_k)``: the (square-rooted) image and the mask.
    """
    _check(image, "image")
    if mask is not None and (not isinstance(mask, Tensor) or mask.shape != image.shape):
        raise ValueError(f"mask must be a (B, 1, H, W) tensor like image {tuple(image.shape)}")
    b, _, h, w = image.shape
    levels = _check_levels(h, w, levels, min_size)
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    m = torch.ones_like(image, dtype=dtype) if mask is None else (mask.to(dtype) > 0.5).to(dtype)
    t = image.to(dtype).clamp_min(0)
    if compress:
        t = t.sqrt()
    # pad to a multiple of 2**(levels-1) so every level halves exactly; the padding is masked out
    mult = 2 ** (levels - 1)
    ph, pw = (-h) % mult, (-w) % mult
    stack = torch.cat((t, m), 1)  # (B, 2, H, W)
    if ph or pw:
        stack = F.pad(stack, (0, pw, 0, ph), mode="replicate")
        stack[:, 1:, h:, :] = 0
        stack[:, 1:, :, w:] = 0
    stack = gaussian_blur2d(stack, (5, 5), (1.0, 1.0), border_type="replicate")
    pyramid = [stack]
    for _ in range(levels - 1):
        pyramid.append(pyrdown(pyramid[-1], border_type="replicate"))
    return pyramid


_GEOMETRY: dict[tuple, tuple] = {}  # per level shape: coordinates and matrices (read only)


def _level_geometry(k: int, hk: int, wk: int, c0: tuple[float, float], dtype: torch.dtype, dev: torch.device
                    ) -> tuple:
    """The coordinates of level ``k`` and the matrices between it and level 0, cached per shape."""
    key = (k, hk, wk, c0, dtype, str(dev))
    hit = _GEOMETRY.get(key)
    if hit is not None:
        return hit
    s = _level_scale(k, dtype, dev)
    s_inv = torch.linalg.inv(s)
    cx, cy = (c0[0] + 0.5) / 2**k - 0.5, (c0[1] + 0.5) / 2**k - 0.5
    L = max(wk, hk) / 2
    ys, xs = torch.meshgrid(torch.arange(hk, device=dev, dtype=dtype),
                            torch.arange(wk, device=dev, dtype=dtype), indexing="ij")
    xn, yn = (xs - cx) / L, (ys - cy) / L
    q = torch.stack((xs, ys, torch.ones_like(xs))).reshape(3, -1)  # (3, hk*wk)
    corners = torch.tensor([[0, wk - 1, 0, wk - 1], [0, 0, hk - 1, hk - 1]], dtype=dtype, device=dev)
    ck = torch.tensor([[1, 0, cx], [0, 1, cy], [0, 0, 1]], dtype=dtype, device=dev)
    hit = (s, s_inv, L, xn, yn, q, corners, ck, torch.linalg.inv(ck))
    if len(_GEOMETRY) > 64:
        _GEOMETRY.clear()
    _GEOMETRY[key] = hit
    return hit


@torch.no_grad()
def estimate_similarity_from_pyramids(ref_pyramid: Sequence[Tensor], mov_pyramid: Sequence[Tensor],
                                      size: tuple[int, int], iters: Sequence[int] | None = None,
                                      init: Tensor | None = None, robust_scale: float = 3.0, tol: float = 1e-3
                                      ) -> tuple[Tensor, Tensor]:
    """:func:`estimate_similarity` from both frames' :func:`similarity_pyramid` (same levels).

    Args:
        ref_pyramid, mov_pyramid: :func:`similarity_pyramid` of the reference and the moving frame.
        size: ``(H, W)`` of the frames before padding.
        iters, init, robust_scale, tol: as for :func:`estimate_similarity`.

    Returns:
        as :func:`estimate_similarity`, bit for bit.
    """
    levels = len(ref_pyramid)
    if len(mov_pyramid) != levels or any(a.shape != b.shape for a, b in zip(ref_pyramid, mov_pyramid)):
        raise ValueError("ref_pyramid and mov_pyramid must have the same levels and shapes")
    h, w = size
    b, dtype, dev = ref_pyramid[0].shape[0], ref_pyramid[0].dtype, ref_pyramid[0].device
    if init is not None and (not isinstance(init, Tensor) or init.shape != (b, 2, 3)):
        raise ValueError(f"init must be a ({b}, 2, 3) tensor")
    iters = tuple(iters) if iters is not None else _default_iters(levels)
    if len(iters) != levels or any(i < 0 for i in iters):
        raise ValueError(f"iters must give {levels} non-negative counts (coarsest first), got {iters}")

    a0 = _to3(init.to(dtype)) if init is not None else torch.eye(3, dtype=dtype, device=dev).expand(b, 3, 3)
    a0 = torch.linalg.inv(a0)  # ref -> mov coordinates: the warp W(x; p) of Lucas-Kanade
    c0 = ((w - 1) / 2, (h - 1) / 2)
    eye4 = torch.eye(4, dtype=dtype, device=dev)
    stats = None
    for k in reversed(range(levels)):
        T, mov = ref_pyramid[k][:, 0:1], mov_pyramid[k]
        # > 0.9, not 0.99: stricter left no pixels at the coarse levels of 1080p frames with scattered clipping
        mT = _erode((ref_pyramid[k][:, 1:2] > 0.9).to(dtype))
        hk, wk = T.shape[-2:]
        s, s_inv, L, xn, yn, q, corners, ck, ck_inv = _level_geometry(k, hk, wk, c0, dtype, dev)
        gx, gy = _gradients(T)
        sd = L * torch.cat((gx * xn + gy * yn, gy * xn - gx * yn, gx, gy), 1)  # (B, 4, hk, wk)
        grid = torch.empty(b, hk, wk, 2, dtype=dtype, device=dev)
        sx, sy = 2 / max(wk - 1, 1), 2 / max(hk - 1, 1)
        prev_w = None
        for _ in range(iters[levels - 1 - k]):
            ak = s_inv @ a0 @ s  # (B, 3, 3) level-k ref -> mov
            pos = (ak[:, :2] @ q).view(b, 2, hk, wk)
            torch.mul(pos[:, 0], sx, out=grid[..., 0]).sub_(1)
            torch.mul(pos[:, 1], sy, out=grid[..., 1]).sub_(1)
            warped = F.grid_sample(mov, grid, mode="bilinear", padding_mode="border", align_corners=True)
            inside = ((pos[:, :1] >= 0) & (pos[:, :1] <= wk - 1) & (pos[:, 1:] >= 0) & (pos[:, 1:] <= hk - 1))
            valid = mT * (warped[:, 1:2] > 0.99).to(dtype) * inside.to(dtype)  # (B, 1, hk, wk)
            # moments over the previous iteration's robust weights, so outliers do not shift them
            mw = valid if prev_w is None else prev_w * valid
            mean_t, std_t = _masked_moments(T, mw)
            mean_i, std_i = _masked_moments(warped[:, :1], mw)
            err = (warped[:, :1] - mean_i) / std_i - (T - mean_t) / std_t  # (B, 1, hk, wk)
            # robust scale from the median absolute residual (sub-sampled for speed)
            r = torch.where(valid > 0, err.abs(), torch.nan).flatten(1)[:, ::3]
            sigma = 1.4826 * torch.nanmedian(r, dim=1).values.nan_to_num(1.0).clamp_min(1e-3)
            sg2 = (robust_scale * sigma).pow(2).view(b, 1, 1, 1)
            wgt = valid * (sg2 / (sg2 + err.pow(2))).pow(2)  # Geman-McClure IRLS weights
            prev_w = wgt
            sdn = sd / std_t
            sdw = sdn * wgt
            hess = torch.einsum("bihw,bjhw->bij", sdw, sdn)
            grad = torch.einsum("bihw,bhw->bi", sdw, err[:, 0])
            dp = torch.linalg.solve(hess + 1e-6 * hess.diagonal(0, 1, 2).mean(-1)[:, None, None] * eye4
                                    + 1e-12 * eye4, grad)  # (B, 4)
            da, db, dtx, dty = dp.unbind(-1)
            d = torch.zeros(b, 3, 3, dtype=dtype, device=dev)
            d[:, 0, 0], d[:, 0, 1], d[:, 0, 2] = 1 + da, -db, L * dtx
            d[:, 1, 0], d[:, 1, 1], d[:, 1, 2] = db, 1 + da, L * dty
            d[:, 2, 2] = 1
            d = ck @ d @ ck_inv  # update in level-k pixel coordinates
            ak = ak @ torch.linalg.inv(d)  # inverse compositional: W <- W o W(dp)^-1
            a0 = s @ ak @ s_inv
            moved = (d[:, :2, :2] @ corners + d[:, :2, 2:] - corners).norm(dim=1).amax(-1)
            stats = (wgt, valid, err, hess)
            if bool((moved * 2**k < tol).all()):
                break

    m = invert_affine(a0[:, :2])  # mov -> ref
    if stats is None:
        return m, torch.zeros(b, dtype=dtype, device=dev)
    wgt, valid, err, hess = stats
    # correlation over all usable pixels (unit-variance signals: mean e^2 = 2 (1 - rho)), so that
    # content the global motion does not explain lowers it, while the estimate ignored it
    ncc = 1 - 0.5 * (valid * err.pow(2)).sum((1, 2, 3)) / valid.sum((1, 2, 3)).clamp_min(1)
    usable = ((wgt > 0.25).to(dtype) * valid).sum((1, 2, 3)) / (h * w)
    textured = torch.linalg.eigvalsh(hess)[:, 0] > 1e-9 * hess.diagonal(0, 1, 2).sum(-1).clamp_min(1e-30)
    conf = ncc.clamp(0, 1) * (usable / 0.2).clamp(max=1) * textured.to(dtype)
    return m, conf


class SimilarityEstimator(nn.Module):
    """Module form of :func:`estimate_similarity` with fixed hyperparameters.

    Example:
        >>> est = SimilarityEstimator(); ref = torch.rand(1, 1, 64, 64)
        >>> M, conf = est(ref, ref)
    """

    def __init__(self, levels: int | None = None, iters: Sequence[int] | None = None, min_size: int = 32,
                 robust_scale: float = 3.0, compress: bool = True, tol: float = 1e-3) -> None:
        super().__init__()
        self.levels, self.iters, self.min_size = levels, None if iters is None else tuple(iters), min_size
        self.robust_scale, self.compress, self.tol = robust_scale, compress, tol

    def forward(self, ref: Tensor, mov: Tensor, ref_mask: Tensor | None = None, mov_mask: Tensor | None = None,
                init: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return estimate_similarity(ref, mov, ref_mask, mov_mask, levels=self.levels, iters=self.iters,
                                   init=init, min_size=self.min_size, robust_scale=self.robust_scale,
                                   compress=self.compress, tol=self.tol)

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, iters={self.iters}, min_size={self.min_size}, "
                f"robust_scale={self.robust_scale}, compress={self.compress}, tol={self.tol}")
