"""Tests of the CoarseNet flow network (vs_hdrvid.models.spynet)."""

import pytest
import torch

from vs_hdrvid.models.spynet import SpyNet, SpyNetConfig

PUBLIC_FLOW_PARAMS = 907_145  # spynet_triple, 9 -> 4 channels, 5 levels of 100-50-25


def _zero_heads(net: SpyNet) -> None:
    for level in net.basic:
        torch.nn.init.zeros_(level[-1].weight)
        torch.nn.init.zeros_(level[-1].bias)


@pytest.mark.parametrize("g,size", [(1, (16, 24)), (2, (18, 20))])
def test_spynet_shapes(g, size):
    net = SpyNet(SpyNetConfig(num_triples=g, channels=(100, 50, 25) if g == 1 else (8, 8))).eval()
    with torch.no_grad():
        flow = net(torch.rand(2, g, 3, 3, *size))
    assert flow.shape == (2, 2 * g, 2, *size)
    assert torch.isfinite(flow).all()
    assert flow.abs().max() <= net.config.max_flow


def test_spynet_parameter_count():
    n = sum(p.numel() for p in SpyNet().parameters())
    print(f"SpyNet (2 exposures): {n} parameters, public {PUBLIC_FLOW_PARAMS}")
    assert abs(n - PUBLIC_FLOW_PARAMS) <= 0.15 * PUBLIC_FLOW_PARAMS
    n3 = sum(p.numel() for p in SpyNet(SpyNetConfig(num_triples=2)).parameters())
    print(f"SpyNet (3 exposures): {n3} parameters")
    assert n3 > n


def test_spynet_zero_heads_give_zero_flow_on_identical_frames():
    net = SpyNet(SpyNetConfig(channels=(8, 8)))
    _zero_heads(net)
    frame = torch.rand(1, 3, 20, 24)
    triple = torch.stack((frame, frame, frame), dim=1)[:, None]  # (1, 1, 3, 3, H, W)
    with torch.no_grad():
        assert net(triple).abs().max() < 1e-6


def test_spynet_upsampling_doubles_coarse_flow():
    net = SpyNet(SpyNetConfig(channels=(8, 8), max_flow=0))
    _zero_heads(net)
    with torch.no_grad():
        net.basic[0][-1].bias.copy_(torch.tensor([1.0, -0.5, 0.25, 0.0]))  # coarsest level, 1/16 size
        flow = net(torch.rand(1, 1, 3, 3, 32, 48))
    expected = 16 * torch.tensor([1.0, -0.5, 0.25, 0.0]).view(1, 2, 2, 1, 1)
    assert torch.allclose(flow, expected.expand_as(flow), atol=1e-4)


def test_spynet_backward_reaches_all_parameters():
    torch.manual_seed(0)
    net = SpyNet(SpyNetConfig(channels=(16, 8)))
    net(torch.rand(1, 1, 3, 3, 16, 16)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_spynet_config():
    cfg = SpyNetConfig(num_triples=2, channels=(8, 4))
    assert SpyNetConfig.from_dict(cfg.to_dict() | {"channels": [8, 4]}) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        SpyNetConfig.from_dict({"triples": 2})
    with pytest.raises(ValueError):
        SpyNet(SpyNetConfig(num_triples=2))(torch.rand(1, 1, 3, 3, 16, 16))
