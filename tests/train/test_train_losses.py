"""Losses of vs_hdrvid.train.losses on hand-computable inputs."""
from __future__ import annotations

import math

import pytest
import torch

from vs_hdrvid.ops.metrics import ssim_map
from vs_hdrvid.train.losses import epe, gradient_l1, mu_l1, refine_l1, structure_loss, tonemap


def test_tonemap_endpoints_and_per_item_h_sat():
    h = torch.tensor([1.0, 4.0]).reshape(2, 1, 1, 1).expand(2, 3, 2, 2)
    t = tonemap(h, torch.tensor([1.0, 8.0]))
    assert torch.allclose(t[0], torch.ones(3, 2, 2))
    expected = math.log1p(5000 * 0.5) / math.log1p(5000)
    assert torch.allclose(t[1], torch.full((3, 2, 2), expected))


def test_mu_l1_zero_vs_saturation_is_one():
    assert float(mu_l1(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 2.0), 2.0)) == pytest.approx(1.0)
    x = torch.rand(2, 3, 4, 4)
    assert float(mu_l1(x, x, 1.0)) == 0.0


def test_refine_l1_is_normalised_by_the_badly_exposed_area():
    mask = torch.ones(1, 1, 4, 4)
    mask[..., :2, :] = 0  # 8 badly exposed pixels
    gt = torch.zeros(1, 3, 4, 4)
    pred = gt.clone()
    pred[..., :2, :] = 1.0  # tonemapped error 1 on the bad area only
    assert float(refine_l1(pred, gt, mask, 1.0)) == pytest.approx(1.0)
    assert float(mu_l1(pred, gt, 1.0)) == pytest.approx(0.5)  # the plain mean halves it
    # a tiny badly exposed area is floored at 5% of the pixels; none does not divide by zero
    one = torch.ones(1, 1, 20, 20)
    one[..., 0, 0] = 0
    err = torch.ones(1, 3, 20, 20)  # tonemapped error 1 everywhere
    assert float(refine_l1(err, torch.zeros_like(err), one, 1.0)) == pytest.approx(400 / 20)
    assert torch.isfinite(refine_l1(pred, gt, torch.ones(1, 1, 4, 4), 1.0))


def test_epe_three_four_five_and_valid_mask():
    gt = torch.zeros(1, 2, 1, 2)
    pred = torch.tensor([[[[3.0, 0.0]], [[4.0, 1.0]]]])  # errors 5 and 1
    assert float(epe(pred, gt)) == pytest.approx(3.0)
    valid = torch.tensor([[[[1.0, 0.0]]]])
    assert float(epe(pred, gt, valid)) == pytest.approx(5.0)


def test_gradient_l1_of_a_ramp():
    x = torch.arange(8.0).repeat(1, 3, 8, 1) * 0.1  # slope 0.1 along x
    assert float(gradient_l1(x, torch.zeros_like(x), scales=1)) == pytest.approx(0.05)
    # each 2x2 pooling doubles the per-pixel slope: 0.5 * (0.1 + 0.2) / 2
    assert float(gradient_l1(x, torch.zeros_like(x), scales=2)) == pytest.approx(0.075)


def test_ssim_and_structure_loss():
    x = torch.rand(2, 3, 16, 16)
    assert float(ssim_map(x, x).mean()) == pytest.approx(1.0)
    assert float(structure_loss(x, x, 1.0)) == pytest.approx(0.0, abs=1e-6)
    y = x.clone().requires_grad_(True)
    loss = structure_loss(y, x + 0.05 * torch.randn_like(x), 1.0)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(y.grad).all()
    # images smaller than the 11x11 window still work
    assert torch.isfinite(structure_loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), 1.0))
