"""CoarseNet's ``blend="merge"`` design: a correction of the DIS-aligned weight-free merge.

Untrained (zero-initialised corrections) it must be the merge of its flow-aligned window bit for
bit, and the corrections must receive gradients from the first step.
"""
import pytest
import torch

from vs_hdrvid.models.blocks import ldr_to_hdr
from vs_hdrvid.models.coarsenet import CoarseNet, CoarseNetConfig, mulaw_residual
from vs_hdrvid.models.spynet import SpyNet, SpyNetConfig
from vs_hdrvid.ops.merge import blend_exposures, merge_exposures, merge_weights
from vs_hdrvid.ops.warp import flow_warp

EVS = {2: [1.5, -1.5, 1.5], 3: [-2.0, 0.0, 2.0, -2.0, 0.0]}


def _window(n: int, b: int = 2, h: int = 40, w: int = 36, seed: int = 0):
    """A static smooth scene (frames agree, so the merge uses every frame) with a bright top that
    every exposure clips, sub-pixel flows and random confidences."""
    g = torch.Generator().manual_seed(seed)
    t = 2 * n - 1
    evs = torch.tensor(EVS[n])
    hdr = torch.nn.functional.interpolate(torch.rand(b, 3, 5, 5, generator=g), (h, w), mode="bilinear")
    hdr = hdr * 2.0 ** -evs.max() + 1e-3
    hdr[:, :, :8] = 100.0
    ldrs = torch.stack([(hdr * 2.0 ** ev).clamp(0, 1).pow(1 / 2.2) for ev in evs.tolist()], 1)
    flows = torch.randn(b, t - 1, 2, h, w, generator=g) * 0.3
    conf = torch.rand(b, t - 1, 1, h, w, generator=g)
    return ldrs, evs.expand(b, t), flows, conf


def _merge_of(net: CoarseNet, ldrs, evs, flows, conf):
    b, t, c, h, w = ldrs.shape
    hdrs = ldr_to_hdr(ldrs.flatten(0, 1), evs.flatten()).unflatten(0, (b, t))
    ci = net.center
    frames = hdrs.clone()
    frames[:, net.neighbours] = flow_warp(hdrs[:, net.neighbours].flatten(0, 1), flows.flatten(0, 1)).unflatten(0, (b, t - 1))
    valid = torch.ones(b, t, 1, h, w)
    valid[:, net.neighbours] = conf
    sub = slice(ci - 1, ci + 2)  # merge_radius 1
    return merge_exposures(frames[:, sub], evs[:, sub], valid[:, sub], 1)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("flow_refine", [True, False])
def test_untrained_merge_design_is_the_merge_exactly(n, flow_refine):
    torch.manual_seed(n)
    net = CoarseNet(CoarseNetConfig.for_exposures(n, "merge", flow_refine)).eval()
    ldrs, evs, flows, conf = _window(n)
    with torch.no_grad():
        out = net(ldrs, evs, flows, conf)
    assert torch.equal(out.flows, flows)
    assert torch.equal(out.hdr, _merge_of(net, ldrs, evs, flows, conf))


def test_merge_weights_and_blend_are_the_merge():
    ldrs, evs, flows, conf = _window(2, seed=3)
    frames = ldr_to_hdr(ldrs.flatten(0, 1), evs.flatten()).unflatten(0, ldrs.shape[:2])
    valid = torch.rand(2, 3, 1, 40, 36)
    w, clipped = merge_weights(frames, evs, valid, 1)
    assert clipped.sum() > 0 and (w.sum(1) > 0).all() and (w[:, 0] > 0).any()
    assert torch.equal(blend_exposures(frames, w, evs, clipped), merge_exposures(frames, evs, valid, 1))


def test_spynet_refine_init_returns_init_until_trained():
    net = SpyNet(SpyNetConfig(num_triples=2, channels=(8, 8), refine_init=True))
    triples = torch.rand(1, 2, 3, 3, 37, 29)
    init = torch.randn(1, 4, 2, 37, 29)
    assert torch.equal(net(triples, init), init)
    with pytest.raises(ValueError, match="init must be"):
        net(triples)
    with torch.no_grad():
        net.basic[-1][-1].bias.fill_(0.5)  # a correction at the finest level moves every flow
    assert torch.allclose(net(triples, init), init + 0.5)


def test_merge_design_corrections_get_gradients_at_step_zero():
    net = CoarseNet(CoarseNetConfig.for_exposures(2, "merge")).train()
    ldrs, evs, flows, conf = _window(2, seed=5)
    out = net(ldrs, evs, flows, conf)
    out.hdr.square().mean().backward()
    for name in ("weightnet.head.weight", "weightnet.head.bias", "flownet.basic.4.6.weight"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_mulaw_residual_of_zero_is_exact_and_moves_in_mulaw():
    hdr = torch.rand(1, 3, 8, 8) * 4
    scale = torch.full((1, 1, 1, 1), 0.25)
    assert torch.equal(mulaw_residual(hdr, torch.zeros_like(hdr), scale), hdr)
    up = mulaw_residual(hdr, torch.full_like(hdr, 0.05), scale)
    assert (up >= hdr).all() and (up > hdr).any()


def test_merge_design_needs_init_flows():
    net = CoarseNet(CoarseNetConfig.for_exposures(2, "merge"))
    with pytest.raises(ValueError, match="init_flows"):
        net(torch.rand(1, 3, 3, 16, 16), torch.tensor(EVS[2]))


def test_a_negative_correction_of_vanishing_merge_weights_stays_finite(monkeypatch):
    """Where the merge trusts no frame its weights fall to 1e-45; a negative log-weight residual
    must not underflow them to 0 / 0 there (those pixels keep the merge's weights)."""
    import vs_hdrvid.models.coarsenet as coarsenet

    net = CoarseNet(CoarseNetConfig.for_exposures(2, "merge", False)).eval()
    ldrs, evs, flows, conf = _window(2)
    real = coarsenet.merge_weights

    def vanishing(frames, ev, valid, ref):
        w, clipped = real(frames, ev, valid, ref)
        w[..., :4, :] = torch.finfo(torch.float32).tiny * 2.0 ** -22  # 1.4e-45, the smallest float
        return w, clipped
    monkeypatch.setattr(coarsenet, "merge_weights", vanishing)
    with torch.no_grad():
        net.weightnet.out_conv.bias[:3 * 3] = -8.0  # every frame's weight x e^-8
        out = net(ldrs, evs, flows, conf)
    assert torch.isfinite(out.hdr).all() and torch.isfinite(out.weights).all()
