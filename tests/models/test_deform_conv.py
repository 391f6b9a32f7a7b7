"""Tests of vs_hdrvid.models.deform_conv: torchvision's arithmetic, the band schedule, layouts."""

import pytest
import torch
import torch.nn.functional as F

from vs_hdrvid.models import deform_conv
from vs_hdrvid.models.deform_conv import DeformConvPack, deform_conv2d, float_nchw


def test_deform_conv_pack_starts_as_half_masked_conv():
    torch.manual_seed(0)
    dcn = DeformConvPack(8, 16, 4, groups=2)
    x, guide = torch.rand(2, 8, 9, 11), torch.rand(2, 4, 9, 11)
    ref = 0.5 * F.conv2d(x, dcn.weight, padding=1) + dcn.bias.view(1, -1, 1, 1)
    assert torch.allclose(dcn(x, guide), ref, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 4])
def test_deform_conv2d_equals_torchvision(groups):
    from torchvision.ops import deform_conv2d as tv_deform_conv2d

    torch.manual_seed(0)
    x = torch.randn(2, 8, 13, 17, requires_grad=True)
    offset = (4 * torch.randn(2, 2 * groups * 9, 13, 17)).requires_grad_()  # many taps leave the frame
    mask = torch.rand(2, groups * 9, 13, 17, requires_grad=True)
    weight, bias = torch.randn(6, 8, 3, 3, requires_grad=True), torch.randn(6, requires_grad=True)
    ours = deform_conv2d(x, offset, weight, bias, mask, 1)
    ref = tv_deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    assert torch.allclose(ours, ref, atol=1e-4)
    g_ours = torch.autograd.grad(ours.square().sum(), (x, weight, mask))
    g_ref = torch.autograd.grad(ref.square().sum(), (x, weight, mask))
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-3)
    with torch.no_grad():  # the in-place path of inference
        assert torch.allclose(deform_conv2d(x, offset, weight, bias, mask, 1), ref, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float_nchw_of_channels_last_memory_and_its_channel_slices(dtype):
    x = torch.randn(2, 12, 5, 7).to(dtype)
    cl = x.contiguous(memory_format=torch.channels_last)
    for view, ref in ((cl, x), (cl[:, 3:9], x[:, 3:9]), (x, x), (x[:, 2:5], x[:, 2:5])):
        out = float_nchw(view)
        assert out.dtype == torch.float32 and out.is_contiguous()
        assert torch.equal(out, ref.float())
    leaf = torch.randn(2, 12, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    float_nchw(leaf[:, 3:9]).mul(2).sum().backward()  # the training path: differentiable
    assert torch.equal(leaf.grad[:, 3:9], torch.full((2, 6, 5, 7), 2.0)) and not leaf.grad[:, :3].any()


def test_deform_conv_pack_same_on_channels_last_features():
    """The inference layout (channels-last convolutions) gives what NCHW gives."""
    torch.manual_seed(0)
    dcn = DeformConvPack(8, 6, 8, groups=2)
    torch.nn.init.normal_(dcn.offset_mask.weight, std=0.3)
    x, guide = torch.randn(1, 8, 11, 14), torch.randn(1, 8, 11, 14)
    with torch.no_grad():
        ref = dcn(x, guide)
        dcn.to(memory_format=torch.channels_last)
        out = dcn(x.contiguous(memory_format=torch.channels_last), guide.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5)


def _inputs(b=2, c=16, h=23, w=19, groups=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g)
    offset = 3 * torch.randn(b, 2 * groups * 9, h, w, generator=g)
    mask = torch.rand(b, groups * 9, h, w, generator=g)
    weight, bias = torch.randn(8, c, 3, 3, generator=g), torch.randn(8, generator=g)
    return x, offset, weight, bias, mask


@pytest.mark.parametrize("band_bytes", [1, 40_000, 1 << 30])  # a row per band, a few rows, one band
def test_bands_equal_the_whole_frame_pass(monkeypatch, band_bytes):
    x, offset, weight, bias, mask = _inputs()
    whole = deform_conv2d(x.requires_grad_(), offset, weight, bias, mask, 1)  # autograd: whole-frame
    assert whole.is_contiguous()
    monkeypatch.setattr(deform_conv, "BAND_BYTES", band_bytes)
    with torch.inference_mode():
        bands = deform_conv2d(x, offset, weight, bias, mask, 1)
        no_bias = deform_conv2d(x, offset, weight, None, mask, 1)
    assert bands.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(bands, whole, atol=1e-4)
    assert torch.allclose(no_bias + bias.view(1, -1, 1, 1), whole, atol=1e-4)


def test_bands_in_bfloat16_from_channels_last_features(monkeypatch):
    """The autocast layout of RefineNet: bf16 channels-last input, matrix product in bf16."""
    x, offset, weight, bias, mask = _inputs(b=1, c=64, h=17, w=29, groups=8)
    cl = lambda t: t.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)  # noqa: E731
    whole = deform_conv2d(cl(x).requires_grad_(), cl(offset), weight, bias, cl(mask), 1).detach()
    monkeypatch.setattr(deform_conv, "BAND_BYTES", 100_000)
    with torch.inference_mode():
        out = deform_conv2d(cl(x), cl(offset), weight, bias, cl(mask), 1)
    assert out.dtype == whole.dtype == torch.bfloat16
    assert (out.float() - whole.float()).abs().max() <= 0.01 * whole.abs().max()


@pytest.mark.parametrize("channels_last", [False, True])
def test_pack_bands_from_its_raw_offsets_equal_the_autograd_path(monkeypatch, channels_last):
    """In inference the pack hands its offset/mask convolution's raw output to the bands."""
    torch.manual_seed(0)
    dcn = DeformConvPack(16, 8, 12, groups=4)
    torch.nn.init.normal_(dcn.offset_mask.weight, std=0.3)
    x, guide = torch.randn(2, 16, 21, 18), torch.randn(2, 12, 21, 18)
    ref = dcn(x, guide).detach()  # parameters require grad: the whole-frame path
    monkeypatch.setattr(deform_conv, "BAND_BYTES", 30_000)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.inference_mode():
        dcn.to(memory_format=fmt)
        out = dcn(x.contiguous(memory_format=fmt), guide.contiguous(memory_format=fmt))
    assert torch.allclose(out, ref, atol=1e-4)
