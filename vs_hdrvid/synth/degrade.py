"""Camera simulation: exposure, clipping, noise, quantisation and the gamma CRF.

Two recipes, both applied in the linear exposed domain ``x = clip(H * 2**EV, 0, 1)``:

* ``clean`` (Chen et al. 2021, section 5.1 and 5.2): zero-mean Gaussian noise of standard
  deviation ``sigma`` (1e-3 in the paper) added in the linear domain of the low exposures (every
  exposure below the pattern's longest), then the gamma 2.2 CRF and 8-bit quantisation.
* ``day`` / ``night`` (DeAltHDR section 4.1 and Appendix A): clipping, heteroscedastic Gaussian noise
  ``N ~ N(0, lambda_read + lambda_shot * x)`` (Eq. A) with the day/night parameter distributions of
  Eq. B, and 10-bit linear quantisation. The "raw-like" domain is the linear exposed signal itself
  (no colour-matrix or white-balance inversion). Frames are then gamma encoded into 16-bit PNGs.

A third model, a Bayer sensor with Poisson-Gaussian, fixed-pattern and banding noise that the
training recipes never show, lives in :mod:`vs_hdrvid.synth.sensor` (the ``shifted`` preset).

Eq. B writes ``log``; it is the natural logarithm (as in Brooks et al.'s unprocessing, which the
paper follows).

Convention: arrays ``(..., 3)`` or any shape, float; ``rng`` is a ``numpy.random.Generator``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["GAMMA", "crf_gamma", "crf_gamma_inv", "expose", "quantize", "gaussian_noise",
           "heteroscedastic_noise", "sample_dealthdr_noise", "NoiseModel", "camera_pipeline",
           "DEALTHDR_EQ_B"]

GAMMA = 2.2

#: DeAltHDR Appendix A, Eq. B: log(lambda_shot) ~ U(log lo, log hi);
#: log(lambda_read) | log(lambda_shot) ~ N(slope * log(lambda_shot) + intercept, std^2)
DEALTHDR_EQ_B = {
    "day": {"shot_lo": 0.00014, "shot_hi": 0.00066, "slope": 1.428, "intercept": 1.215, "std": 0.28},
    "night": {"shot_lo": 0.0021, "shot_hi": 0.0086, "slope": 1.692, "intercept": 0.418, "std": 0.25},
}


def crf_gamma(x, gamma: float = GAMMA):
    """Camera response ``f(x) = clip(x, 0, 1) ** (1 / gamma)`` (linear -> LDR)."""
    return np.clip(x, 0.0, 1.0) ** (1.0 / gamma)


def crf_gamma_inv(ldr, gamma: float = GAMMA):
    """Inverse response ``f^-1(L) = clip(L, 0, 1) ** gamma`` (LDR -> linear)."""
    return np.clip(ldr, 0.0, 1.0) ** gamma


def expose(h: np.ndarray, ev: float) -> np.ndarray:
    """Linear exposed signal ``clip(H * 2**EV, 0, 1)`` (sensor saturation)."""
    return np.clip(h * (2.0 ** ev), 0.0, 1.0)


def quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """Round ``x`` in [0, 1] to ``2**bits - 1`` levels (float64 result)."""
    q = float(2 ** bits - 1)
    return np.round(np.clip(x, 0.0, 1.0) * q) / q


def gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``x + N(0, sigma^2)`` (Chen et al. 2021, section 5.1: noise in the linear domain)."""
    return x + rng.normal(0.0, sigma, size=x.shape)


def heteroscedastic_noise(x: np.ndarray, lambda_shot: float, lambda_read: float,
                          rng: np.random.Generator) -> np.ndarray:
    """``x + N(0, lambda_read + lambda_shot * x)`` (DeAltHDR Appendix A, Eq. A)."""
    var = lambda_read + lambda_shot * np.clip(x, 0.0, None)
    return x + rng.standard_normal(size=x.shape) * np.sqrt(var)


