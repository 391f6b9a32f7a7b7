"""Tests of CoarseNet (vs_hdrvid.models.coarsenet): weight net, blending, the full stage."""

import pytest
import torch

from vs_hdrvid.models.blocks import ldr_to_hdr
from vs_hdrvid.models.coarsenet import (
    CoarseNet,
    CoarseNetConfig,
    WeightNet,
    WeightNetConfig,
    blend_hdr,
)
from vs_hdrvid.models.spynet import SpyNetConfig

PUBLIC_WEIGHT_PARAMS = 2_525_071  # weight_net, 30 -> 15 channels, cmid 256, batch norm
PUBLIC_FLOW_PARAMS = 907_145
EVS = {2: [1.5, -1.5, 1.5], 3: [-2.0, 0.0, 2.0, -2.0, 0.0]}


def _small(n: int) -> CoarseNetConfig:
    """A narrow CoarseNet with the same structure, for tests of wiring rather than capacity."""
    return CoarseNetConfig(
        num_exposures=n,
        flow=SpyNetConfig(num_triples=n - 1, channels=(8, 8)),
        weight=WeightNetConfig(num_images=4 * n - 3, encoder=(8, 16, 16), decoder=(16, 16, 16), batch_norm=n == 2),
    )


def _nparams(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _static_window(hdr: torch.Tensor, evs: list[float]) -> torch.Tensor:
    """LDR frames of a static scene: ``L = clip(H * 2**EV, 0, 1)**(1/2.2)``."""
    return torch.stack([(hdr * 2**ev).clamp(0, 1).pow(1 / 2.2) for ev in evs], dim=1)


@pytest.mark.parametrize("n", [2, 3])
def test_coarsenet_shapes_and_range(n):
    torch.manual_seed(0)
    net = CoarseNet(CoarseNetConfig.for_exposures(n, "paper") if n == 2 else _small(n)).eval()
    t = 2 * n - 1
    with torch.no_grad():
        out = net(torch.rand(2, t, 3, 20, 12), torch.tensor(EVS[n]))
    k, m = t - 1, 2 * t - 1
    assert out.hdr.shape == (2, 3, 20, 12)
    assert out.flows.shape == (2, k, 2, 20, 12)
    assert out.warped.shape == (2, k, 3, 20, 12)
    assert out.weights.shape == (2, m, 3, 20, 12)
    assert out.mask.shape == (2, 1, 20, 12)
    assert net.weightnet.config.num_images == m and net.weightnet.body[0][0].in_channels == 6 * m
    h_sat = 2 ** -min(EVS[n])
    for v in out:
        assert torch.isfinite(v).all()
    assert out.hdr.min() >= 0 and out.hdr.max() <= h_sat * (1 + 1e-5)
    assert torch.allclose(out.weights.sum(1), torch.ones(()), atol=1e-4)


def test_coarsenet_parameter_counts():
    net = CoarseNet()
    nf, nw = _nparams(net.flownet), _nparams(net.weightnet)
    print(f"CoarseNet (2 exposures): flow {nf}, weight {nw}, total {nf + nw} parameters")
    assert abs(nf - PUBLIC_FLOW_PARAMS) <= 0.15 * PUBLIC_FLOW_PARAMS
    assert abs(nw - PUBLIC_WEIGHT_PARAMS) <= 0.15 * PUBLIC_WEIGHT_PARAMS
    net3 = CoarseNet(CoarseNetConfig.for_exposures(3, "paper"))
    print(f"CoarseNet (3 exposures): flow {_nparams(net3.flownet)}, weight {_nparams(net3.weightnet)}")


def test_blend_hdr_is_normalised():
    w = torch.rand(2, 5, 3, 4, 4)
    hdrs = torch.full((2, 5, 3, 4, 4), 0.7)
    hdr, norm = blend_hdr(w * 10, hdrs)
    assert torch.allclose(norm.sum(1), torch.ones(()), atol=1e-5)
    assert torch.allclose(hdr, torch.full_like(hdr, 0.7), atol=1e-5)  # convex combination
    assert torch.allclose(blend_hdr(w, hdrs)[1], norm, atol=1e-5)  # scale invariant


def test_weightnet_pads_odd_sizes():
    net = WeightNet(WeightNetConfig(num_images=5, encoder=(8, 8, 8), decoder=(8, 8, 8))).eval()
    with torch.no_grad():
        w = net(torch.rand(1, 30, 13, 22))
    assert w.shape == (1, 5, 3, 13, 22) and w.min() > 0 and w.max() < 1


@pytest.mark.parametrize("n", [2, 3])
def test_coarsenet_static_scene_recovers_radiance(n):
    """Zero flow: whatever the weights, a blend of consistent unclipped candidates is the radiance."""
    torch.manual_seed(1)
    net = CoarseNet(_small(n)).eval()
    for level in net.flownet.basic:
        torch.nn.init.zeros_(level[-1].weight)
        torch.nn.init.zeros_(level[-1].bias)
    evs = EVS[n]
    lo, hi = 2 ** -min(evs) * 0.02, 2 ** -max(evs) * 0.95  # every exposure records it unclipped
    hdr = lo + (hi - lo) * torch.rand(1, 3, 16, 16)
    ldrs = _static_window(hdr, evs)
    with torch.no_grad():
        out = net(ldrs, torch.tensor(evs))
    assert out.flows.abs().max() < 1e-6
    assert torch.allclose(out.warped, ldrs[:, net.neighbours], atol=1e-5)
    assert torch.allclose(out.hdr, hdr, rtol=1e-3, atol=1e-6)


def test_coarsenet_orders_flows_in_time():
    """Pairs (t-2, t+1) and (t-1, t+2) come out as neighbours t-2, t-1, t+1, t+2."""
    net = CoarseNet(_small(3)).eval()
    for level in net.flownet.basic:
        torch.nn.init.zeros_(level[-1].weight)
        torch.nn.init.zeros_(level[-1].bias)
    with torch.no_grad():
        net.flownet.basic[-1][-1].bias.copy_(torch.tensor([1.0, 0, 2, 0, 3, 0, 4, 0]))
        out = net(torch.rand(1, 5, 3, 16, 16), torch.tensor(EVS[3]))
    assert net.neighbours == [0, 1, 3, 4]
    assert torch.allclose(out.flows[0, :, 0, 0, 0], torch.tensor([1.0, 3, 2, 4]))


def test_coarsenet_keeps_reference_where_well_exposed():
    torch.manual_seed(2)
    net = CoarseNet(_small(2)).eval()
    ldrs = torch.rand(1, 3, 3, 16, 16)
    ldrs[:, 1, :, :8] *= 0.2  # low reference: dark left half is not well exposed
    evs = torch.tensor([1.5, -1.5, 1.5])
    with torch.no_grad():
        out = net(ldrs, evs)
    ref_hdr = ldr_to_hdr(ldrs[:, 1], -1.5)
    keep = (ldrs[:, 1].amax(1, keepdim=True) >= 0.4).float()
    assert torch.equal(out.mask, keep)
    assert 0 < keep.mean() < 1
    assert torch.allclose(out.hdr * keep, ref_hdr * keep)


def test_coarsenet_backward_reaches_all_parameters():
    torch.manual_seed(3)
    net = CoarseNet(_small(2)).train()
    ldrs = torch.rand(2, 3, 3, 16, 16) * 0.6  # many pixels below the 0.4 keep threshold
    out = net(ldrs, torch.tensor([[1.5, -1.5, 1.5], [-1.5, 1.5, -1.5]]))
    (out.hdr.mean() + out.flows.square().mean()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_coarsenet_config():
    for blend in ("paper", "merge"):
        cfg = CoarseNetConfig.for_exposures(3, blend)
        assert CoarseNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        CoarseNetConfig.from_dict({"num_exposure": 2})
    with pytest.raises(ValueError, match="unknown keys"):
        CoarseNetConfig.from_dict({"weight": {"num_images": 5, "bn": True}})
    with pytest.raises(ValueError, match="for_exposures"):
        CoarseNetConfig(num_exposures=3, flow=SpyNetConfig(num_triples=2))
    with pytest.raises(ValueError):
        CoarseNet()(torch.rand(1, 5, 3, 16, 16), torch.zeros(5))
