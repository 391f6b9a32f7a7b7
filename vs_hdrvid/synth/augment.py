"""Training-time augmentations and LDR-video radiance, after Chen et al. 2021, section 5.1.

* :func:`perturb_tone`: per-channel ``L ** (1 / gamma)``, ``gamma = exp(d)``, ``d ~ U(-0.7, 0.7)``,
  applied to the reference LDR frame to simulate an inaccurate CRF (not stored in the data).
* :func:`add_linear_noise`: zero-mean Gaussian noise in the linear domain of low exposures.
* :class:`Augment`: horizontal/vertical flips, 90-degree rotations and channel permutation, applied
  consistently to every frame and flow of a training window (flows are transformed, not just moved).
* :func:`ldr_to_radiance`: an LDR video turned into scene radiance the way Chen et al. used
  Vimeo-90K: an inverse sigmoid-like CRF with random parameters, a random re-exposure anchor and
  random time reversal. The CRF family ``f(x) = (1 + s) x^n / (x^n + s)`` (``f(1) = 1``) and the
  ranges ``n ~ U(0.7, 1.1)``, ``s ~ U(0.3, 1.0)``, anchor ``EV ~ U(-1, 1)`` are this package's choice.

Convention: images channel-first ``(..., C, H, W)``, flows ``(..., 2, H, W)`` (u, v); numpy arrays
or torch tensors alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["perturb_tone", "add_linear_noise", "Augment", "sample_augment", "sigmoid_crf",
           "sigmoid_crf_inv", "ldr_to_radiance"]


def _lib(x):
    return torch if isinstance(x, torch.Tensor) else np


def perturb_tone(ldr, rng: np.random.Generator, max_log_gamma: float = 0.7, channel_axis: int = -3):
    """Per-channel tone perturbation ``L ** (1 / gamma_c)``, ``gamma_c = exp(U(-d, d))``.

    Chen et al. 2021, section 5.1 (``d = 0.7``), for the reference frame during training.

    Args:
        ldr: gamma-domain LDR in [0, 1], channels on ``channel_axis``.
        rng: numpy Generator.
    """
    c = ldr.shape[channel_axis]
    inv_gamma = np.exp(-rng.uniform(-max_log_gamma, max_log_gamma, c))
    shape = [1] * ldr.ndim
    shape[channel_axis] = c
    e = inv_gamma.reshape(shape)
    if isinstance(ldr, torch.Tensor):
        e = torch.as_tensor(e, dtype=ldr.dtype, device=ldr.device)
    lib = _lib(ldr)
    return lib.clip(ldr, 0.0, 1.0) ** e


def add_linear_noise(linear, rng: np.random.Generator, sigma: float | tuple[float, float] = 1e-3):
    """Zero-mean Gaussian noise in the linear domain; ``sigma`` fixed or drawn from ``U(lo, hi)``.

    Chen et al. 2021, section 5.1 (``sigma = 1e-3``; the range form allows ``U(1e-4, 1e-3)``).
    """
    s = float(rng.uniform(*sigma)) if isinstance(sigma, tuple) else float(sigma)
    n = rng.standard_normal(size=tuple(linear.shape)) * s
    if isinstance(linear, torch.Tensor):
        return linear + torch.as_tensor(n, dtype=linear.dtype, device=linear.device)
    return linear + n.astype(linear.dtype, copy=False)


@dataclass(frozen=True)
class Augment:
    """A geometric/colour augmentation: flips, then ``rot90`` quarter turns, then channel order.

    A quarter turn maps pixel ``(x, y)`` of a ``W``-wide image to ``(y, W - 1 - x)`` and a flow
    vector ``(u, v)`` to ``(v, -u)``.
    """

    hflip: bool = False
    vflip: bool = False
    rot90: int = 0
    perm: tuple[int, int, int] = (0, 1, 2)

    def _geom(self, x):
        lib = _lib(x)
        if self.hflip:
            x = lib.flip(x, -1) if lib is np else torch.flip(x, (-1,))
        if self.vflip:
            x = lib.flip(x, -2) if lib is np else torch.flip(x, (-2,))
        if self.rot90 % 4:
            x = np.rot90(x, self.rot90, axes=(-2, -1)) if lib is np else torch.rot90(x, self.rot90, (-2, -1))
        return x

    def image(self, x):
        """Augment an image ``(..., 3, H, W)`` (or any channel count when ``perm`` is identity)."""
        x = self._geom(x)
        if tuple(self.perm) != (0, 1, 2):
            x = x[..., list(self.perm), :, :]
        return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x.contiguous()

    def mask(self, x):
        """Augment a mask ``(..., H, W)``."""
        x = self._geom(x[..., None, :, :])[..., 0, :, :]
        return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x.contiguous()

    def flow(self, f):
        """Augment a flow ``(..., 2, H, W)``: move the vectors and transform their components."""
        f = self._geom(f)
        u, v = f[..., 0, :, :], f[..., 1, :, :]
        if self.hflip:
            u = -u
        if self.vflip:
            v = -v
        for _ in range(self.rot90 % 4):
            u, v = v, -u
        lib = _lib(f)
        out = lib.stack([u, v], -3) if lib is np else torch.stack([u, v], -3)
        return np.ascontiguousarray(out) if lib is np else out.contiguous()


def sample_augment(rng: np.random.Generator, rotate: bool = True, permute: bool = True) -> Augment:
    """Draw flips (p = 0.5 each), a random number of quarter turns and a channel permutation."""
    return Augment(bool(rng.random() < 0.5), bool(rng.random() < 0.5),
                   int(rng.integers(0, 4)) if rotate else 0,
                   tuple(int(i) for i in rng.permutation(3)) if permute else (0, 1, 2))


def sigmoid_crf(x, n: float, s: float):
    """Sigmoid-like camera response ``f(x) = (1 + s) x^n / (x^n + s)`` on [0, 1]."""
    xn = np.clip(x, 0.0, 1.0) ** n
    return (1.0 + s) * xn / (xn + s)


def sigmoid_crf_inv(ldr, n: float, s: float):
    """Inverse of :func:`sigmoid_crf`: ``x = (s L / (1 + s - L)) ** (1 / n)``."""
    L = np.clip(ldr, 0.0, 1.0)
    return (s * L / (1.0 + s - L)) ** (1.0 / n)


def ldr_to_radiance(frames: np.ndarray, rng: np.random.Generator, n_range=(0.7, 1.1), s_range=(0.3, 1.0),
                    anchor_ev_range=(-1.0, 1.0), reverse_prob: float = 0.5) -> tuple[np.ndarray, dict]:
    """Turn an LDR video into scene radiance on the ``H = f^-1(L) / 2**EV`` scale.

    Chen et al. 2021, section 5.1 (Vimeo-90K as an extra source): the frames are linearised with a
    random inverse sigmoid-like CRF, treated as an exposure at a random anchor EV (so the radiance is
    ``f^-1(L) / 2**anchor``), and the clip is reversed in time with probability ``reverse_prob``.
    Saturated LDR pixels stay at the anchor's clipping level (no detail is invented).

    Args:
        frames: ``(T, H, W, 3)`` uint8/uint16 or float in [0, 1].
        rng: numpy Generator.

    Returns:
        radiance ``(T, H, W, 3)`` float32 and the drawn parameters
        ``{"crf": "sigmoid", "n", "s", "anchor_ev", "reversed"}``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"ldr_to_radiance: expected (T, H, W, 3), got {frames.shape}")
    if np.issubdtype(frames.dtype, np.integer):
        ldr = frames.astype(np.float64) / np.iinfo(frames.dtype).max
    else:
        ldr = frames.astype(np.float64)
    n, s = float(rng.uniform(*n_range)), float(rng.uniform(*s_range))
    anchor = float(rng.uniform(*anchor_ev_range))
    rev = bool(rng.random() < reverse_prob)
    rad = sigmoid_crf_inv(ldr, n, s) / 2.0 ** anchor
    if rev:
        rad = rad[::-1]
    return np.ascontiguousarray(rad, dtype=np.float32), {"crf": "sigmoid", "n": n, "s": s,
                                                         "anchor_ev": anchor, "reversed": rev}
