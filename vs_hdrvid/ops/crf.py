"""Camera response: gamma curves, a per-channel inverse-response lookup table, Debevec & Malik.

Convention: the radiometry of the whole project is ``H = f^-1(L) / 2**EV`` with ``L`` the LDR
value in [0, 1], ``f`` the camera response and EV the exposure in stops (so the exposure time of
Debevec & Malik is ``dt = 2**EV``). Image tensors are ``(B, C, H, W)`` (or ``(C, H, W)``) with the
channel axis at ``-3``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ._checks import check_float, check_positive

__all__ = ["gamma_to_linear", "linear_to_gamma", "CRF", "estimate_crf_debevec"]


def gamma_to_linear(L: Tensor, gamma: float = 2.2) -> Tensor:
    """Inverse of a pure power response: ``clamp(L, 0, 1) ** gamma``.

    Shape:
        any -> same.
    """
    check_float(L, "L")
    check_positive(gamma, "gamma")
    return L.clamp(0, 1).pow(gamma)


def linear_to_gamma(x: Tensor, gamma: float = 2.2) -> Tensor:
    """Pure power response: ``clamp(x, 0, 1) ** (1 / gamma)`` (values above 1 saturate).

    Shape:
        any -> same.
    """
    check_float(x)
    check_positive(gamma, "gamma")
    return x.clamp(0, 1).pow(1.0 / gamma)


def _validate_lut(inv: np.ndarray, where: str) -> np.ndarray:
    """Check an inverse-response table; returns it as float64 ``(C, N)``."""
    if inv.ndim == 1:
        inv = inv[None]
    if inv.ndim != 2 or inv.shape[0] not in (1, 3) or inv.shape[1] < 2:
        raise ValueError(f"{where}: inverse response must be (1|3, N >= 2), got shape {inv.shape}")
    if not np.isfinite(inv).all():
        raise ValueError(f"{where}: inverse response contains NaN or infinite values")
    if (np.diff(inv, axis=1) < 0).any():
        raise ValueError(f"{where}: inverse response is not monotone non-decreasing")
    if np.abs(inv[:, 0]).max() > 1e-6 or np.abs(inv[:, -1] - 1).max() > 1e-6:
        raise ValueError(f"{where}: inverse response must satisfy f^-1(0) = 0 and f^-1(1) = 1, "
                         f"got {inv[:, 0].tolist()} and {inv[:, -1].tolist()}")
    inv = inv.astype(np.float64, copy=True)
    inv[:, 0], inv[:, -1] = 0.0, 1.0
    return inv


class CRF:
    """Inverse camera response ``f^-1`` as a per-channel lookup table of N samples over [0, 1].

    Sample ``k`` of channel ``c`` is ``f^-1(k / (N - 1))`` for that channel; values between samples
    are interpolated linearly. The table is monotone non-decreasing with ``f^-1(0) = 0`` and
    ``f^-1(1) = 1``. A table with one channel applies to every channel of the input.

    Args:
        inverse: ``(C, N)`` or ``(N,)`` table, ``C`` in {1, 3}.
        source: free-form provenance stored with the table (e.g. ``"gamma 2.2"``).

    Raises:
        ValueError: the table has the wrong shape, NaNs, is not monotone or not normalised.

    Example:
        >>> crf = CRF.gamma(2.2)
        >>> lin = crf.to_linear(torch.rand(1, 3, 8, 8))
        >>> ldr = crf.to_ldr(lin)
    """

    def __init__(self, inverse: np.ndarray | Tensor | Sequence, source: str = "") -> None:
        arr = inverse.detach().cpu().numpy() if isinstance(inverse, Tensor) else np.asarray(inverse, dtype=np.float64)
        self.inverse = _validate_lut(np.asarray(arr, dtype=np.float64), "CRF")  # (C, N) float64
        self.source = str(source)
        self._cache: dict[tuple, Tensor] = {}

    # ------------------------------------------------------------------ constructors and files
    @classmethod
    def gamma(cls, g: float = 2.2, n: int = 1024, channels: int = 3) -> "CRF":
        """Table of the pure power response ``f^-1(L) = L ** g``."""
        if g <= 0 or n < 2:
            raise ValueError(f"need gamma > 0 and n >= 2, got g={g}, n={n}")
        lut = np.linspace(0.0, 1.0, n) ** g
        return cls(np.repeat(lut[None], channels, axis=0), source=f"gamma {g:g}")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "CRF":
        """Load a table written by :meth:`save`.

        Raises:
            OSError: the file cannot be read.
            ValueError: not JSON, not ``kind == "lut"``, or the table is malformed.
        """
        text = Path(path).read_text()
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a JSON camera response file ({e})") from e
        if not isinstance(obj, dict) or obj.get("kind") != "lut" or "inverse" not in obj:
            raise ValueError(f"{path}: expected an object with kind 'lut' and an 'inverse' table")
        try:
            inv = np.asarray(obj["inverse"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: 'inverse' must be a list of equally long number lists ({e})") from e
        return cls(_validate_lut(inv, str(path)), source=obj.get("source", str(path)))

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as human-readable JSON ``{"kind": "lut", "inverse": [[...]], "source": ...}``."""
        rows = ",\n    ".join(json.dumps([round(float(v), 9) for v in row]) for row in self.inverse)
        text = ('{\n  "kind": "lut",\n  "source": ' + json.dumps(self.source)
                + ',\n  "inverse": [\n    ' + rows + "\n  ]\n}\n")
        tmp = Path(f"{os.fspath(path)}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    @property
    def channels(self) -> int:
        return self.inverse.shape[0]

    @property
    def size(self) -> int:
        return self.inverse.shape[1]

    def __repr__(self) -> str:
        return f"CRF(channels={self.channels}, size={self.size}, source={self.source!r})"

    # ---------------------------------------------------------------------------- evaluation
    def _tables(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-device tables, float32 (float64 for float64 input), built once.

        Returns:
            ``lut`` ``(C, N)``; ``fwd`` ``(C * N, 2)`` rows ``(f^-1(k), slope to k + 1)``;
            ``inv`` ``(C, N, 2)`` rows ``(f^-1(k - 1), 1 / (f^-1(k) - f^-1(k - 1)))`` (0 on flats).
        """
        dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        key = (like.device, dtype)
        if key not in self._cache:
            lut = torch.as_tensor(self.inverse, dtype=torch.float64)
            step = lut.diff(dim=1)  # (C, N - 1)
            fwd = torch.stack((lut, torch.cat((step, torch.zeros_like(step[:, :1])), 1)), -1).reshape(-1, 2)
            rate = torch.where(step > 0, 1 / step.clamp_min(1e-300), torch.zeros_like(step))
            inv = torch.stack((lut[:, :-1], rate), -1)  # indexed by k - 1
            inv = torch.cat((inv[:, :1], inv), 1)  # (C, N, 2) indexed by k
            self._cache[key] = tuple(t.to(device=like.device, dtype=dtype).contiguous() for t in (lut, fwd, inv))
        return self._cache[key]

    def _check_input(self, x: Tensor, name: str) -> int:
        check_float(x, name)
        if x.dim() < 3:
            raise ValueError(f"{name} must be (..., C, H, W), got {tuple(x.shape)}")
        c = x.shape[-3]
        if self.channels != 1 and c != self.channels:
            raise ValueError(f"{name} has {c} channels but the response table has {self.channels}")
        return c

    def to_linear(self, L: Tensor) -> Tensor:
        """LDR -> linear: ``f^-1(L)`` by gather + lerp in the table (``L`` clamped to [0, 1]).

        Shape:
            ``(..., C, H, W)`` -> same; ``C`` equals the table's channels unless it has one.
        """
        c = self._check_input(L, "L")
        lut, fwd, _ = self._tables(L)
        n = lut.shape[1]
        pos = L.to(lut.dtype).clamp(0, 1).mul_(n - 1)
        idx = pos.long()  # floor, as pos >= 0; idx == n - 1 only at L == 1, whose slope is 0
        frac = pos.sub_(idx)
        if self.channels > 1:  # offset every channel into the flattened (C * N) table
            idx += (torch.arange(c, device=L.device) * n).view(c, 1, 1)
        t = fwd.index_select(0, idx.reshape(-1)).view(*idx.shape, 2)
        return torch.addcmul(t[..., 0], frac, t[..., 1]).to(L.dtype)

    def to_ldr(self, x: Tensor) -> Tensor:
        """Linear -> LDR: ``f(x)``, the exact inverse of :meth:`to_linear` (searchsorted + lerp).

        ``x`` is clamped to [0, 1]; a flat stretch of the table maps to its first sample.

        Shape:
            ``(..., C, H, W)`` -> same.
        """
        c = self._check_input(x, "x")
        lut, _, inv = self._tables(x)
        v = x.to(lut.dtype).clamp(0, 1)
        if self.channels == 1 or bool((lut == lut[:1]).all()):  # one table for every channel
            return self._invert(v, lut[0], inv[0]).to(x.dtype)
        return torch.stack([self._invert(v[..., k, :, :], lut[k], inv[k]) for k in range(c)], -3).to(x.dtype)

    @staticmethod
    def _invert(v: Tensor, lut: Tensor, inv: Tensor) -> Tensor:
        n = lut.shape[0]
        k = torch.searchsorted(lut, v.contiguous()).clamp_(1, n - 1)  # lut[k - 1] < v <= lut[k]
        t = inv.index_select(0, k.reshape(-1)).view(*k.shape, 2)
        frac = (v - t[..., 0]).mul_(t[..., 1]).clamp_(0, 1)
        return (k - 1).to(v.dtype).add_(frac).div_(n - 1)


# ------------------------------------------------------------------------------------- Debevec
def _to_levels(img: np.ndarray, levels: int) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8 and levels == 256:
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float64) / np.iinfo(a.dtype).max
    return np.clip(np.rint(a.astype(np.float64) * (levels - 1)), 0, levels - 1).astype(np.int64)


def _hat(levels: int, lo: int, hi: int) -> np.ndarray:
    """Debevec & Malik hat weights ``w(z)``: peak 1 at mid-grey, zero at and outside ``(lo, hi)``.

    Zero weight at the clipping levels keeps saturated samples (whose true exposure is unknown)
    out of the data term; the smoothness term extrapolates ``g`` there.
    """
    z = np.arange(levels, dtype=np.float64)
    mid = (lo + hi) / 2
    return np.clip(np.minimum(z - lo, hi - z) / (mid - lo), 0, 1)


def _sample_pixels(z: np.ndarray, n_samples: int, levels: int, rng: np.random.Generator,
                   lo: int, hi: int) -> np.ndarray:
    """Pick pixel indices spread over the intensity range and usable in at least one frame.

    Args:
        z: ``(P, M)`` levels of one channel for P exposures and M pixels (sorted by EV).
    """
    usable = ((z > lo) & (z < hi)).any(axis=0)
    cand = np.flatnonzero(usable)
    if cand.size == 0:
        raise ValueError("no pixel is well exposed in any frame")
    key = z[z.shape[0] // 2, cand]  # stratify on the middle exposure
    n_bins = 32
    bins = np.minimum(key * n_bins // levels, n_bins - 1)
    per_bin = max(1, math.ceil(n_samples / n_bins))
    chosen = []
    for b in range(n_bins):
        members = cand[bins == b]
        if members.size:
            chosen.append(rng.choice(members, size=min(per_bin, members.size), replace=False))
    idx = np.concatenate(chosen)
    if idx.size > n_samples:
        idx = rng.choice(idx, size=n_samples, replace=False)
    return np.sort(idx)


def _solve_channel(z: np.ndarray, log_dt: np.ndarray, levels: int, smoothness: float,
                   lo: int, hi: int) -> np.ndarray:
    """Debevec & Malik 1997 Eq. 3 least squares for one channel; returns ``g(z) = ln f^-1(z)``.

    The normal equations are assembled directly and the per-pixel unknowns ``ln E_i`` (a diagonal
    block) are eliminated by a Schur complement, leaving a ``levels x levels`` system.

    Args:
        z: ``(P, S)`` sampled levels, P exposures, S pixels.
        log_dt: ``(P,)`` log exposure times.
    """
    p, s = z.shape
    w = _hat(levels, lo, hi)
    w2 = w[z] ** 2  # (P, S) squared data weights
    rhs = w2 * log_dt[:, None]  # (P, S)
    # data term sum w^2 (g[z] - lnE_i - ln dt_j)^2
    a_gg = np.zeros((levels, levels))
    np.add.at(a_gg, (z.ravel(), z.ravel()), w2.ravel())
    a_ge = np.zeros((levels, s))
    np.add.at(a_ge, (z.ravel(), np.tile(np.arange(s), p)), -w2.ravel())
    a_ee = w2.sum(0) + 1e-9  # (S,) diagonal block
    b_g = np.zeros(levels)
    np.add.at(b_g, z.ravel(), rhs.ravel())
    b_e = -rhs.sum(0)
    # g(mid) = 0 fixes the free scale
    a_gg[levels // 2, levels // 2] += 1.0
    # smoothness, scaled so that its weight does not depend on the number of samples; a floor on
    # its weight lets it extrapolate g beyond the well-exposed range
    lam = smoothness * math.sqrt(p * s / levels)
    k = np.arange(1, levels - 1)
    d = np.zeros((levels - 2, levels))
    ws = lam * np.maximum(w[k], 0.1)
    d[k - 1, k - 1], d[k - 1, k], d[k - 1, k + 1] = ws, -2 * ws, ws
    a_gg += d.T @ d
    schur = a_gg - (a_ge / a_ee) @ a_ge.T
    return np.linalg.solve(schur, b_g - a_ge @ (b_e / a_ee))


def estimate_crf_debevec(
    images: Sequence[np.ndarray],
    ev: Sequence[float],
    n_samples: int = 512,
    smoothness: float = 20.0,
    levels: int = 256,
    seed: int = 0,
    well_exposed: tuple[float, float] = (0.02, 0.98),
) -> CRF:
    """Recover the inverse camera response from a static bracket (Debevec & Malik 1997, Sec. 2.1).

    Solves, per channel, ``min sum w(Z)[g(Z) - ln E - ln dt]^2 + lambda sum w(z) g''(z)^2`` with
    ``g = ln f^-1``, hat weights ``w`` and ``dt = 2**EV``; then normalises ``f^-1(1) = 1``, sets
    ``f^-1(0) = 0`` and makes the table monotone.

    Args:
        images: aligned frames of a static scene, each ``(H, W, 3)`` (or ``(H, W)``) uint8 or float
            in [0, 1]; at least two, with different EV.
        ev: exposure of each frame in stops (the radiometry's EV).
        n_samples: pixels sampled per channel (seeded, stratified over intensity).
        smoothness: weight of the second-derivative prior.
        levels: quantisation levels of the table (256 for 8-bit input).
        seed: seed of the pixel sampler.
        well_exposed: LDR range counted as usable when picking pixels.

    Returns:
        a :class:`CRF` with ``levels`` samples per channel.

    Raises:
        ValueError: mismatched inputs, fewer than two distinct exposures, or no usable pixel.
    """
    if len(images) != len(ev) or len(images) < 2:
        raise ValueError(f"need at least two images and one EV per image, got {len(images)} and {len(ev)}")
    if len(set(float(e) for e in ev)) < 2:
        raise ValueError("the exposures must differ")
    if levels < 4 or n_samples < 2:
        raise ValueError(f"need levels >= 4 and n_samples >= 2, got {levels} and {n_samples}")
    shapes = {np.shape(im) for im in images}
    if len(shapes) != 1 or len(next(iter(shapes))) not in (2, 3):
        raise ValueError(f"images must share one (H, W[, C]) shape, got {sorted(shapes)}")
    order = np.argsort(np.asarray(ev, dtype=np.float64))
    z = np.stack([_to_levels(images[i], levels) for i in order])  # (P, H, W[, C])
    if z.ndim == 3:
        z = z[..., None]
    z = z.reshape(z.shape[0], -1, z.shape[-1])  # (P, M, C)
    log_dt = np.asarray(ev, dtype=np.float64)[order] * math.log(2)
    lo, hi = (int(round(t * (levels - 1))) for t in well_exposed)
    rng = np.random.default_rng(seed)
    tables = []
    for c in range(z.shape[-1]):
        zc = z[..., c]
        idx = _sample_pixels(zc, n_samples, levels, rng, lo, hi)
        g = _solve_channel(zc[:, idx], log_dt, levels, smoothness, lo, hi)
        inv = np.exp(g - g[-1])
        inv = np.maximum.accumulate(np.clip(inv, 0, None))
        inv = np.minimum(inv / inv[-1], 1.0)
        inv[0] = 0.0
        tables.append(inv)
    src = f"debevec levels={levels} samples={n_samples} smoothness={smoothness:g} seed={seed} ev={list(map(float, ev))}"
    return CRF(np.stack(tables), source=src)
