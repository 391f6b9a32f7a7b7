"""Transfer curves and tone mapping: mu-law, PQ (ST 2084), HLG (BT.2100), Reinhard, BT.709, sRGB.

Convention: tensors are ``(B, C, H, W)`` float (curves are pointwise and accept any shape).
Linear HDR values use the project radiometry ``H = f^-1(L) / 2**EV``; PQ takes *absolute*
luminance in cd/m2 (nits), HLG's OETF takes *relative* scene light in [0, 1].
float16 inputs are evaluated in float32 and returned as float16.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ._checks import check_float, check_positive
from .color import rgb_to_luminance

__all__ = [
    "mulaw",
    "inverse_mulaw",
    "MuLaw",
    "pq_encode",
    "pq_encode_normalized_",
    "pq_encode_normalized_numpy_",
    "pq_decode",
    "hlg_oetf",
    "hlg_inverse_oetf",
    "hlg_system_gamma",
    "hlg_ootf",
    "hlg_ootf_inverse",
    "hlg_display_to_scene",
    "highlight_rolloff",
    "highlight_rolloff_",
    "log_average_luminance",
    "reinhard",
    "Reinhard",
    "bt709_oetf",
    "bt709_inverse_oetf",
    "srgb_encode",
    "srgb_decode",
]

# SMPTE ST 2084 constants.
PQ_M1 = 2610 / 16384
PQ_M2 = 2523 / 4096 * 128
PQ_C1 = 3424 / 4096
PQ_C2 = 2413 / 4096 * 32
PQ_C3 = 2392 / 4096 * 32
PQ_PEAK_NITS = 10000.0
_PQ_K = PQ_C1 * PQ_C3 / PQ_C2 - 1                 # the PQ ratio as c2 / c3 * (1 + k / (1 + c3 p))
_PQ_OFFSET = PQ_M2 * math.log2(PQ_C2 / PQ_C3)

# ITU-R BT.2100 HLG constants.
HLG_A = 0.17883277
HLG_B = 1 - 4 * HLG_A
HLG_C = 0.5 - HLG_A * math.log(4 * HLG_A)

# ITU-R BT.709 OETF constants (exact values that make the two segments meet with equal slope).
BT709_ALPHA = 1.09929682680944
BT709_BETA = 0.018053968510807


def _up(x: Tensor) -> Tensor:
    """float16/bfloat16 -> float32 for the evaluation of steep curves."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


# ----------------------------------------------------------------------------------------- mu-law
def mulaw(x: Tensor, mu: float = 5000.0) -> Tensor:
    """mu-law compression ``log(1 + mu x) / log(1 + mu)`` (Kalantari & Ramamoorthi 2017, Eq. 2).

    Args:
        x: linear values, normally in [0, 1] (negative values are clamped to 0).
        mu: compression amount; 5000 is the HDR-video evaluation standard.

    Returns:
        compressed values; [0, 1] maps onto [0, 1].

    Shape:
        any -> same.
    """
    check_float(x)
    check_positive(mu, "mu")
    y = torch.log1p(mu * _up(x).clamp_min(0)) / math.log1p(mu)
    return y.to(x.dtype)


def inverse_mulaw(y: Tensor, mu: float = 5000.0) -> Tensor:
    """Inverse of :func:`mulaw`: ``((1 + mu) ** y - 1) / mu``.

    Shape:
        any -> same.
    """
    check_float(y, "y")
    check_positive(mu, "mu")
    x = torch.expm1(_up(y) * math.log1p(mu)) / mu
    return x.to(y.dtype)


class MuLaw(nn.Module):
    """Module form of :func:`mulaw` (``inverse=True`` gives :func:`inverse_mulaw`)."""

    def __init__(self, mu: float = 5000.0, inverse: bool = False) -> None:
        super().__init__()
        self.mu, self.inverse = float(mu), bool(inverse)

    def forward(self, x: Tensor) -> Tensor:
        return inverse_mulaw(x, self.mu) if self.inverse else mulaw(x, self.mu)

    def extra_repr(self) -> str:
        return f"mu={self.mu}, inverse={self.inverse}"


