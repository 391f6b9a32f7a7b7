"""Tests of the classical temporal fusion of HDR windows (vs_hdrvid.ops.temporal_fuse)."""
import numpy as np
import pytest
import torch

from vs_hdrvid.ops.temporal_fuse import TemporalFuseConfig, fuse_window, noise_sigma, temporal_fuse
from vs_hdrvid.ops.tonemap import mulaw
from vs_hdrvid.ops.warp import flow_warp


def scene(h=96, w=128, seed=0):
    """A smooth HDR image with a few edges, radiance in (0, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, h // 16, w // 16, generator=g), (h, w), mode="bicubic")
    base[..., h // 3:h // 2, w // 4:w // 2] *= 0.2  # a dark block: edges
    return base.clamp(0.02, 1)


def noisy(img, sigma_mu, seed):
    """``img`` with white noise of std ``sigma_mu`` in the mu-law domain."""
    g = torch.Generator().manual_seed(seed)
    m = (mulaw(img) + sigma_mu * torch.randn(img.shape, generator=g)).clamp(0, 1)
    return ((1 + 5000.0) ** m - 1) / 5000.0


def mu_err(a, b):
    return float((mulaw(a.clamp(0, 1)) - mulaw(b.clamp(0, 1))).square().mean().sqrt())


def test_noise_sigma_follows_brightness_and_ignores_texture():
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(0.1, 0.9, 256).expand(1, 3, 256, 256).clone()
    sigma = 0.01 + 0.03 * (1 - ramp)  # heteroscedastic: noisier in the dark, as sensor noise after the mu-law
    est = noise_sigma(ramp + sigma * torch.randn(1, 3, 256, 256, generator=g))
    dark, bright = est[..., :64].median(), est[..., -64:].median()
    assert 0.032 < dark < 0.042 and 0.011 < bright < 0.016
    textured = ramp.clone()
    textured[..., ::2, :] += 0.1  # a strong texture over half the frame
    textured[..., 128:, :] = ramp[..., 128:, :]
    est = noise_sigma(textured + 0.01 * torch.randn(1, 3, 256, 256, generator=g))
    assert float(est.median()) == pytest.approx(0.01, rel=0.25)


def test_static_noisy_window_is_averaged():
    clean = scene()
    window = torch.stack([noisy(clean, 0.03, s) for s in range(3)], dim=1)  # (1, 3, 3, H, W)
    out = temporal_fuse(window, torch.ones(1))
    before, after = mu_err(window[:, 1], clean), mu_err(out, clean)
    assert after < 0.7 * before  # three frames: the noise std falls towards 1/sqrt(3)


def test_clean_window_keeps_the_reference_and_ghosts_are_rejected():
    clean = scene()
    window = torch.stack([clean, clean, clean], dim=1).clone()
    window[:, 0, :, 10:40, 10:40] = 0.9  # an object only the previous frame shows
    flows = torch.zeros(1, 3, 2, *clean.shape[-2:])
    conf = torch.ones(1, 3, 1, *clean.shape[-2:])
    out = fuse_window(window, flows, conf, torch.ones(1))
    assert mu_err(out, clean) < 1e-3


def test_misaligned_clean_neighbours_do_not_blur_the_reference():
    """A neighbour shifted by a sub-pixel flow error: on clean footage the reference stays."""
    clean = scene(seed=3)
    h, w = clean.shape[-2:]
    shift = torch.zeros(1, 2, h, w)
    shift[:, 0] = 0.7
    off = flow_warp(clean, shift)  # the neighbour as a flow 0.7 px off would bring it
    window = torch.stack([off, clean, off], dim=1)
    zero, ones = torch.zeros(1, 3, 2, h, w), torch.ones(1, 3, 1, h, w)
    out = fuse_window(window, zero, ones, torch.ones(1))
    plain = window.mean(1)
    assert mu_err(out, clean) < 0.08 * mu_err(plain, clean)  # without the flow-error term: 0.13


def test_moving_noisy_window_is_aligned_before_averaging():
    clean = scene(160, 192, seed=5)
    shift = torch.zeros(1, 2, 160, 192)
    shift[:, 0] = 3.0
    prev, nxt = flow_warp(clean, -shift), flow_warp(clean, shift)  # the scene moves 3 px per frame
    window = torch.stack([noisy(prev, 0.03, 1), noisy(clean, 0.03, 2), noisy(nxt, 0.03, 3)], dim=1)
    out = temporal_fuse(window, torch.ones(1))
    inner = (..., slice(8, -8), slice(8, -8))
    assert mu_err(out[inner], clean[inner]) < 0.75 * mu_err(window[:, 1][inner], clean[inner])


def test_temporal_fuse_checks_its_input():
    with pytest.raises(ValueError, match="N odd"):
        temporal_fuse(torch.rand(1, 2, 3, 16, 16), torch.ones(1))
    assert TemporalFuseConfig().strength > 0
    assert np.isfinite(float(noise_sigma(torch.zeros(1, 3, 16, 16)).max()))
