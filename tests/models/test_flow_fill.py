"""The confidence-gated flow fill (``CoarseNetConfig.flow_net="fill"``): the identity on the DIS
flow until trained, a normalised convolution that ignores unconfident pixels, and gates that can
learn to fill them."""
import pytest
import torch

from vs_hdrvid.models.coarsenet import CoarseNet, CoarseNetConfig
from vs_hdrvid.models.flow_fill import FlowFill, FlowFillConfig, normalized_convolution

from .test_coarsenet_merge import _merge_of, _window


@pytest.mark.parametrize("n", [2, 3])
def test_untrained_fill_coarsenet_is_the_merge_exactly(n):
    torch.manual_seed(n)
    net = CoarseNet(CoarseNetConfig.for_exposures(n, "merge", True, "fill")).eval()
    assert isinstance(net.flownet, FlowFill) and net.flow_multiple == 2
    ldrs, evs, flows, conf = _window(n, h=39, w=37)  # odd sides: the half-resolution path pads and crops
    with torch.no_grad():
        out = net(ldrs, evs, flows, conf)
    assert torch.equal(out.flows, flows)
    assert torch.equal(out.hdr, _merge_of(net, ldrs, evs, flows, conf))


def test_normalized_convolution_ignores_unconfident_pixels():
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 0] = 3.0
    conf = torch.ones(1, 1, 32, 32)
    flow[:, :, 10:20, 10:20] = -50.0  # a wrong patch the confidence marks
    conf[:, :, 10:20, 10:20] = 0.0
    filled = normalized_convolution(flow, conf, 4.0)
    assert torch.allclose(filled[:, 0, 15, 15], torch.tensor(3.0), atol=1e-2)
    assert torch.allclose(filled[:, 1], torch.zeros(1, 32, 32), atol=1e-2)
    lost = normalized_convolution(flow, torch.zeros_like(conf), 4.0)  # nothing confident: the plain blur
    assert lost[0, 0, 15, 15] < -10


def test_fill_gate_learns_to_replace_unconfident_flow():
    torch.manual_seed(0)
    net = FlowFill(FlowFillConfig(channels=8, dilations=(2,)))
    ref = torch.rand(4, 3, 32, 32)
    gt = torch.full((4, 2, 32, 32), 2.0)
    flow, conf = gt.clone(), torch.ones(4, 1, 32, 32)
    flow[:, :, 8:24, 8:24] += 20 * torch.randn(4, 2, 16, 16)
    conf[:, :, 8:24, 8:24] = 0.0
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    start = (net(ref, ref, flow, conf) - gt).norm(dim=1).mean().item()
    for _ in range(60):
        loss = (net(ref, ref, flow, conf) - gt).norm(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * start


def test_fill_needs_the_merge_design():
    with pytest.raises(ValueError, match="flow_net"):
        CoarseNetConfig.for_exposures(2, "paper").__class__(blend="paper", flow_net="fill")
    with pytest.raises(ValueError, match="FlowFill: expected"):
        FlowFill()(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8))
