"""Detecting an alternating-exposure pattern from frame brightness.

Consecutive frames of alternating-exposure footage see nearly the same scene, so the brightness
distributions of their linear values differ by the exposure ratio. Comparing quantiles rather than
pixels makes the step immune to motion (a moved object changes pixels, hardly the histogram) and to
the selection bias of picking pixels exposed well in both frames; clipping is monotone, so a
quantile below the clipping level is exact. The pattern (period 2 or 3) is the periodic model of
the steps that explains them best.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ExposureDetection", "exposure_steps", "detect_exposure_pattern"]


@dataclass
class ExposureDetection:
    """Result of :func:`detect_exposure_pattern`.

    Attributes:
        exposures: EV per position of the pattern, starting at frame 0, centred on 0 stops.
        confidence: 0..1, how well the periodic model explains the measured steps.
        residual: RMS (stops) of the measured steps around the model.
        steps: the measured EV steps between consecutive frames.
    """

    exposures: list[float]
    confidence: float
    residual: float
    steps: list[float]

    def describe(self) -> str:
        evs = ", ".join(f"{e:+.2f}" for e in self.exposures)
        return (f"period {len(self.exposures)}, EVs [{evs}] (confidence {self.confidence:.2f}, "
                f"step residual {self.residual:.2f} stops over {len(self.steps)} frame pairs)")


def exposure_steps(lin: list[np.ndarray], ldr: list[np.ndarray], lo: float = 0.04, hi: float = 0.92,
                   quantiles: int = 49) -> np.ndarray:
    """EV step ``log2(Q[i+1](q) / Q[i](q))`` between consecutive frames, median over quantiles ``q``.

    Args:
        lin: per frame, the linear value of each pixel's brightest channel (any shape).
        ldr: the same pixels' LDR value in [0, 1], to keep only quantiles that are neither clipped
            nor near black in both frames.
        lo, hi: usable LDR range.
        quantiles: number of quantiles between 2 % and 98 %.

    Returns:
        ``(len(lin) - 1,)`` steps in stops; NaN where two frames share fewer than 3 usable quantiles.
    """
    q = np.linspace(0.02, 0.98, quantiles)
    qs_lin = [np.quantile(x, q) for x in lin]
    qs_ldr = [np.quantile(x, q) for x in ldr]
    steps = np.full(len(lin) - 1, np.nan)
    for i in range(len(lin) - 1):
        ok = ((qs_ldr[i] > lo) & (qs_ldr[i] < hi) & (qs_ldr[i + 1] > lo) & (qs_ldr[i + 1] < hi))
        if ok.sum() >= 3:
            steps[i] = np.median(np.log2(qs_lin[i + 1][ok] / qs_lin[i][ok]))
    return steps


def _fit(steps: np.ndarray, period: int) -> tuple[np.ndarray, float]:
    phase_steps = np.array([np.nanmedian(steps[p::period]) if np.isfinite(steps[p::period]).any()
                            else np.nan for p in range(period)])
    model = phase_steps[np.arange(len(steps)) % period]
    ok = np.isfinite(steps) & np.isfinite(model)
    resid = float(np.sqrt(np.mean((steps[ok] - model[ok]) ** 2))) if ok.any() else np.inf
    return phase_steps, resid


def detect_exposure_pattern(lin: list[np.ndarray], ldr: list[np.ndarray],
                            min_step: float = 0.4) -> ExposureDetection:
    """Period (2 or 3) and EVs of an alternating-exposure sequence starting at frame 0.

    Args:
        lin: per frame (at least 4; 12+ recommended), the linear value of each pixel's brightest
            channel.
        ldr: the same pixels' LDR values in [0, 1].
        min_step: the smallest EV step, in stops, taken as a real exposure change.

    Raises:
        ValueError: too few frames, or no alternation found (constant exposure footage).
    """
    if len(lin) < 4:
        raise ValueError(f"need at least 4 frames to detect an exposure pattern, got {len(lin)}")
    steps = exposure_steps(lin, ldr)
    if np.isfinite(steps).sum() < 3:
        raise ValueError("too few well-exposed pixels in consecutive frames to measure exposure")
    fits = {p: _fit(steps, p) for p in (2, 3) if len(steps) >= p + 1}
    # a period-3 model always fits at least as well on few samples; take it only if clearly better
    period = 2
    if 3 in fits and fits[3][1] < 0.5 * fits[2][1] - 0.05:
        period = 3
    phase_steps, resid = fits[period]
    if not np.isfinite(phase_steps).all() or np.max(np.abs(phase_steps)) < min_step:
        raise ValueError(f"no alternating exposure found (median steps {np.round(phase_steps, 2)} stops)")
    evs = np.concatenate([[0.0], np.cumsum(phase_steps[:-1])])
    evs -= evs.mean()
    scale = np.mean(np.abs(phase_steps))
    closure = abs(float(np.sum(phase_steps)))  # a true cycle returns to its start
    confidence = float(np.clip(1.0 - (resid + closure) / max(scale, 1e-6), 0.0, 1.0))
    return ExposureDetection([round(float(e), 3) for e in evs], confidence, resid,
                             [float(s) for s in steps])
