"""Camera degradations (Chen et al. / DeAltHDR) and training augmentations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vs_hdrvid.synth.augment import (add_linear_noise, ldr_to_radiance, perturb_tone, sample_augment,
                                     sigmoid_crf, sigmoid_crf_inv)
from vs_hdrvid.synth.degrade import (DEALTHDR_EQ_B, NoiseModel, camera_pipeline, crf_gamma, crf_gamma_inv,
                                     heteroscedastic_noise, quantize, sample_dealthdr_noise)
from vs_hdrvid.synth.sampling import build_scene
from vs_hdrvid.synth.spec import SceneSpec


def test_eq_b_numbers_match_the_paper():
    assert DEALTHDR_EQ_B["day"] == {"shot_lo": 0.00014, "shot_hi": 0.00066, "slope": 1.428, "intercept": 1.215,
                                    "std": 0.28}
    assert DEALTHDR_EQ_B["night"] == {"shot_lo": 0.0021, "shot_hi": 0.0086, "slope": 1.692, "intercept": 0.418,
                                      "std": 0.25}


@pytest.mark.parametrize("kind", ["day", "night"])
def test_eq_b_sampling(kind):
    p = DEALTHDR_EQ_B[kind]
    rng = np.random.default_rng(0)
    s = np.array([sample_dealthdr_noise(kind, rng) for _ in range(3000)])
    ls, lr = np.log(s[:, 0]), np.log(s[:, 1])
    assert ls.min() >= math.log(p["shot_lo"]) and ls.max() <= math.log(p["shot_hi"])
    slope, icept = np.polyfit(ls, lr, 1)
    assert abs(slope - p["slope"]) < 0.1 and abs(icept - p["intercept"]) < 0.6
    assert abs(np.std(lr - (p["slope"] * ls + p["intercept"])) - p["std"]) < 0.02
    with pytest.raises(ValueError):
        sample_dealthdr_noise("dusk", rng)


def test_heteroscedastic_variance_slope():
    """Var[x + N] = lambda_read + lambda_shot * x (DeAltHDR Eq. A): fit the line on flat patches."""
    rng = np.random.default_rng(1)
    shot, read = 4e-3, 2e-4
    levels = np.linspace(0.05, 0.9, 8)
    var = [np.var(heteroscedastic_noise(np.full(200_000, x), shot, read, rng)) for x in levels]
    slope, icept = np.polyfit(levels, var, 1)
    assert slope == pytest.approx(shot, rel=0.05)
    assert icept == pytest.approx(read, rel=0.25)


def test_pipeline_noise_statistics():
    """End to end: 10-bit raw-like noise survives the CRF; the variance line gives the stated lambdas."""
    rng = np.random.default_rng(2)
    m = NoiseModel("night", lambda_shot=5e-3, lambda_read=1e-4, linear_bits=10, png_bits=16, max_ev=1.0)
    levels = np.linspace(0.1, 0.7, 7)
    var = []
    for x in levels:
        ldr = camera_pipeline(np.full((100, 100, 3), x, np.float32), 0.0, m, rng)
        assert ldr.dtype == np.uint16
        var.append(np.var(crf_gamma_inv(ldr / 65535.0)) - (1 / 1023) ** 2 / 12)
    slope, icept = np.polyfit(levels, var, 1)
    assert slope == pytest.approx(5e-3, rel=0.1)
    assert icept == pytest.approx(1e-4, abs=8e-5)


def test_clean_pipeline():
    rng = np.random.default_rng(3)
    h = np.random.default_rng(4).uniform(0, 3, (64, 64, 3)).astype(np.float32)
    m = NoiseModel("clean", sigma=1e-3, png_bits=8, max_ev=1.5)
    long = camera_pipeline(h, 1.5, m, rng)                    # longest exposure: no noise, exact
    assert long.dtype == np.uint8
    assert np.array_equal(long, np.round(crf_gamma(h * 2 ** 1.5) * 255).astype(np.uint8))
    short = camera_pipeline(h, -1.5, m, rng).astype(np.float64) / 255
    assert 0 < np.abs(short - crf_gamma(h * 2 ** -1.5)).mean() < 4 / 255
    assert np.array_equal(quantize(np.array([0.0, 0.5004, 1.2]), 10), np.array([0.0, 512 / 1023, 1.0]))
    with pytest.raises(ValueError):
        NoiseModel("foggy")


def test_perturb_tone():
    rng = np.random.default_rng(5)
    x = np.random.default_rng(6).uniform(0.05, 0.95, (3, 16, 16))
    y = perturb_tone(x, rng)
    gam = np.log(x) / np.log(y)                                # per-pixel gamma, constant per channel
    for c in range(3):
        g = gam[c].ravel()
        assert np.allclose(g, g[0], rtol=1e-6) and abs(math.log(g[0])) <= 0.7
    assert np.allclose(perturb_tone(x, rng, max_log_gamma=0.0), x)
    t = perturb_tone(torch.from_numpy(x).float()[None], np.random.default_rng(5))
    assert torch.allclose(t[0], torch.from_numpy(y).float(), atol=1e-5)
    n = add_linear_noise(np.zeros((200, 200)), rng, (1e-4, 1e-3))
    assert 1e-4 <= n.std() <= 1e-3


def test_augment_sampling():
    rng = np.random.default_rng(7)
    augs = {sample_augment(rng) for _ in range(200)}
    assert len(augs) > 30
    a = sample_augment(rng)
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert a.image(x).shape in ((2, 3, 4, 5), (2, 3, 5, 4))


def test_ldr_to_radiance_roundtrip():
    """Chen et al. 5.1 Vimeo recipe on frames rendered here (no LDR video ships)."""
    spec = SceneSpec("v", 2, "proc:8", 48, 32, 4, (0.0,), layers=(1, 1))
    sc, _ = build_scene(spec)
    ldr = np.stack([np.round(crf_gamma(sc.render(float(t))) * 255).astype(np.uint8) for t in range(4)])
    rads, params = [], []
    for seed in range(6):
        r, p = ldr_to_radiance(ldr, np.random.default_rng(seed))
        rads.append(r)
        params.append(p)
        assert r.shape == ldr.shape and r.dtype == np.float32 and r.min() >= 0
        src = ldr[::-1] if p["reversed"] else ldr
        back = sigmoid_crf(r * 2.0 ** p["anchor_ev"], p["n"], p["s"])
        assert np.abs(back - src / 255.0).max() < 1e-4
        assert r.max() <= 2.0 ** -p["anchor_ev"] * (1 + 1e-5)
    assert {p["reversed"] for p in params} == {True, False}
    assert len({round(p["n"], 6) for p in params}) == 6
    x = np.linspace(0, 1, 11)
    assert np.allclose(sigmoid_crf_inv(sigmoid_crf(x, 0.9, 0.5), 0.9, 0.5), x)
    assert sigmoid_crf(1.0, 0.8, 0.3) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ldr_to_radiance(ldr[0], np.random.default_rng(0))