# --------------------------------------------------------------------------------------------- PQ
def pq_encode(nits: Tensor) -> Tensor:
    """SMPTE ST 2084 inverse EOTF: absolute luminance (cd/m2) -> PQ signal in [0, 1].

    Values are clamped to [0, 10000] nits. ``pq_encode(0) = c1 ** m2 ~= 7.3e-7``, 100 nits ->
    0.508078, 1000 nits -> 0.751827, 10000 nits -> 1.

    Shape:
        any -> same.
    """
    check_float(nits, "nits")
    x = _up(nits)
    out = x / PQ_PEAK_NITS if x is nits else x.div_(PQ_PEAK_NITS)
    return pq_encode_normalized_(out).to(nits.dtype)


def pq_encode_normalized_(y: Tensor) -> Tensor:
    """:func:`pq_encode` of ``y * 10000`` nits, in place on ``y`` (float32/64), which it returns.

    With ``p = y ** m1`` and ``D = 1 + c3 p``, the ratio ``(c1 + c2 p) / D`` is
    ``c2 / c3 * (1 + (c1 c3 / c2 - 1) / D)``, so the signal is
    ``exp2(m2 (log2(c2 / c3) + log1p((c1 c3 / c2 - 1) / D) / ln 2))``: one buffer, vectorised
    transcendentals instead of ``pow``, and within 3e-7 of the float64 curve in float32 (``pow``
    of the ratio is within 1.4e-5: it raises the ratio's rounding to the power 78.8). Where autograd
    records ``y`` the same formula runs out of place and a new tensor is returned.

    Shape:
        any -> same.
    """
    k, offset = _PQ_K, _PQ_OFFSET
    if torch.is_grad_enabled() and y.requires_grad:
        p = torch.exp2(PQ_M1 * torch.log2(y.clamp(0, 1)))
        return torch.exp2(PQ_M2 / math.log(2) * torch.log1p(k / (1 + PQ_C3 * p)) + offset)
    y.clamp_(0, 1).log2_().mul_(PQ_M1).exp2_()                          # p = y ** m1
    y.mul_(PQ_C3).add_(1).reciprocal_().mul_(k).log1p_()                # ln(r * c3 / c2)
    return y.mul_(PQ_M2 / math.log(2)).add_(offset).exp2_()


def pq_encode_normalized_numpy_(y: np.ndarray) -> np.ndarray:
    """:func:`pq_encode_normalized_` on a float32 array, in place, through numpy's SIMD curves.

    The same formula, step for step; numpy's vectorised ``log2``, ``exp2`` and ``log1p`` are about
    twice as fast as torch's on CPU and as accurate: both are within 3e-7 of the float64 curve
    (the largest difference between the two is 4e-7, below a 16-bit code's 1.5e-5).

    Shape:
        any -> same.
    """
    x = np.clip(y, 0, 1, out=y)
    with np.errstate(divide="ignore"):  # log2(0) = -inf, and exp2(-inf) = 0, as in torch
        np.log2(x, out=x)
    x *= np.float32(PQ_M1)
    np.exp2(x, out=x)                                                   # p = y ** m1
    x *= np.float32(PQ_C3)
    x += np.float32(1)
    np.reciprocal(x, out=x)
    x *= np.float32(_PQ_K)
    np.log1p(x, out=x)                                                  # ln(r * c3 / c2)
    x *= np.float32(PQ_M2 / math.log(2))
    x += np.float32(_PQ_OFFSET)
    return np.exp2(x, out=x)


def pq_decode(signal: Tensor) -> Tensor:
    """SMPTE ST 2084 EOTF: PQ signal in [0, 1] -> absolute luminance in cd/m2.

    Shape:
        any -> same.
    """
    check_float(signal, "signal")
    ep = _up(signal).clamp(0, 1).pow(1 / PQ_M2)
    y = ((ep - PQ_C1).clamp_min(0) / (PQ_C2 - PQ_C3 * ep)).pow(1 / PQ_M1)
    return (y * PQ_PEAK_NITS).to(signal.dtype)