def sample_dealthdr_noise(kind: str, rng: np.random.Generator) -> tuple[float, float]:
    """Draw ``(lambda_shot, lambda_read)`` from DeAltHDR Appendix A, Eq. B (``kind``: day or night)."""
    if kind not in DEALTHDR_EQ_B:
        raise ValueError(f"sample_dealthdr_noise: kind must be 'day' or 'night', got {kind!r}")
    p = DEALTHDR_EQ_B[kind]
    log_shot = rng.uniform(math.log(p["shot_lo"]), math.log(p["shot_hi"]))
    log_read = rng.normal(p["slope"] * log_shot + p["intercept"], p["std"])
    return float(math.exp(log_shot)), float(math.exp(log_read))


@dataclass(frozen=True)
class NoiseModel:
    """The degradation of one scene.

    Args:
        kind: ``"clean"`` (Chen et al.), ``"day"`` or ``"night"`` (DeAltHDR).
        sigma: Gaussian std for ``clean`` (applied to exposures below ``max_ev``).
        lambda_shot, lambda_read: Eq. A parameters for ``day``/``night``.
        linear_bits: linear quantisation before the CRF (10 for DeAltHDR, None for none).
        png_bits: bit depth of the stored gamma-encoded frames (8 or 16).
        max_ev: the pattern's longest exposure (which gets no Gaussian noise under ``clean``).
    """

    kind: str
    sigma: float = 0.0
    lambda_shot: float = 0.0
    lambda_read: float = 0.0
    linear_bits: int | None = None
    png_bits: int = 8
    max_ev: float = 0.0

    def __post_init__(self):
        if self.kind not in ("clean", "day", "night"):
            raise ValueError(f"NoiseModel: kind must be clean, day or night, got {self.kind!r}")
        if self.png_bits not in (8, 16):
            raise ValueError(f"NoiseModel: png_bits must be 8 or 16, got {self.png_bits}")

    def std_at(self, x: np.ndarray | float, ev: float) -> np.ndarray | float:
        """Standard deviation of the linear-domain noise at clean signal ``x`` for exposure ``ev``."""
        if self.kind == "clean":
            return self.sigma if ev < self.max_ev else 0.0
        return np.sqrt(self.lambda_read + self.lambda_shot * np.clip(x, 0.0, None))

    def apply(self, h: np.ndarray, ev: float, rng: np.random.Generator) -> np.ndarray:
        """:func:`camera_pipeline` with this model (the interface that
        :class:`~vs_hdrvid.synth.sensor.SensorModel` shares)."""
        return camera_pipeline(h, ev, self, rng)

    def to_dict(self) -> dict:
        if self.kind == "clean":
            return {"model": "gaussian", "domain": "linear", "sigma": self.sigma,
                    "applies_below_ev": self.max_ev, "png_bits": self.png_bits}
        return {"model": "heteroscedastic", "domain": "linear raw-like", "lambda_shot": self.lambda_shot,
                "lambda_read": self.lambda_read, "linear_bits": self.linear_bits, "png_bits": self.png_bits,
                "reference": "DeAltHDR Appendix A Eq. A/B"}


def camera_pipeline(h: np.ndarray, ev: float, model: NoiseModel, rng: np.random.Generator) -> np.ndarray:
    """Scene radiance ``h`` (``H`` scale, already time-integrated) -> stored integer LDR frame.

    ``L = Q_png(f(clip(Q_lin(clip(x + n, 0, 1)), 0, 1)))`` with ``x = clip(h * 2**EV, 0, 1)`` and
    ``n`` the model's noise.

    Returns:
        ``uint8`` or ``uint16`` array of ``h``'s shape.
    """
    x = expose(h.astype(np.float64), ev)
    if model.kind == "clean":
        if model.sigma > 0 and ev < model.max_ev:
            x = gaussian_noise(x, model.sigma, rng)
    else:
        x = heteroscedastic_noise(x, model.lambda_shot, model.lambda_read, rng)
    x = np.clip(x, 0.0, 1.0)
    if model.linear_bits:
        x = quantize(x, model.linear_bits)
    q = 2 ** model.png_bits - 1
    ldr = np.round(crf_gamma(x) * q)
    return ldr.astype(np.uint8 if model.png_bits == 8 else np.uint16)
