import math

import pytest
import torch
import torch.nn.functional as F

from vs_hdrvid.ops.similarity import SimilarityEstimator, estimate_similarity
from vs_hdrvid.ops.warp import compose_affine, invert_affine, similarity_matrix, warp_similarity

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ------------------------------------------------------------------------------------ fixtures
def hdr_scene(seed: int, h: int, w: int) -> torch.Tensor:
    """Smooth random HDR field with edges: blurred noise octaves + rectangles, ~100:1 range."""
    g = torch.Generator().manual_seed(seed)
    logf = torch.zeros(1, 1, h, w)
    for k, amp in ((8, 1.0), (16, 0.7), (32, 0.5), (64, 0.35), (128, 0.25), (256, 0.15)):
        n = torch.randn(1, 1, max(2, h * k // 960), k, generator=g)
        logf += amp * F.interpolate(n, size=(h, w), mode="bicubic", align_corners=False)
    for _ in range(25):
        y0, x0 = (int(torch.randint(0, s - 40, (1,), generator=g)) for s in (h, w))
        hh, ww = int(torch.randint(10, 120, (1,), generator=g)), int(torch.randint(10, 160, (1,), generator=g))
        logf[..., y0:y0 + hh, x0:x0 + ww] += 0.8 * float(torch.randn(1, generator=g))
    logf = (logf - logf.mean()) / logf.std()
    return 0.25 * torch.exp(logf * math.log(100) / 6)  # +-3 sigma spans 100:1


def render(hdr: torch.Tensor, ev: float, g: torch.Generator, noise: float = 0.01) -> torch.Tensor:
    """LDR frame: gamma 2.2 response, clipping, noise, 8-bit quantisation."""
    ldr = (hdr * 2**ev).clamp(0, 1).pow(1 / 2.2) + noise * torch.randn(hdr.shape, generator=g)
    return (ldr * 255).round().clamp(0, 255) / 255


def prepare(ldr: torch.Tensor, ev: float, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Linearise, exposure-normalise, clip to the common range; mask the well-exposed pixels."""
    return (ldr.pow(2.2) / 2**ev).clamp(max=clip), ((ldr > 0.02) & (ldr < 0.95)).float()


def shifted(m: torch.Tensor, d: float) -> torch.Tensor:
    """The same transform expressed in coordinates shifted by +d (p' = p + d)."""
    t = torch.tensor([[[1.0, 0, d], [0, 1, d]]], dtype=m.dtype)
    return compose_affine(compose_affine(invert_affine(t), m), t)


def make_pair(seed, angle_deg, scale, tx, ty, h=540, w=960, pad=40, moving=False):
    """Frame A at EV -1.5 (ref) and B at EV +1.5 displaced by T (A -> B); returns inputs and T."""
    g = torch.Generator().manual_seed(1000 + seed)
    big = hdr_scene(seed, h + 2 * pad, w + 2 * pad)
    t = similarity_matrix(math.radians(angle_deg), scale, tx, ty, center=((w - 1) / 2, (h - 1) / 2))
    big_b = warp_similarity(big, shifted(t, pad))
    a = big[..., pad:pad + h, pad:pad + w].clone()
    b = big_b[..., pad:pad + h, pad:pad + w].clone()
    if moving:  # a textured object (~10 % of the frame) moving on its own
        oh, ow = int(0.3 * h), int(0.33 * w)
        obj = 1.5 * hdr_scene(seed + 999, oh, ow)
        a[..., 50:50 + oh, 100:100 + ow] = obj
        b[..., 80:80 + oh, 160:160 + ow] = obj
    clip = 2**-1.5
    ref, ref_mask = prepare(render(a, -1.5, g), -1.5, clip)
    mov, mov_mask = prepare(render(b, 1.5, g), 1.5, clip)
    return ref, mov, ref_mask, mov_mask, t


def corner_rms(m_est: torch.Tensor, m_true: torch.Tensor, h: int, w: int) -> torch.Tensor:
    c = torch.tensor([[0.0, w - 1, 0, w - 1], [0, 0, h - 1, h - 1], [1, 1, 1, 1]], dtype=m_est.dtype)
    return (m_est.cpu() @ c - m_true.cpu() @ c).norm(dim=1).pow(2).mean(-1).sqrt()


# ------------------------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("seed,angle,scale,tx,ty", [
    (0, 0.7, 1.012, 3.2, -1.7),
    (1, -1.0, 0.98, -5.0, 4.0),
    (2, 0.25, 1.02, 1.1, 5.0),
    (3, -0.4, 0.995, 4.6, 2.9),
])
def test_accuracy_540p_three_stops(seed, angle, scale, tx, ty):
    ref, mov, rm, mm, t = make_pair(seed, angle, scale, tx, ty)
    m, conf = estimate_similarity(ref, mov, rm, mm)
    # M maps mov (B) onto ref (A): the inverse of the A -> B displacement
    assert corner_rms(m, invert_affine(t), 540, 960).item() <= 0.25
    assert conf.item() > 0.8


def test_accuracy_moving_object_is_ignored():
    ref, mov, rm, mm, t = make_pair(7, 0.6, 1.01, -3.0, 2.5, moving=True)
    m, conf = estimate_similarity(ref, mov, rm, mm)
    err = corner_rms(m, invert_affine(t), 540, 960).item()
    assert err <= 0.5
    assert 0.3 < conf.item() < 0.95  # the unexplained object lowers the confidence
    # without the robust weights the object pulls the estimate away
    m_plain, _ = estimate_similarity(ref, mov, rm, mm, robust_scale=1e4)
    assert err < corner_rms(m_plain, invert_affine(t), 540, 960).item()


@pytest.mark.parametrize("device", DEVICES)
def test_batch_is_vectorised_and_independent(device):
    pairs = [make_pair(s, a, sc, x, y, h=128, w=192, pad=16)
             for s, a, sc, x, y in ((4, 0.8, 1.01, 2.0, -1.0), (5, -0.5, 0.99, -3.0, 2.0))]
    ref, mov, rm, mm, t = (torch.cat(z) for z in zip(*pairs))
    m, conf = estimate_similarity(*(z.to(device) for z in (ref, mov, rm, mm)))
    assert m.shape == (2, 2, 3) and conf.shape == (2,) and m.device.type == device
    assert (corner_rms(m, invert_affine(t), 128, 192) < 0.25).all()
    m0, _ = estimate_similarity(ref[:1].to(device), mov[:1].to(device), rm[:1].to(device), mm[:1].to(device))
    torch.testing.assert_close(m0.cpu(), m[:1].cpu(), atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_identity_and_dtype(device, dtype):
    ref = hdr_scene(11, 96, 128).clamp(max=1).to(device, dtype)
    m, conf = estimate_similarity(ref, ref)
    assert m.dtype == dtype and conf.dtype == dtype
    eye = torch.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=torch.float64)
    assert corner_rms(m.double(), eye[None], 96, 128).item() < 1e-2
    assert 0.95 < conf.item() <= 1.0


def test_module_agrees_with_function():
    ref, mov, rm, mm, _ = make_pair(6, 0.5, 1.0, 2.0, 1.0, h=96, w=128, pad=16)
    est = SimilarityEstimator(robust_scale=2.5)
    m1, c1 = est(ref, mov, rm, mm)
    m2, c2 = estimate_similarity(ref, mov, rm, mm, robust_scale=2.5)
    torch.testing.assert_close(m1, m2)
    torch.testing.assert_close(c1, c2)
    assert "robust_scale=2.5" in repr(est)


def test_init_is_used():
    ref, mov, rm, mm, t = make_pair(8, 0.0, 1.0, 3.0, 0.0, h=96, w=128, pad=16)
    m, _ = estimate_similarity(ref, mov, rm, mm, levels=1, iters=(0,), init=invert_affine(t))
    torch.testing.assert_close(m, invert_affine(t))


def test_confidence_low_without_texture_or_overlap():
    flat = torch.full((1, 1, 64, 64), 0.3)
    _, conf = estimate_similarity(flat, flat)
    assert conf.item() == 0.0
    ref = hdr_scene(12, 64, 96)
    mask = torch.zeros_like(ref)
    mask[..., :4, :4] = 1
    _, conf = estimate_similarity(ref, ref, mask, mask)
    assert conf.item() < 0.05
    other = hdr_scene(13, 64, 96)
    _, conf = estimate_similarity(ref.clamp(max=0.35), other.clamp(max=0.35))
    assert conf.item() < 0.3


def test_exceptions():
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="ref"):
        estimate_similarity(torch.rand(1, 3, 32, 32), x)
    with pytest.raises(ValueError, match="mov"):
        estimate_similarity(x, torch.rand(1, 1, 32, 30))
    with pytest.raises(ValueError, match="ref_mask"):
        estimate_similarity(x, x, ref_mask=torch.ones(1, 1, 16, 16))
    with pytest.raises(ValueError, match="iters"):
        estimate_similarity(x, x, levels=2, iters=(3,))
    with pytest.raises(ValueError, match="levels"):
        estimate_similarity(x, x, levels=9)
    with pytest.raises(ValueError, match="init"):
        estimate_similarity(x, x, init=torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="8x8"):
        estimate_similarity(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))


