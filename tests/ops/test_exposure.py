"""ops.exposure: EV steps from brightness quantiles and the periodic pattern fit."""
import numpy as np
import pytest

from vs_hdrvid.ops.exposure import ExposureDetection, detect_exposure_pattern, exposure_steps


def frames(evs, count: int, shift: int = 3, seed: int = 0, h: int = 48, w: int = 64, noise: float = 0.0):
    """(lin, ldr) per frame of a log-normal scene panning ``shift`` px per frame, 8-bit gamma 2.2."""
    rng = np.random.default_rng(seed)
    scene = 0.15 * np.exp(1.2 * rng.standard_normal((h, w + shift * count)))
    lin, ldr = [], []
    for n in range(count):
        x = np.clip(scene[:, n * shift:n * shift + w] * 2.0 ** evs[n % len(evs)], 0, 1)
        code = np.round(np.clip(x ** (1 / 2.2) + noise * rng.standard_normal(x.shape), 0, 1) * 255) / 255
        ldr.append(code)
        lin.append(code ** 2.2 + 1e-7)
    return lin, ldr


def test_exposure_steps_measure_the_step():
    lin, ldr = frames([-1.0, 1.0], 5)
    steps = exposure_steps(lin, ldr)
    assert steps.shape == (4,)
    np.testing.assert_allclose(steps, [2.0, -2.0, 2.0, -2.0], atol=0.05)


def test_exposure_steps_nan_without_usable_pixels():
    dark = [np.zeros((8, 8)) + 1e-7] * 3
    steps = exposure_steps(dark, [np.zeros((8, 8))] * 3)
    assert np.isnan(steps).all()


@pytest.mark.parametrize("evs", [[-1.5, 1.5], [1.5, -1.5], [-2.0, 0.0, 2.0], [0.0, 2.0, -2.0], [-1.0, 1.0]])
def test_detects_period_and_evs(evs):
    lin, ldr = frames(evs, 12, noise=0.01)
    det = detect_exposure_pattern(lin, ldr)
    assert isinstance(det, ExposureDetection)
    assert len(det.exposures) == len(evs)
    want = np.array(evs) - np.mean(evs)
    np.testing.assert_allclose(det.exposures, want, atol=0.15)
    assert det.confidence > 0.8 and det.residual < 0.2
    assert len(det.steps) == 11
    assert f"period {len(evs)}" in det.describe()


def test_unequal_three_exposure_pattern():
    evs = [-3.0, -1.0, 1.5]
    lin, ldr = frames(evs, 15, noise=0.005)
    det = detect_exposure_pattern(lin, ldr)
    np.testing.assert_allclose(np.diff(det.exposures), np.diff(evs), atol=0.15)


def test_constant_exposure_raises():
    lin, ldr = frames([0.0], 10, noise=0.01)
    with pytest.raises(ValueError, match="no alternating exposure"):
        detect_exposure_pattern(lin, ldr)


def test_too_few_frames_raises():
    lin, ldr = frames([-1.0, 1.0], 3)
    with pytest.raises(ValueError, match="at least 4"):
        detect_exposure_pattern(lin, ldr)
