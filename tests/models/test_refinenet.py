"""Tests of RefineNet (vs_hdrvid.models.refinenet)."""

import pytest
import torch

from vs_hdrvid.models.deform_conv import DeformConvPack
from vs_hdrvid.models.refinenet import RefineNet, RefineNetConfig, TemporalAttentionFusion

PUBLIC_REFINE_PARAMS = 3_010_019  # DAHDRnet: 6 channels in, nf 64, 5 + 10 blocks, PCD, TA fusion
EVS = {(2, 3): [1.5, -1.5, 1.5], (3, 3): [0.0, 2.0, -2.0], (3, 5): [-2.0, 0.0, 2.0, -2.0, 0.0]}
SMALL = dict(features=16, deformable_groups=4, front_blocks=1, back_blocks=1)


@pytest.mark.parametrize("n,frames,small,residual", [(2, 3, False, True), (3, 3, True, True),
                                                      (3, 5, True, True), (2, 3, True, False)])
def test_refinenet_shapes_and_range(n, frames, small, residual):
    torch.manual_seed(0)
    cfg = RefineNetConfig.from_dict(RefineNetConfig.for_exposures(n, frames).to_dict() | {"coarse_residual": residual})
    net = RefineNet(RefineNetConfig.from_dict(cfg.to_dict() | SMALL) if small else cfg).eval()
    torch.nn.init.normal_(net.conv_last.weight, std=0.1)  # a trained head, not the zero start
    evs = torch.tensor(EVS[n, frames])
    h_sat = 2 ** -evs.min()
    hdrs, ldrs = torch.rand(1, frames, 3, 20, 12) * h_sat, torch.rand(1, frames, 3, 20, 12)
    with torch.no_grad():
        out = net(hdrs, ldrs, evs)
    assert out.hdr.shape == out.refined.shape == (1, 3, 20, 12)
    assert out.mask.shape == (1, 1, 20, 12)
    for v in out:
        assert torch.isfinite(v).all()
    assert out.refined.min() >= 0 and out.refined.max() <= h_sat
    assert out.hdr.min() >= 0 and out.hdr.max() <= h_sat
    assert net.conv_first1.in_channels == (6 if n == 2 else 3)


def test_refinenet_parameter_count():
    n = sum(p.numel() for p in RefineNet().parameters())
    print(f"RefineNet (2 exposures): {n} parameters, public {PUBLIC_REFINE_PARAMS}")
    assert abs(n - PUBLIC_REFINE_PARAMS) <= 0.15 * PUBLIC_REFINE_PARAMS


def test_refinenet_final_blend_equation4():
    torch.manual_seed(1)
    net = RefineNet(RefineNetConfig(**SMALL)).eval()
    ldrs = torch.rand(1, 3, 3, 16, 16)
    ldrs[:, 1, :, :8] *= 0.1  # low reference, dark top half
    hdrs = torch.rand(1, 3, 3, 16, 16)
    with torch.no_grad():
        out = net(hdrs, ldrs, torch.tensor([1.5, -1.5, 1.5]))
    peak = ldrs[:, 1].amax(1, keepdim=True)
    assert torch.allclose(out.mask, (peak / 0.15).clamp(max=1).square())
    assert torch.allclose(out.hdr, out.mask * hdrs[:, 1] + (1 - out.mask) * out.refined)
    well = out.mask == 1
    assert well.any() and (~well).any()
    assert torch.equal(out.hdr[well.expand_as(out.hdr)], hdrs[:, 1][well.expand_as(out.hdr)])