# ------------------------------------------------------------------- per-frame pyramids (issue 14)
@pytest.mark.parametrize("hw,levels", [((270, 480), 4), ((97, 131), 2), ((64, 64), 3)])
def test_per_frame_pyramids_equal_the_joint_stack(hw, levels):
    """The set-up estimate_similarity had: both frames and masks padded, blurred and halved as one
    4-channel stack. Each frame's own pyramid is the same, channel for channel, bit for bit (the
    blur and halving act per channel), so a node may build a frame's pyramid once for both pairs."""
    from kornia.filters import gaussian_blur2d
    from kornia.geometry.transform import pyrdown

    from vs_hdrvid.ops.similarity import similarity_pyramid

    g = torch.Generator().manual_seed(4)
    h, w = hw
    t0, i0 = torch.rand(1, 1, h, w, generator=g), torch.rand(1, 1, h, w, generator=g)
    rm, mm = ((torch.rand(1, 1, h, w, generator=g) > 0.2).float() for _ in range(2))
    mult = 2 ** (levels - 1)
    stack = F.pad(torch.cat((t0.sqrt(), i0.sqrt(), rm, mm), 1), (0, (-w) % mult, 0, (-h) % mult), mode="replicate")
    stack[:, 2:, h:, :] = 0
    stack[:, 2:, :, w:] = 0
    joint = [gaussian_blur2d(stack, (5, 5), (1.0, 1.0), border_type="replicate")]
    for _ in range(levels - 1):
        joint.append(pyrdown(joint[-1], border_type="replicate"))
    ref, mov = similarity_pyramid(t0, rm, levels), similarity_pyramid(i0, mm, levels)
    assert len(ref) == len(mov) == levels
    for lvl, a, b in zip(joint, ref, mov):
        assert torch.equal(lvl[:, 0::2], a) and torch.equal(lvl[:, 1::2], b)


def test_estimate_from_pyramids_equals_estimate():
    from vs_hdrvid.ops.similarity import estimate_similarity_from_pyramids, similarity_pyramid

    g = torch.Generator().manual_seed(6)
    hdr = hdr_scene(6, 200, 300)
    m = shifted(similarity_matrix(0.01, 1.005, center=(150, 100)), 2.5)
    ref, mov = render(hdr, 0.0, g).mean(1, keepdim=True), warp_similarity(render(hdr, 0.0, g), m).mean(1, keepdim=True)
    want = estimate_similarity(ref, mov)
    got = estimate_similarity_from_pyramids(similarity_pyramid(ref), similarity_pyramid(mov), (200, 300))
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    with pytest.raises(ValueError, match="same levels"):
        estimate_similarity_from_pyramids(similarity_pyramid(ref, levels=3), similarity_pyramid(mov, levels=2),
                                          (200, 300))