# -------------------------------------------------------------------------------------------- HLG
def hlg_oetf(e: Tensor) -> Tensor:
    """BT.2100 HLG OETF: relative scene linear light E in [0, 1] -> signal E' in [0, 1].

    ``E' = sqrt(3 E)`` for ``E <= 1/12``, else ``a ln(12 E - b) + c``. Input is clamped to [0, 1].

    Shape:
        any -> same.
    """
    check_float(e, "e")
    x = _up(e).clamp(0, 1)
    low = torch.sqrt(3 * x)
    high = HLG_A * torch.log((12 * x - HLG_B).clamp_min(1e-12)) + HLG_C
    return torch.where(x <= 1 / 12, low, high).to(e.dtype)


def hlg_inverse_oetf(signal: Tensor) -> Tensor:
    """Inverse of :func:`hlg_oetf`: HLG signal E' in [0, 1] -> relative scene light E in [0, 1].

    Shape:
        any -> same.
    """
    check_float(signal, "signal")
    s = _up(signal).clamp(0, 1)
    low = s * s / 3
    high = (torch.exp((s - HLG_C) / HLG_A) + HLG_B) / 12
    return torch.where(s <= 0.5, low, high).to(signal.dtype)


def hlg_system_gamma(peak_nits: float = 1000.0) -> float:
    """HLG OOTF system gamma for a display of nominal peak ``Lw`` cd/m2.

    ``1.2 + 0.42 log10(Lw / 1000)`` for 400 <= Lw <= 2000 (BT.2100-2, Table 5, note 5c); outside
    that range the extended model ``1.2 * 1.111 ** log2(Lw / 1000)`` of Report BT.2390 (section
    6.2), which BT.2100 refers to there. Within the range the two differ by up to 0.02 (400 nits)
    and 0.007 (2000 nits), several 10-bit codes of the HLG signal.

    Example:
        >>> round(hlg_system_gamma(400), 4), round(hlg_system_gamma(2000), 4)
        (1.0329, 1.3264)
    """
    if not peak_nits > 0:
        raise ValueError(f"peak_nits must be positive, got {peak_nits}")
    if 400.0 <= peak_nits <= 2000.0:
        return 1.2 + 0.42 * math.log10(peak_nits / 1000.0)
    return 1.2 * 1.111 ** math.log2(peak_nits / 1000.0)


def hlg_ootf(e: Tensor, peak_nits: float = 1000.0) -> Tensor:
    """HLG OOTF: relative scene light RGB in [0, 1] -> display light in cd/m2 (black level 0).

    ``F_D = Lw * Ys ** (gamma - 1) * E`` with ``Ys`` the BT.2020 luminance of ``E``.

    Shape:
        ``(..., 3, H, W)`` -> same.
    """
    check_float(e, "e")
    gamma = hlg_system_gamma(peak_nits)
    x = _up(e).clamp_min(0)
    ys = rgb_to_luminance(x, "2020")
    return (peak_nits * ys.clamp_min(1e-12).pow(gamma - 1) * x).to(e.dtype)


def hlg_ootf_inverse(nits: Tensor, peak_nits: float = 1000.0) -> Tensor:
    """Inverse HLG OOTF: display light RGB in cd/m2 -> relative scene light in [0, 1].

    ``Ys = (Yd / Lw) ** (1 / gamma)``, ``E = F_D / Lw * Ys ** (1 - gamma)`` on BT.2020 luminance,
    so colour ratios are kept. Scene light above 1 (display light above ``peak_nits``) is not clipped.

    Args:
        nits: linear BT.2020 RGB display light in cd/m2.
        peak_nits: nominal peak luminance ``Lw`` of the HLG display.

    Shape:
        ``(..., 3, H, W)`` -> same.
    """
    check_float(nits, "nits")
    gamma = hlg_system_gamma(peak_nits)
    fd = _up(nits).clamp_min(0) / peak_nits
    yd = rgb_to_luminance(fd, "2020").clamp_min(1e-12)
    ys = yd.pow(1 / gamma)
    return (fd * ys.pow(1 - gamma)).to(nits.dtype)