def test_untrained_residual_refinenet_returns_the_coarse_hdr():
    """Zero-initialised residual head: training starts from CoarseNet's output, not below it."""
    torch.manual_seed(3)
    net = RefineNet(RefineNetConfig(**SMALL)).eval()
    evs = torch.tensor([1.5, -1.5, 1.5])
    hdrs, ldrs = torch.rand(1, 3, 3, 20, 12) * 2**1.5, torch.rand(1, 3, 3, 20, 12)
    with torch.no_grad():
        out = net(hdrs, ldrs, evs)
    torch.testing.assert_close(out.refined, hdrs[:, 1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.hdr, hdrs[:, 1], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        out = RefineNet(RefineNetConfig(mulaw_input=True, **SMALL)).eval()(hdrs, ldrs, evs)
    torch.testing.assert_close(out.hdr, hdrs[:, 1], rtol=1e-4, atol=1e-5)
    paper = RefineNet(RefineNetConfig(coarse_residual=False, **SMALL)).eval()
    with torch.no_grad():
        assert (paper(hdrs, ldrs, evs).refined - hdrs[:, 1]).abs().max() > 0.1


def test_temporal_base_untrained_refinenet_returns_the_temporal_fusion():
    """``temporal_base``: the reference's coarse HDR is replaced by the fusion of the window, which a
    zero head returns; without it :meth:`RefineNet.base_window` is the identity."""
    from vs_hdrvid.ops.temporal_fuse import temporal_fuse

    torch.manual_seed(5)
    evs = torch.tensor([1.5, -1.5, 1.5])
    h_sat = 2**1.5
    hdrs = (torch.rand(1, 1, 3, 24, 32) + 0.1 * torch.rand(1, 3, 3, 24, 32)) * h_sat / 1.1
    ldrs = torch.rand(1, 3, 3, 24, 32)
    plain = RefineNet(RefineNetConfig(**SMALL)).eval()
    assert plain.base_window(hdrs, evs) is hdrs
    net = RefineNet(RefineNetConfig(temporal_base=True, **SMALL)).eval()
    with torch.no_grad():
        window = net.base_window(hdrs, evs)
        fused = temporal_fuse(hdrs, torch.tensor([h_sat]))
        out = net(window, ldrs, evs)
    assert torch.equal(window[:, 0], hdrs[:, 0]) and torch.equal(window[:, 2], hdrs[:, 2])
    torch.testing.assert_close(window[:, 1], fused)
    assert (fused - hdrs[:, 1]).abs().max() > 1e-3  # the fusion changed the reference
    torch.testing.assert_close(out.hdr, fused, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mulaw_input", [False, True])
def test_unmasked_residual_starts_exactly_at_coarse_and_reaches_well_exposed_pixels(mulaw_input):
    """``output_mask=False``: a zero head returns the coarse HDR bit for bit, even above ``H_sat``
    (where the mu-law residual's clamp would change it); a trained head also changes the pixels
    that equation 5 keeps from CoarseNet."""
    torch.manual_seed(4)
    evs = torch.tensor([1.5, -1.5, 1.5])
    hdrs, ldrs = torch.rand(1, 3, 3, 20, 12) * 2**1.5 * 1.2, torch.rand(1, 3, 3, 20, 12)
    net = RefineNet(RefineNetConfig(output_mask=False, mulaw_input=mulaw_input, **SMALL)).eval()
    with torch.no_grad():
        out = net(hdrs, ldrs, evs)
        assert torch.equal(out.hdr, hdrs[:, 1]) and torch.equal(out.refined, out.hdr)
        torch.nn.init.normal_(net.conv_last.weight, std=0.1)
        out = net(hdrs, ldrs, evs)
    well = (out.mask == 1).expand_as(out.hdr)
    assert well.any() and (out.hdr - hdrs[:, 1])[well].abs().max() > 1e-3
    with pytest.raises(ValueError, match="coarse_residual"):
        RefineNetConfig(output_mask=False, coarse_residual=False)


def test_temporal_attention_fusion_shapes():
    taf = TemporalAttentionFusion(nf=8, num_frames=5)
    assert taf(torch.rand(2, 5, 8, 6, 6)).shape == (2, 8, 6, 6)


@pytest.mark.parametrize("n", [2, 3])
def test_refinenet_backward_reaches_all_parameters(n):
    torch.manual_seed(2)
    net = RefineNet(RefineNetConfig(exposure_mask_input=n == 2, **SMALL))
    for m in net.modules():  # move the offset heads off zero so gradients reach the offset branch
        if isinstance(m, DeformConvPack):
            torch.nn.init.normal_(m.offset_mask.weight, std=1e-2)
    torch.nn.init.normal_(net.conv_last.weight, std=1e-2)  # and the zero-initialised residual head
    ldrs = torch.rand(1, 3, 3, 16, 16) * 0.3  # mostly badly exposed for a low reference
    out = net(torch.rand(1, 3, 3, 16, 16), ldrs, torch.tensor([1.5, -1.5, 1.5]))
    out.hdr.mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_refinenet_config():
    cfg = RefineNetConfig.for_exposures(3, num_frames=5)
    assert not cfg.exposure_mask_input and cfg.num_frames == 5
    assert RefineNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        RefineNetConfig.from_dict({"nframes": 3})
    with pytest.raises(ValueError, match="odd"):
        RefineNetConfig(num_frames=4)
    with pytest.raises(ValueError):
        RefineNet(RefineNetConfig(**SMALL))(torch.rand(1, 5, 3, 8, 8), torch.rand(1, 5, 3, 8, 8), torch.zeros(5))


@pytest.mark.parametrize("align,fusion", [(False, True), (True, False), (False, False)])
def test_table5_variants_without_alignment_or_attention(align, fusion):
    """Chen et al. Table 5 rows 3-4: without deformable alignment no PCD module runs (features
    fused unaligned), without temporal attention a convolution fuses the concatenation; both
    keep the zero-initialised residual start and train end to end."""
    torch.manual_seed(1)
    cfg = RefineNetConfig(deformable_align=align, attention_fusion=fusion, **SMALL)
    net = RefineNet(cfg)
    assert (net.align is None) != align
    assert isinstance(net.fusion, TemporalAttentionFusion) == fusion
    assert not any(isinstance(m, DeformConvPack) for m in net.modules()) or align
    evs = torch.tensor([1.5, -1.5, 1.5])
    hdrs, ldrs = torch.rand(2, 3, 3, 24, 16) * 2**1.5, torch.rand(2, 3, 3, 24, 16)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(hdrs, ldrs, evs).refined, hdrs[:, 1], rtol=1e-4, atol=1e-5)
    torch.nn.init.normal_(net.conv_last.weight, std=0.1)
    net.train()(hdrs, ldrs, evs).hdr.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert RefineNetConfig.from_dict(cfg.to_dict()) == cfg
