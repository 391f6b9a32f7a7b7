"""Flow-guided masked attention (vs_hdrvid.models.fgma, DeAltHDR section 3.3, eqs. 4-8).

The attention is checked against a dense per-pixel loop written from the docstring (window of
the neighbour's keys centred on the rounded, frame-clamped flow target; keys outside the frame
are zeros that still take part in the softmax), and its cost against the mask: only the masked
queries are gathered and computed.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vs_hdrvid.models.fgma import (FGMA, consistency_difference, level_mask, masked_window_attention,
                                   occlusion_mask)
from vs_hdrvid.ops.warp import flow_warp


def _texture(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth random texture in [0, 1] with detail at every scale (so shifts change it)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g, dtype=torch.float64)
    x = x + F.interpolate(torch.rand(b, c, h // 4, w // 4, generator=g, dtype=torch.float64), (h, w),
                          mode="bilinear", align_corners=False)
    return x / 2


def _const_flow(b: int, h: int, w: int, u: float, v: float) -> torch.Tensor:
    flow = torch.zeros(b, 2, h, w, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = u, v
    return flow


def dense_reference(q, k, v, flow, mask, heads, window, bias=None):
    """Eqs. 7-8 pixel by pixel: softmax(q.K^T / sqrt(d) + bias) V over the window at round(p + flow)."""
    b, c, h, w = q.shape
    d, r = c // heads, window // 2
    out = torch.zeros_like(q)
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                if not mask[bi, 0, y, x]:
                    continue
                cy = min(max(y + int(torch.round(flow[bi, 1, y, x])), 0), h - 1)
                cx = min(max(x + int(torch.round(flow[bi, 0, y, x])), 0), w - 1)
                keys = torch.zeros(window * window, c, dtype=q.dtype)
                vals = torch.zeros(window * window, c, dtype=q.dtype)
                for i, dy in enumerate(range(-r, r + 1)):
                    for j, dx in enumerate(range(-r, r + 1)):
                        yy, xx = cy + dy, cx + dx
                        if 0 <= yy < h and 0 <= xx < w:
                            keys[i * window + j] = k[bi, :, yy, xx]
                            vals[i * window + j] = v[bi, :, yy, xx]
                for hd in range(heads):
                    sl = slice(hd * d, (hd + 1) * d)
                    logits = keys[:, sl] @ q[bi, sl, y, x] / math.sqrt(d)
                    if bias is not None:
                        logits = logits + bias[hd]
                    out[bi, sl, y, x] = logits.softmax(0) @ vals[:, sl]
    return out


# -- equations 4-6: consistency difference and mask


def test_occlusion_mask_thresholds():
    d = torch.tensor([0.0, 1e-6, 0.02, 1 / 30, 0.034, 0.1, 1.0])
    assert occlusion_mask(d, 0.0).sum() == 0  # s = 0: flow only
    assert occlusion_mask(d, 1e9)[0] == 0  # D = 0 is never flagged by a finite s
    assert occlusion_mask(d, math.inf).tolist() == [1.0] * 7  # s = inf: everything, D = 0 included
    # eq. 6, D on [0, 1] (the paper's D/255): M = s * D > 0.5, strictly
    assert occlusion_mask(torch.tensor([0.05, 0.05 + 1e-6, 0.0499]), 10.0).tolist() == [0.0, 1.0, 0.0]
    assert occlusion_mask(d, 15.0).tolist() == [0, 0, 0, 0, 1, 1, 1]
    # 8-bit form of eq. 6: s * D255 / 255 > 0.5
    d255 = torch.arange(256, dtype=torch.float64)
    for s in (1.0, 3.0, 15.0, 100.0):
        assert torch.equal(occlusion_mask(d255 / 255, s), (s * d255 / 255 > 0.5).double())
    assert occlusion_mask(d.double(), 15.0).dtype == torch.float64


def test_occlusion_mask_grows_with_s():
    d = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.2
    masks = [occlusion_mask(d, s) for s in (0.0, 0.5, 1.0, 5.0, 15.0, 100.0, math.inf)]
    for small, large in zip(masks, masks[1:]):
        assert bool((small <= large).all())
    assert masks[0].sum() == 0 and masks[-1].mean() == 1


def test_level_mask_averages_d_before_thresholding():
    d = torch.zeros(1, 1, 8, 8)
    d[..., :2, :2] = 0.08  # one 2x2 block; its 4x4 average is 0.02
    m = level_mask(d, 15.0, (4, 4))
    assert m.shape == (1, 1, 4, 4) and m[0, 0, 0, 0] == 1 and m.sum() == 1  # 15 * 0.08 > 0.5
    assert level_mask(d, 15.0, (2, 2)).sum() == 0  # 15 * 0.02 <= 0.5
    assert torch.equal(level_mask(d, 15.0, (8, 8)), occlusion_mask(d, 15.0))


def test_consistency_difference_zero_for_zero_and_invertible_flows():
    img = _texture(2, 3, 24, 32)
    zero = torch.zeros(2, 2, 24, 32, dtype=torch.float64)
    d = consistency_difference(img, zero, zero)
    assert d.shape == (2, 1, 24, 32) and d.abs().max() < 1e-12  # grid_sample rounding only
    # an integer shift and its inverse: exact inside the frame (away from the clamped border)
    d = consistency_difference(img, _const_flow(2, 24, 32, 2.0, 1.0), _const_flow(2, 24, 32, -2.0, -1.0))
    assert d[..., :-1, :-2].abs().max() < 1e-12


def test_consistency_difference_large_where_flows_disagree():
    img = _texture(1, 3, 24, 32)
    fwd = _const_flow(1, 24, 32, 2.0, 1.0)
    d_same = consistency_difference(img, fwd, fwd)  # the "inverse" points the same way
    assert d_same[..., 4:-4, 4:-4].mean() > 0.05
    bwd = _const_flow(1, 24, 32, -2.0, -1.0)
    bwd[..., 10:16, 10:18] = 3.0  # a flow failure in one patch
    d = consistency_difference(img, fwd, bwd)
    bad = torch.zeros_like(d, dtype=torch.bool)
    bad[..., 9:15, 8:16] = True  # the pixels whose forward target lands in the patch
    assert d[..., :-1, :-2][~bad[..., :-1, :-2]].max() < 1e-12  # exact elsewhere inside the frame
    assert d[bad].mean() > 0.05
    assert occlusion_mask(d, 15.0)[bad].mean() > 0.5


def test_consistency_difference_follows_equation_4_order():
    """L_{t->n}(q) = L_t(q + O_{n->t}(q)); L_{t->n->t}(p) = L_{t->n}(p + O_{t->n}(p)): the backward
    flow is read at the forward target, so a flow failure in O_{n->t} at x < 8 only affects the
    pixels whose target p + 2 falls there (x < 6), not x = 6, 7."""
    img = _texture(1, 3, 16, 32)
    fwd = _const_flow(1, 16, 32, 2.0, 0.0)
    bwd = _const_flow(1, 16, 32, -2.0, 0.0)
    bwd[..., :8] = 5.0
    d = consistency_difference(img, fwd, bwd)
    assert d[..., 6:30].abs().max() < 1e-12
    assert d[..., :6].mean() > 0.05


# -- masked window attention


def _qkv(b, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, c, h, w, generator=g, dtype=torch.float64) for _ in range(3))


@pytest.mark.parametrize("b,c,heads,window,with_bias", [(1, 4, 1, 3, False), (2, 6, 3, 5, True), (2, 8, 2, 3, True)])
def test_masked_window_attention_matches_dense_reference(b, c, heads, window, with_bias):
    h, w = 7, 9
    q, k, v = _qkv(b, c, h, w)
    g = torch.Generator().manual_seed(3)
    flow = (torch.rand(b, 2, h, w, generator=g, dtype=torch.float64) - 0.5) * 8  # targets off the frame too
    flow[:, :, 0, 0] = torch.tensor([-20.0, -20.0], dtype=torch.float64)  # far off: the clamped corner window
    flow[:, :, -1, -1] = 0.0  # a corner centre: window clipped at the border
    mask = (torch.rand(b, 1, h, w, generator=g) > 0.4).double()
    mask[:, :, 0, 0] = mask[:, :, -1, -1] = 1
    bias = torch.randn(heads, window * window, generator=g, dtype=torch.float64) if with_bias else None
    out = masked_window_attention(q, k, v, flow, mask, heads, window, bias)
    ref = dense_reference(q, k, v, flow, mask, heads, window, bias)
    assert out.shape == (b, c, h, w)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert out.masked_select(mask == 0).abs().max() == 0
    # bounded chunks (several gathers) give the same result
    small = masked_window_attention(q, k, v, flow, mask, heads, window, bias, chunk_elems=window * window * c * 3)
    torch.testing.assert_close(small, out, rtol=0, atol=1e-12)


def test_masked_window_attention_full_mask_and_empty_mask():
    q, k, v = _qkv(2, 4, 6, 6, seed=1)
    flow = torch.zeros(2, 2, 6, 6, dtype=torch.float64)
    ones = torch.ones(2, 1, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(masked_window_attention(q, k, v, flow, ones, 2, 3),
                               dense_reference(q, k, v, flow, ones, 2, 3), rtol=1e-10, atol=1e-10)
    assert masked_window_attention(q, k, v, flow, ones * 0, 2, 3).abs().max() == 0


def test_masked_queries_only_are_read():
    q, k, v = _qkv(2, 4, 8, 8, seed=2)
    flow = torch.zeros(2, 2, 8, 8, dtype=torch.float64)
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    mask[0, :, 2:5, 1:6] = 1
    mask[1, :, 6, 7] = 1
    out = masked_window_attention(q, k, v, flow, mask, 2, 3)
    q2 = torch.where(mask.bool(), q, torch.full_like(q, 1e3))  # change every unmasked query
    torch.testing.assert_close(masked_window_attention(q2, k, v, flow, mask, 2, 3), out, rtol=0, atol=0)
    q3 = q.clone()
    q3[0, :, 3, 3] += 1.0  # a masked query does change its own output
    assert not torch.equal(masked_window_attention(q3, k, v, flow, mask, 2, 3), out)


def test_attention_cost_scales_with_the_mask(monkeypatch):
    """Rows given to the logits einsum equal mask.sum(), and the FLOPs are proportional to it."""
    b, c, h, w = 2, 8, 16, 16
    q, k, v = (t.float() for t in _qkv(b, c, h, w, seed=4))
    flow = torch.zeros(b, 2, h, w)
    rows: list[int] = []
    real = torch.einsum

    def counting(eq, *ops):
        if eq.startswith("mhd,mkhd"):
            rows.append(ops[0].shape[0])
        return real(eq, *ops)

    flops = {}
    for frac in (0.0, 0.1, 0.25, 1.0):
        mask = (torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(5)) < frac).float()
        rows.clear()
        monkeypatch.setattr(torch, "einsum", counting)
        with FlopCounterMode(display=False) as fc:
            masked_window_attention(q, k, v, flow, mask, 2, 5, chunk_elems=5 * 5 * c * 100)
        monkeypatch.setattr(torch, "einsum", real)
        assert sum(rows) == int(mask.sum())
        flops[int(mask.sum())] = fc.get_total_flops()
    counts = sorted(flops)
    assert counts[0] == 0 and flops[0] == 0 and counts[-1] == b * h * w
    per_query = flops[counts[-1]] / counts[-1]
    for n in counts[1:]:
        assert flops[n] == pytest.approx(per_query * n, rel=1e-9)


def test_masked_window_attention_gradcheck():
    q, k, v = (t[:, :, :4, :5].clone().requires_grad_() for t in _qkv(1, 4, 4, 5, seed=6))
    flow = torch.full((1, 2, 4, 5), 0.7, dtype=torch.float64)
    mask = torch.zeros(1, 1, 4, 5, dtype=torch.float64)
    mask[..., 1:3, 0:4] = 1
    bias = torch.randn(2, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: masked_window_attention(*a[:3], flow, mask, 2, 3, a[3]),
                                    (q, k, v, bias))


# -- the module


def test_fgma_output_layout():
    torch.manual_seed(0)
    c, h, w = 8, 12, 10
    m = FGMA(c, heads=2, window=5).double()
    with torch.no_grad():
        m.bias.normal_()
    cur, nbr = _texture(2, c, h, w, 1), _texture(2, c, h, w, 2)
    flow = (torch.rand(2, 2, h, w, dtype=torch.float64) - 0.5) * 4
    mask = (torch.rand(2, 1, h, w) > 0.5).double()
    with torch.no_grad():
        out = m(cur, nbr, flow, mask)
        warped = flow_warp(nbr, flow)
        att = masked_window_attention(m.proj_q(cur), m.proj_k(nbr), m.proj_v(nbr), flow, mask, 2, 5, m.bias)
        ref = dense_reference(m.proj_q(cur * mask), m.proj_k(nbr), m.proj_v(nbr), flow, mask, 2, 5, m.bias)
    assert out.shape == (2, 2 * c + 1, h, w)
    torch.testing.assert_close(out[:, :c], warped, rtol=0, atol=0)  # F_flow everywhere
    assert torch.equal(out[:, c:c + 1], mask)
    assert out[:, c + 1:].masked_select(mask.expand(-1, c, -1, -1) == 0).abs().max() == 0
    torch.testing.assert_close(out[:, c + 1:], att, rtol=1e-12, atol=1e-12)  # the query projection runs on gathered pixels only
    torch.testing.assert_close(out[:, c + 1:], ref, rtol=1e-10, atol=1e-10)  # eq. 7: Proj_q(F * M)


def test_residual_fgma_starts_as_the_flow_warp_and_splits_by_the_mask():
    torch.manual_seed(1)
    c, h, w = 8, 12, 10
    m = FGMA(c, heads=2, window=5, residual=True).double()
    cur, nbr = _texture(2, c, h, w, 1), _texture(2, c, h, w, 2)
    flow = (torch.rand(2, 2, h, w, dtype=torch.float64) - 0.5) * 4
    mask = (torch.rand(2, 1, h, w) > 0.5).double()
    warped = flow_warp(nbr, flow)
    with torch.no_grad():
        out = m(cur, nbr, flow, mask)
    assert out.shape == (2, 2 * c + 1, h, w) and torch.equal(out[:, c:c + 1], mask)
    torch.testing.assert_close(out[:, :c], warped * (1 - mask), rtol=0, atol=0)  # no F_flow where masked
    torch.testing.assert_close(out[:, c + 1:], warped * mask, rtol=0, atol=0)  # O = 0: F_att is the warp
    with torch.no_grad():
        m.proj_o.weight.normal_()
        out = m(cur, nbr, flow, mask)
        att = masked_window_attention(cur, m.proj_k(warped), m.proj_v(warped), None, mask, 2, 5, m.bias,
                                      q_proj=m.proj_q)
    # the window of the warped neighbour around each query, through O
    want = warped * mask + torch.einsum("oc,bchw->bohw", m.proj_o.weight[:, :, 0, 0], att)
    torch.testing.assert_close(out[:, c + 1:], want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(att, masked_window_attention(m.proj_q(cur), m.proj_k(warped), m.proj_v(warped),
                                                            torch.zeros_like(flow), mask, 2, 5, m.bias))


def test_residual_fgma_attention_gets_the_masked_pixels_gradient():
    """Eq. 8's design left the attention a sliver of the gradient beside F_flow; here O gets it from step 0."""
    torch.manual_seed(2)
    m = FGMA(4, heads=1, window=3, residual=True).double()
    cur, nbr = _texture(1, 4, 8, 8, 3), _texture(1, 4, 8, 8, 4)
    flow = _const_flow(1, 8, 8, 1.5, -0.5)
    assert not m(cur, nbr, flow, torch.zeros(1, 1, 8, 8, dtype=torch.float64)).requires_grad  # no mask: no attention
    m(cur, nbr, flow, torch.ones(1, 1, 8, 8, dtype=torch.float64)).pow(2).sum().backward()
    assert m.proj_o.weight.grad.abs().max() > 1e-3


def test_fgma_without_mask_is_the_flow_warp():
    m = FGMA(4, heads=1, window=3).double()
    cur, nbr = _texture(1, 4, 8, 8, 3), _texture(1, 4, 8, 8, 4)
    flow = _const_flow(1, 8, 8, 1.5, -0.5)
    out = m(cur, nbr, flow, torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    assert torch.equal(out[:, :4], flow_warp(nbr, flow)) and out[:, 4:].abs().max() == 0


def test_fgma_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="odd"):
        FGMA(8, 2, window=4)
    with pytest.raises(ValueError, match="divisible"):
        FGMA(6, 4, window=3)
