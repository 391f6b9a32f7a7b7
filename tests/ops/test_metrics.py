import math

import pytest
import torch

from vs_hdrvid.ops.metrics import (
    MU, PSNRL, PSNRMu, SSIMMu, mu_law, mu_law_normalised, psnr_l, psnr_mu, saturation_radiance, ssim_map, ssim_mu,
    temporal_warping_error,
)


def _img(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=dtype)


def test_saturation_radiance():
    assert saturation_radiance([-1.5, 1.5]) == pytest.approx(2**1.5)
    assert saturation_radiance((2.0, 0.0, -2.0)) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        saturation_radiance([])


def test_mu_law_normalised_values():
    h_sat = 4.0
    h = torch.tensor([0.0, 2.0, 4.0, 8.0, -1.0]).view(1, 5, 1).expand(3, 5, 1)
    out = mu_law_normalised(h, h_sat)
    expected = torch.tensor([0.0, math.log1p(MU * 0.5) / math.log1p(MU), 1.0, 1.0, 0.0])
    assert torch.allclose(out[0, :, 0], expected, atol=1e-6)
    assert torch.allclose(mu_law(torch.tensor(1.0)), torch.tensor(1.0))


def test_psnr_identical_is_inf():
    x = _img(2, 3, 8, 8)
    assert torch.isinf(psnr_mu(x, x, 1.0)).all()
    assert torch.isinf(psnr_l(x, x, 1.0)).all()


def test_psnr_l_constant_offset_exact():
    # normalised values 0.25 vs 0.35 everywhere: MSE = 0.01 -> 20 dB
    h_sat = 2.0
    gt = torch.full((3, 4, 5), 0.25 * h_sat)
    pred = torch.full((3, 4, 5), 0.35 * h_sat)
    assert psnr_l(pred, gt, h_sat).item() == pytest.approx(20.0, abs=1e-4)
    # in the mu-law domain the offset is mu(0.35) - mu(0.25)
    d = (math.log1p(MU * 0.35) - math.log1p(MU * 0.25)) / math.log1p(MU)
    assert psnr_mu(pred, gt, h_sat).item() == pytest.approx(-20 * math.log10(d), abs=1e-3)


def test_psnr_batched_per_item_and_h_sat_per_item():
    gt = torch.full((2, 3, 4, 4), 0.5)
    pred = gt.clone()
    pred[0] += 0.1  # item 0: MSE 0.01 with h_sat 1 -> 20 dB
    pred[1] += 0.2  # item 1: normalised offset 0.2 / 2 = 0.1 with h_sat 2 -> 20 dB
    out = psnr_l(pred, gt, torch.tensor([1.0, 2.0]))
    assert out.shape == (2,)
    assert torch.allclose(out, torch.tensor([20.0, 20.0]), atol=1e-3)
    # values above H_sat clip: both saturate -> identical
    assert torch.isinf(psnr_l(torch.full((3, 2, 2), 5.0), torch.full((3, 2, 2), 9.0), 1.0))


def test_ssim_identity_symmetry_and_range():
    x = _img(2, 3, 24, 24, seed=1)
    y = (x + 0.1 * _img(2, 3, 24, 24, seed=2)).clamp(0, 1)
    assert torch.allclose(ssim_mu(x, x, 1.0), torch.ones(2), atol=1e-5)
    s_xy, s_yx = ssim_mu(x, y, 1.0), ssim_mu(y, x, 1.0)
    assert torch.allclose(s_xy, s_yx, atol=1e-6)
    assert (s_xy < 1).all() and (s_xy > -1).all()
    assert ssim_mu(x[0], y[0], 1.0).shape == ()


def test_ssim_matches_kornia_valid():
    kornia = pytest.importorskip("kornia")
    x = _img(1, 3, 20, 22, seed=3)
    y = _img(1, 3, 20, 22, seed=4)
    ours = ssim_mu(x, y, 1.0)
    mx, my = mu_law_normalised(x, 1.0), mu_law_normalised(y, 1.0)
    ref = kornia.metrics.ssim(mx, my, 11, padding="valid").mean()
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)


