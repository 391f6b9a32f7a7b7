"""Colour math on linear RGB: luminance, BT.709 <-> BT.2020 primaries, Y'CbCr matrices.

Convention: tensors are ``(B, C, H, W)`` (any leading dims work) with the channel axis at ``-3``;
RGB channel order is R, G, B. Luminance and primaries conversions expect *linear* light;
the Y'CbCr matrices act on non-linear (gamma-encoded) R'G'B' in full range.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "LUMA_COEFFS",
    "rgb_to_luminance",
    "bt709_to_bt2020",
    "primaries_matrix",
    "bt2020_to_bt709",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]

#: (Kr, Kg, Kb) luminance weights of BT.709 and BT.2020 (also the Y'CbCr matrix weights).
LUMA_COEFFS: dict[str, tuple[float, float, float]] = {
    "709": (0.2126, 0.7152, 0.0722),
    "2020": (0.2627, 0.6780, 0.0593),
}

# CIE xy chromaticities of the primaries (R, G, B) and the D65 white point.
_PRIMARIES_XY = {
    "709": ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060)),
    "2020": ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)),
}
_D65_XY = (0.3127, 0.3290)


def _check_rgb(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name} must be a (..., 3, H, W) RGB tensor, got {_shape(x)}")


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def _check_primaries(primaries: str) -> str:
    key = str(primaries).removeprefix("bt").removeprefix("BT").replace(".", "")
    if key not in LUMA_COEFFS:
        raise ValueError(f"primaries must be '709' or '2020', got {primaries!r}")
    return key


@lru_cache(maxsize=None)
def _rgb_to_xyz(primaries: str) -> np.ndarray:
    """3x3 linear RGB -> CIE XYZ matrix from the primaries' chromaticities (SMPTE RP 177)."""
    xy = np.array(_PRIMARIES_XY[primaries], dtype=np.float64)  # (3, 2)
    xyz = np.stack([xy[:, 0] / xy[:, 1], np.ones(3), (1 - xy[:, 0] - xy[:, 1]) / xy[:, 1]])  # (3, 3)
    wx, wy = _D65_XY
    white = np.array([wx / wy, 1.0, (1 - wx - wy) / wy])
    return xyz * np.linalg.solve(xyz, white)[None, :]


@lru_cache(maxsize=None)
def _conversion(src: str, dst: str) -> np.ndarray:
    return np.linalg.solve(_rgb_to_xyz(dst), _rgb_to_xyz(src))


def primaries_matrix(src: str = "709", dst: str = "2020") -> np.ndarray:
    """The 3x3 float64 matrix taking linear RGB in ``src`` primaries to ``dst`` (D65 white kept).

    ``primaries_matrix("709", "2020")`` is the matrix of :func:`bt709_to_bt2020`.
    """
    return _conversion(_check_primaries(src), _check_primaries(dst)).copy()


def _apply_matrix(x: Tensor, m: np.ndarray) -> Tensor:
    mat = torch.as_tensor(m, dtype=x.dtype, device=x.device)
    return torch.einsum("ij,...jhw->...ihw", mat, x)


def rgb_to_luminance(x: Tensor, primaries: str = "709", fused: bool = False) -> Tensor:
    """Relative luminance Y of linear RGB.

    Args:
        x: linear RGB.
        primaries: ``"709"`` (also sRGB) or ``"2020"``.
        fused: accumulate into one buffer with multiply-adds (``Kr R``, then ``+ Kg G``, then
            ``+ Kb B`` in place): no temporaries beyond the result, which the frame-sized passes
            of the merge and the alignment need. The sums may round differently in the last bit
            from the default (a multiply-add rounds once), so a caller keeps one form.

    Returns:
        Y with a single channel.

    Shape:
        ``(..., 3, H, W)`` -> ``(..., 1, H, W)``.

    Raises:
        ValueError: ``x`` has no 3-channel axis at ``-3`` or ``primaries`` is unknown.
    """
    _check_rgb(x)
    kr, kg, kb = LUMA_COEFFS[_check_primaries(primaries)]
    if fused:
        y = x[..., 0:1, :, :] * kr
        return y.add_(x[..., 1:2, :, :], alpha=kg).add_(x[..., 2:3, :, :], alpha=kb)
    return kr * x[..., 0:1, :, :] + kg * x[..., 1:2, :, :] + kb * x[..., 2:3, :, :]


def bt709_to_bt2020(x: Tensor) -> Tensor:
    """Linear BT.709 RGB -> linear BT.2020 RGB (the ITU-R BT.2087 matrix, D65 white kept).

    The matrix is derived from the primaries' chromaticities and equals BT.2087's
    ``[[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]``.

    Shape:
        ``(..., 3, H, W)`` -> ``(..., 3, H, W)``.
    """
    _check_rgb(x)
    return _apply_matrix(x, _conversion("709", "2020"))


def bt2020_to_bt709(x: Tensor) -> Tensor:
    """Linear BT.2020 RGB -> linear BT.709 RGB (inverse of :func:`bt709_to_bt2020`).

    Out-of-gamut colours give negative components; clamp them if the consumer needs to.

    Shape:
        ``(..., 3, H, W)`` -> ``(..., 3, H, W)``.
    """
    _check_rgb(x)
    return _apply_matrix(x, _conversion("2020", "709"))


def _ycbcr_matrix(matrix: str) -> np.ndarray:
    kr, kg, kb = LUMA_COEFFS[_check_primaries(matrix)]
    return np.array(
        [
            [kr, kg, kb],
            [-0.5 * kr / (1 - kb), -0.5 * kg / (1 - kb), 0.5],
            [0.5, -0.5 * kg / (1 - kr), -0.5 * kb / (1 - kr)],
        ]
    )


def rgb_to_ycbcr(x: Tensor, matrix: str = "709") -> Tensor:
    """Full-range non-linear R'G'B' in [0, 1] -> Y'CbCr with Y' in [0, 1], Cb, Cr in [-0.5, 0.5].

    Args:
        x: gamma-encoded R'G'B'.
        matrix: ``"709"`` or ``"2020"`` (non-constant luminance).

    Shape:
        ``(..., 3, H, W)`` -> ``(..., 3, H, W)``, channels (Y', Cb, Cr).
    """
    _check_rgb(x)
    return _apply_matrix(x, _ycbcr_matrix(matrix))


def ycbcr_to_rgb(x: Tensor, matrix: str = "709") -> Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (full range, no clamping).

    Shape:
        ``(..., 3, H, W)`` channels (Y', Cb, Cr) -> ``(..., 3, H, W)`` R'G'B'.
    """
    _check_rgb(x)
    return _apply_matrix(x, np.linalg.inv(_ycbcr_matrix(matrix)))