def hlg_display_to_scene(nits: Tensor, peak_nits: float = 1000.0) -> Tensor:
    """Alias of :func:`hlg_ootf_inverse`: display light (cd/m2) -> HLG scene light for the OETF."""
    return hlg_ootf_inverse(nits, peak_nits)


# --------------------------------------------------------------------------------------- Reinhard
def highlight_rolloff_(nits: Tensor, peak: float, knee: float, brightest: Tensor | None = None,
                       work: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Compress display light above ``knee`` smoothly towards ``peak``, in place (slope 1 at the knee).

    Applied to the brightest channel ``m = max(R, G, B)`` with the channels scaled alike, so hues
    are kept: ``m`` becomes ``knee + span * (m - knee) / (m - knee + span)`` with ``span = peak -
    knee`` where it passes the knee, and stays as it is below (the scale is exactly 1 there).

    Args:
        nits: display light, modified in place.
        brightest: ``nits.amax(-3, keepdim=True)`` when the caller has it (scaled in place too).
        work: two buffers of the brightest channel's shape for the intermediate values (new
            ones when None).

    Returns:
        the brightest channel after the roll-off.

    Shape:
        ``nits (..., 3, H, W)``, ``brightest`` and ``work`` ``(..., 1, H, W)``.
    """
    m = nits.amax(-3, keepdim=True) if brightest is None else brightest
    if not float(m.max()) > knee:  # nothing passes the knee: every scale would be 1
        return m
    a, b = work if work is not None else (torch.empty_like(m), torch.empty_like(m))
    span = peak - knee
    over = torch.sub(m, knee, out=a).clamp_(min=0)
    den = torch.add(over, span, out=b)
    scale = over.mul_(span).div_(den).add_(knee).div_(m)                # target / m
    scale.masked_fill_(m <= knee, 1.0)
    nits.mul_(scale)
    return m.mul_(scale)


def highlight_rolloff(nits: Tensor, peak: float, knee: float) -> Tensor:
    """:func:`highlight_rolloff_` on a copy of ``nits``.

    Shape:
        ``(..., 3, H, W)`` -> same.
    """
    out = nits.clone()
    highlight_rolloff_(out, peak, knee)
    return out


def _luminance(x: Tensor, primaries: str) -> Tensor:
    return x if x.shape[-3] == 1 else rgb_to_luminance(x, primaries)


def log_average_luminance(x: Tensor, eps: float = 1e-6, primaries: str = "709") -> Tensor:
    """Geometric mean luminance ``exp(mean(log(eps + Y)))`` per image (Reinhard et al. 2002, Eq. 1).

    Args:
        x: linear RGB (or one-channel luminance).
        eps: guard against log(0).
        primaries: luminance weights, ``"709"`` or ``"2020"``.

    Returns:
        one value per batch element.

    Shape:
        ``(B, 3, H, W)`` or ``(B, 1, H, W)`` -> ``(B,)``.
    """
    check_float(x)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must be (B, 1|3, H, W), got {tuple(x.shape)}")
    y = _luminance(_up(x).clamp_min(0), primaries)
    return torch.exp(torch.log(eps + y).mean(dim=(1, 2, 3))).to(x.dtype)


def reinhard(
    x: Tensor,
    key: float = 0.18,
    white: float | None = None,
    log_avg: Tensor | float | None = None,
    primaries: str = "709",
) -> Tensor:
    """Global Reinhard operator (Reinhard et al. 2002, Eqs. 2-4) on luminance, colour ratios kept.

    ``Lm = key / log_avg * Y``; ``Ld = Lm (1 + Lm / white**2) / (1 + Lm)`` (``Lm / (1 + Lm)``
    when ``white`` is None); output ``x * Ld / Y``.

    Args:
        x: linear RGB (any scale).
        key: middle-grey target of the scaled image.
        white: smallest *scaled* luminance ``Lm`` mapped to 1; None = infinite (no burn-out).
        log_avg: per-image log-average luminance ``(B,)`` or a float; computed from ``x`` when
            None. Pass a temporally smoothed value for video to avoid flicker.
        primaries: luminance weights, ``"709"`` or ``"2020"``.

    Returns:
        display-referred linear RGB; luminance in [0, 1] (RGB channels may exceed 1 for
        saturated colours; clamp before encoding).

    Shape:
        ``(B, 3, H, W)`` or ``(B, 1, H, W)`` -> same.
    """
    check_float(x)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must be (B, 1|3, H, W), got {tuple(x.shape)}")
    if key <= 0 or (white is not None and white <= 0):
        raise ValueError(f"key and white must be positive, got key={key}, white={white}")
    xf = _up(x).clamp_min(0)
    y = _luminance(xf, primaries)  # (B, 1, H, W)
    if log_avg is None:
        log_avg = log_average_luminance(xf, primaries=primaries)
    la = torch.as_tensor(log_avg, dtype=xf.dtype, device=xf.device).reshape(-1, 1, 1, 1)
    lm = key / la.clamp_min(1e-12) * y
    ld = lm / (1 + lm) if white is None else lm * (1 + lm / (white * white)) / (1 + lm)
    return (xf * (ld / y.clamp_min(1e-12))).to(x.dtype)


class Reinhard(nn.Module):
    """Module form of :func:`reinhard` with fixed ``key``, ``white`` and ``primaries``."""

    def __init__(self, key: float = 0.18, white: float | None = None, primaries: str = "709") -> None:
        super().__init__()
        self.key, self.white, self.primaries = key, white, primaries

    def forward(self, x: Tensor, log_avg: Tensor | float | None = None) -> Tensor:
        return reinhard(x, self.key, self.white, log_avg, self.primaries)

    def extra_repr(self) -> str:
        return f"key={self.key}, white={self.white}, primaries={self.primaries!r}"


# ---------------------------------------------------------------------------------- SDR encodings
def bt709_oetf(x: Tensor) -> Tensor:
    """BT.709 OETF: linear [0, 1] -> non-linear signal [0, 1] (``4.5 L`` below 0.018).

    Shape:
        any -> same.
    """
    check_float(x)
    xf = _up(x).clamp(0, 1)
    high = BT709_ALPHA * xf.clamp_min(BT709_BETA).pow(0.45) - (BT709_ALPHA - 1)
    return torch.where(xf < BT709_BETA, 4.5 * xf, high).to(x.dtype)


def bt709_inverse_oetf(v: Tensor) -> Tensor:
    """Inverse of :func:`bt709_oetf`: signal [0, 1] -> linear [0, 1].

    Shape:
        any -> same.
    """
    check_float(v, "v")
    vf = _up(v).clamp(0, 1)
    high = ((vf.clamp_min(4.5 * BT709_BETA) + BT709_ALPHA - 1) / BT709_ALPHA).pow(1 / 0.45)
    return torch.where(vf < 4.5 * BT709_BETA, vf / 4.5, high).to(v.dtype)


def srgb_encode(x: Tensor) -> Tensor:
    """IEC 61966-2-1 sRGB encoding: linear [0, 1] -> non-linear [0, 1].

    Shape:
        any -> same.
    """
    check_float(x)
    xf = _up(x).clamp(0, 1)
    high = 1.055 * xf.clamp_min(0.0031308).pow(1 / 2.4) - 0.055
    return torch.where(xf <= 0.0031308, 12.92 * xf, high).to(x.dtype)


def srgb_decode(v: Tensor) -> Tensor:
    """Inverse of :func:`srgb_encode`.

    Shape:
        any -> same.
    """
    check_float(v, "v")
    vf = _up(v).clamp(0, 1)
    high = ((vf.clamp_min(0.04045) + 0.055) / 1.055).pow(2.4)
    return torch.where(vf <= 0.04045, vf / 12.92, high).to(v.dtype)