def test_exceptions():
    with pytest.raises(ValueError):
        psnr_mu(torch.zeros(3, 4, 4), torch.zeros(3, 4, 5), 1.0)
    with pytest.raises(ValueError):
        psnr_l(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), 1.0)
    with pytest.raises(ValueError):
        ssim_mu(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), 1.0)
    with pytest.raises(ValueError):
        psnr_l(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), 0.0)


def test_modules_agree_with_functions():
    x, y = _img(2, 3, 16, 16, seed=5), _img(2, 3, 16, 16, seed=6)
    assert torch.equal(PSNRMu()(x, y, 1.0), psnr_mu(x, y, 1.0))
    assert torch.equal(PSNRL()(x, y, 1.0), psnr_l(x, y, 1.0))
    assert torch.equal(SSIMMu()(x, y, 1.0), ssim_mu(x, y, 1.0))


def test_psnr_gradcheck():
    x = _img(1, 3, 4, 4, seed=7, dtype=torch.float64) * 0.5 + 0.1
    y = (_img(1, 3, 4, 4, seed=8, dtype=torch.float64) * 0.5 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: psnr_mu(a, x, 1.0), (y,))


def _shifted_sequence(t=4, h=16, w=20, shift=1):
    """Content moving right by ``shift`` px per frame; backward flow t->t-1 is (-shift, 0)."""
    base = _img(3, h, w, seed=9) * 0.9
    frames = torch.stack([torch.roll(base, shifts=shift * i, dims=-1) for i in range(t)])
    flows = torch.zeros(t - 1, 2, h, w)
    flows[:, 0] = -shift
    occ = torch.zeros(t - 1, h, w, dtype=torch.uint8)
    occ[:, :, :shift] = 1  # wrapped-in columns are new content
    return frames, flows, occ


def test_twe_zero_for_perfectly_warped_sequence():
    frames, flows, occ = _shifted_sequence()
    assert temporal_warping_error(frames, flows, occ, 1.0).item() == pytest.approx(0.0, abs=1e-10)
    # without the occlusion mask the wrapped column still lands outside the frame -> still zero
    assert temporal_warping_error(frames, flows, None, 1.0).item() == pytest.approx(0.0, abs=1e-10)


def test_twe_value_for_flicker():
    # static scene with constant flicker of the normalised value 0.5 <-> 0.6, zero flow
    frames = torch.stack([torch.full((3, 8, 8), 0.5 if i % 2 == 0 else 0.6) for i in range(3)])
    flows = torch.zeros(2, 2, 8, 8)
    d = (math.log1p(MU * 0.6) - math.log1p(MU * 0.5)) / math.log1p(MU)
    assert temporal_warping_error(frames, flows, None, 1.0).item() == pytest.approx(d * d, rel=1e-4)
    # fully occluded -> nan
    assert math.isnan(temporal_warping_error(frames, flows, torch.ones(2, 8, 8), 1.0).item())
    with pytest.raises(ValueError):
        temporal_warping_error(frames, flows[:1], None, 1.0)


def test_ssim_mu_is_the_per_item_mean_of_the_ssim_map():
    torch.manual_seed(0)
    pred, gt = torch.rand(2, 3, 24, 20) * 4, torch.rand(2, 3, 24, 20) * 4
    m = ssim_map(mu_law_normalised(pred, 4.0), mu_law_normalised(gt, 4.0))
    assert m.shape == (2, 3, 14, 10)
    torch.testing.assert_close(ssim_mu(pred, gt, 4.0), m.flatten(-2).mean(-1).mean(-1), rtol=0, atol=0)
    torch.testing.assert_close(ssim_map(gt, gt), torch.ones(2, 3, 14, 10))
