import math

import pytest
import torch
from kornia.geometry.transform import warp_affine

from vs_hdrvid.ops.warp import (
    compose_affine,
    flow_warp,
    forward_backward_confidence,
    invert_affine,
    resize_flow,
    similarity_matrix,
    similarity_to_flow,
    warp_similarity,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def smooth_image(b=1, c=3, h=24, w=32, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(b, c, h // 4, w // 4, generator=g), size=(h, w),
                                        mode="bicubic", align_corners=True)
    return x.to(**kw)


def translation(tx, ty, **kw):
    return torch.tensor([[[1.0, 0, tx], [0, 1, ty]]], **kw)


# ----------------------------------------------------------------------------- conventions
@pytest.mark.parametrize("device", DEVICES)
def test_warp_similarity_is_backward_sampling_like_kornia(device):
    # a point p of A lands on M p in the output: out(q) = A(M^-1 q)
    x = torch.zeros(1, 1, 9, 11, device=device)
    x[0, 0, 3, 4] = 1  # (x, y) = (4, 3)
    m = translation(2.0, 1.0, device=device)
    out = warp_similarity(x, m)
    assert out[0, 0].nonzero().tolist() == [[4, 6]]
    torch.testing.assert_close(out, warp_affine(x, m, dsize=(9, 11), align_corners=True))
    # rotation by 90 degrees about the pixel centre (5, 4): (4, 3) -> (6, 3)
    r = similarity_matrix(math.pi / 2, center=(5.0, 4.0), device=device)
    out = warp_similarity(x, r, mode="nearest", padding_mode="zeros")
    assert out[0, 0].nonzero().tolist() == [[3, 6]]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_similarity_to_flow_matches_warp_similarity(device, dtype):
    x = smooth_image(2, 3, 40, 50, device=device, dtype=dtype)
    m = similarity_matrix(torch.tensor([0.1, -0.05]), torch.tensor([1.02, 0.97]), torch.tensor([2.3, -1.0]),
                          torch.tensor([0.5, 3.0]), center=(24.5, 19.5), device=device, dtype=torch.float64)
    a = warp_similarity(x, m)
    b = flow_warp(x, similarity_to_flow(m, 40, 50).to(dtype))
    assert a.dtype == b.dtype == dtype and a.shape == x.shape
    tol = 2e-3 if dtype == torch.float16 else 1e-4
    torch.testing.assert_close(a, b, atol=tol, rtol=0)


def test_warp_similarity_mask():
    x = torch.rand(1, 2, 10, 12)
    out, mask = warp_similarity(x, translation(2.0, -1.0), return_mask=True)
    assert out.shape == x.shape and mask.shape == (1, 1, 10, 12)
    expect = torch.zeros(10, 12)
    expect[:9, 2:] = 1  # source column q-2 >= 0, source row q+1 <= 9
    torch.testing.assert_close(mask[0, 0], expect)
    _, mask = warp_similarity(x, translation(0.0, 0.0), return_mask=True)
    assert mask.min() == 1
    out, mask = warp_similarity(x, translation(1.0, 0.0), return_mask=True, dsize=(5, 6))
    assert out.shape == (1, 2, 5, 6) and mask.shape == (1, 1, 5, 6)


# ---------------------------------------------------------------------------------- flow_warp
@pytest.mark.parametrize("device", DEVICES)
def test_flow_warp_identity_and_shift(device):
    x = torch.rand(2, 3, 8, 9, device=device)
    torch.testing.assert_close(flow_warp(x, torch.zeros(2, 2, 8, 9, device=device)), x)
    flow = torch.zeros(2, 2, 8, 9, device=device)
    flow[:, 0] = 2.0  # out(p) = x(p + (2, 0))
    out = flow_warp(x, flow, padding_mode="zeros")
    torch.testing.assert_close(out[..., :-2], x[..., 2:])
    assert (out[..., -2:] == 0).all()
    out = flow_warp(x, flow, interpolation="nearest")
    torch.testing.assert_close(out[..., :-2], x[..., 2:])


def test_flow_warp_gradcheck():
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    flow = (torch.rand(1, 2, 5, 6, dtype=torch.float64) - 0.5).mul(1.3).requires_grad_()
    assert torch.autograd.gradcheck(flow_warp, (x, flow), eps=1e-6, atol=1e-4)


def test_flow_warp_exceptions():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="flow"):
        flow_warp(x, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="match"):
        flow_warp(x, torch.zeros(1, 2, 8, 7))
    with pytest.raises(ValueError, match="x"):
        flow_warp(torch.rand(3, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="M"):
        warp_similarity(x, torch.eye(3)[None])
    with pytest.raises(ValueError, match="batch"):
        warp_similarity(x, translation(0, 0).expand(2, 2, 3))


# -------------------------------------------------------------------------------- resize_flow
def test_resize_flow_scales_vectors():
    flow = torch.ones(1, 2, 8, 16)
    flow[:, 1] = -2.0
    out = resize_flow(flow, (16, 48))
    assert out.shape == (1, 2, 16, 48)
    torch.testing.assert_close(out[:, 0], torch.full((1, 16, 48), 3.0))
    torch.testing.assert_close(out[:, 1], torch.full((1, 16, 48), -4.0))
    out = resize_flow(flow, (15, 31), align_corners=True)
    torch.testing.assert_close(out[:, 0], torch.full((1, 15, 31), 2.0))
    assert resize_flow(flow, (8, 16)) is flow
    with pytest.raises(ValueError, match="size"):
        resize_flow(flow, (0, 4))


def test_resize_flow_consistent_with_similarity():
    # a similarity's flow at half resolution equals the half-size flow rescaled (pixel-area convention)
    m = similarity_matrix(0.02, 1.01, 3.0, -2.0, center=(31.5, 23.5), dtype=torch.float64)
    full = similarity_to_flow(m, 48, 64)
    s = torch.tensor([[[0.5, 0, -0.25], [0, 0.5, -0.25]]], dtype=torch.float64)  # fine -> coarse pixels
    m_half = compose_affine(compose_affine(invert_affine(s), m), s)
    half = similarity_to_flow(m_half, 24, 32)
    torch.testing.assert_close(resize_flow(half, (48, 64))[..., 4:-4, 4:-4], full[..., 4:-4, 4:-4],
                               atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ matrix algebra
def test_compose_invert_and_similarity_matrix():
    m = similarity_matrix(torch.tensor([0.3, -1.0]), torch.tensor([1.5, 0.8]), 2.0, -1.0, center=(4.0, 3.0),
                          dtype=torch.float64)
    assert m.shape == (2, 2, 3)
    eye = torch.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=torch.float64).expand(2, 2, 3)
    torch.testing.assert_close(compose_affine(m, invert_affine(m)), eye)
    torch.testing.assert_close(compose_affine(invert_affine(m), m), eye)
    # the centre moves by the translation only
    c = m @ torch.tensor([4.0, 3.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(c, torch.tensor([[6.0, 2.0]] * 2, dtype=torch.float64))
    # order: translate then scale
    t, s = translation(1.0, 0.0), similarity_matrix(0.0, 2.0)
    p = torch.tensor([1.0, 1.0, 1.0])
    torch.testing.assert_close(compose_affine(t, s)[0] @ p, torch.tensor([4.0, 2.0]))
    # positive angle turns +x towards +y (y down)
    torch.testing.assert_close(similarity_matrix(math.pi / 2)[0] @ torch.tensor([1.0, 0, 1]),
                               torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="a"):
        compose_affine(torch.zeros(1, 3, 3), t)


# ------------------------------------------------------------------------ fw-bw consistency
@pytest.mark.parametrize("device", DEVICES)
def test_forward_backward_confidence(device):
    fw = torch.zeros(1, 2, 16, 16, device=device)
    fw[:, 0] = 3.0
    conf = forward_backward_confidence(fw, -fw)
    assert conf.shape == (1, 1, 16, 16)
    assert (conf[..., :, :13] == 1).all()  # consistent
    assert (conf[..., :, 13:] == 0).all()  # target outside frame m
    bad = forward_backward_confidence(fw, fw)
    assert bad[..., :13].max() < 0.01
    hard = forward_backward_confidence(fw, -fw + 0.5, soft=False)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert 0 <= bad.min() and conf.max() <= 1
    with pytest.raises(ValueError, match="differ"):
        forward_backward_confidence(fw, fw[..., :8])
