"""Handheld camera shake: a jittery, non-linear rotation trajectory inside every exposure.

The training recipes move the camera along a smooth path (constant rates, a little acceleration and
slow sinusoids, :class:`~vs_hdrvid.synth.camera.CameraPath`), so a long exposure integrates an almost
linear motion: the "linear motion kernels" that DeAltHDR Appendix D names as the gap between its
synthetic blur and real blur. A handheld trajectory adds, on each rotation axis (yaw, pitch, roll),

    x''(t) = -w0^2 x - 2 zeta w0 x' + sqrt(4 zeta w0^3) w(t) + sum_k j_k delta(t - t_k)

a damped oscillator driven by white noise ``w`` (the second-order model of physiological hand tremor)
plus sparse impulsive velocity jerks ``j_k`` at Poisson times ``t_k`` (the abrupt direction changes
of the random camera-shake trajectories of Boracchi & Foi, IEEE TIP 2012). It is simulated on knots
every ``knot_dt`` frame intervals (semi-implicit Euler, unit stationary variance), made zero-mean,
scaled to the requested RMS per axis and evaluated between knots by Catmull-Rom interpolation (C1,
through the knots), so every sub-frame time has an exact camera and the flow stays exact.

With the parameters of :data:`HANDHELD` (natural period 1.5 to 3 frame intervals, 16 knots per
interval) a long exposure of about two frame intervals spans most of a tremor cycle plus any jerk:
curved, direction-reversing blur paths, while short (instantaneous) frames stay sharp.

Convention: time in frame intervals; knots ``(3, N)`` in radians, axis order yaw, pitch, roll.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["HANDHELD", "handheld_knots", "catmull_rom"]

#: Parameters of the handheld model. ``period``: tremor period range (frame intervals);
#: ``damping``: damping ratio range; ``jerk_rate``: jerks per frame interval; ``jerk_scale``: jerk
#: size in units of the stationary velocity std; ``knot_dt``: knot spacing (frame intervals);
#: ``axis_scale``: per-axis RMS factor range (anisotropic shake); ``roll_ratio``: RMS roll
#: displacement at the image corner relative to the yaw/pitch RMS displacement; ``burn_in``:
#: frame intervals simulated and dropped so the process starts stationary.
HANDHELD = {"period": (1.5, 3.0), "damping": (0.15, 0.4), "jerk_rate": 0.4, "jerk_scale": 2.5,
            "knot_dt": 1.0 / 16.0, "axis_scale": (0.6, 1.0), "roll_ratio": 0.3, "burn_in": 4.0}


def _oscillator(rng: np.random.Generator, n: int, dt: float, period: float, zeta: float,
                jerk_rate: float, jerk_scale: float) -> np.ndarray:
    """``n`` knots of the jerk-driven damped oscillator (unit stationary std before jerks)."""
    w0 = 2.0 * math.pi / period
    sigma = math.sqrt(4.0 * zeta * w0 ** 3)          # stationary Var[x] = sigma^2 / (4 zeta w0^3) = 1
    drive = rng.standard_normal(n) * sigma * math.sqrt(dt)
    jerks = (rng.random(n) < jerk_rate * dt) * rng.standard_normal(n) * (jerk_scale * w0)
    x, v = rng.standard_normal(), rng.standard_normal() * w0
    out = np.empty(n)
    for k in range(n):
        v += -(w0 * w0 * x + 2.0 * zeta * w0 * v) * dt + drive[k] + jerks[k]
        x += v * dt
        out[k] = x
    return out


def handheld_knots(rng: np.random.Generator, t0: float, t1: float, rms: tuple[float, float, float],
                   params: dict | None = None) -> tuple[np.ndarray, float, dict]:
    """Knots of a handheld shake covering ``[t0, t1]``.

    Args:
        rng: the generator every draw comes from.
        t0, t1: time range the trajectory must cover (frame intervals); knots start at ``t0``.
        rms: RMS of the yaw, pitch and roll jitter (radians) over the knots.
        params: overrides of :data:`HANDHELD`.

    Returns:
        ``(knots (3, N) float64, knot_dt, drawn)``: ``drawn`` holds the per-axis period and damping.
    """
    p = {**HANDHELD, **(params or {})}
    dt = float(p["knot_dt"])
    n = int(math.ceil((t1 - t0) / dt)) + 2
    burn = int(round(p["burn_in"] / dt))
    knots = np.empty((3, n))
    drawn = {"period": [], "damping": []}
    for a in range(3):
        period = float(rng.uniform(*p["period"]))
        zeta = float(rng.uniform(*p["damping"]))
        x = _oscillator(rng, n + burn, dt, period, zeta, p["jerk_rate"], p["jerk_scale"])[burn:]
        x = x - x.mean()
        knots[a] = x * (rms[a] / max(float(np.sqrt(np.mean(x * x))), 1e-12))
        drawn["period"].append(period)
        drawn["damping"].append(zeta)
    return knots, dt, drawn


def catmull_rom(knots, t0: float, dt: float, t: float) -> float:
    """Catmull-Rom interpolation of equally spaced ``knots`` (first at ``t0``) at time ``t``.

    Passes through every knot and has a continuous first derivative; indices beyond either end are
    clamped (the trajectory is held constant outside its range).
    """
    n = len(knots)
    u = (t - t0) / dt
    i = int(math.floor(u))
    s = u - i

    def k(j: int) -> float:
        return float(knots[min(max(j, 0), n - 1)])

    p0, p1, p2, p3 = k(i - 1), k(i), k(i + 1), k(i + 2)
    return p1 + 0.5 * s * (p2 - p0 + s * (2 * p0 - 5 * p1 + 4 * p2 - p3 + s * (3 * (p1 - p2) + p3 - p0)))
