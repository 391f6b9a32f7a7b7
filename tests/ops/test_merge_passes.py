"""merge_exposures in in-place passes against the formula it was written from (kept here as the
oracle), and the separable box and min filters against the pooling they replace."""
import pytest
import torch
import torch.nn.functional as F

from vs_hdrvid.ops.merge import MergeConfig, _box_mean, _min_filter_, hat_weight, merge_exposures

from merge_fixture import expose, scene


def merge_reference(frames, ev, valid=None, ref=0, c=MergeConfig()):
    """The weight-free merge written plainly: powers in the gamma domain, pooling, masked_fill."""
    b, t = frames.shape[:2]
    ev = torch.as_tensor(ev, dtype=frames.dtype).expand(b, t)
    expo = torch.exp2(ev)[..., None, None, None]
    luma = lambda x: 0.2126 * x[:, 0:1] + 0.7152 * x[:, 1:2] + 0.0722 * x[:, 2:3]  # noqa: E731
    y = luma(frames.flatten(0, 1)).unflatten(0, (b, t)).clamp(min=0)
    ldr_y = (y * expo).clamp(0, 1).pow(1 / c.gamma)
    ldr_max = (frames.amax(2, keepdim=True) * expo).clamp(0, 1).pow(1 / c.gamma)
    w = hat_weight(ldr_y, c.low, 1.0) * (ldr_max < c.high).to(frames.dtype) * expo
    if valid is not None:
        w = w * valid
    y_ref, l_ref = y[:, ref].clamp(min=1e-8), ldr_y[:, ref]
    h_sat_ref = 1.0 / expo[:, ref]
    tol = c.ghost_tolerance + c.noise_stops * (1 - (l_ref / 0.25).clamp(0, 1))
    well = hat_weight(l_ref, c.low, c.high)
    clipped, dark = ldr_max[:, ref] >= c.high, l_ref <= c.low
    lower = h_sat_ref * c.high ** c.gamma * 2.0 ** -c.bound_margin
    upper = h_sat_ref * (c.low ** c.gamma) * 2.0 ** (1 + c.bound_margin)
    for i in range(t):
        if i == ref:
            continue
        d = torch.log2(y[:, i].clamp(min=1e-8) / y_ref)
        if c.smooth > 1:
            d = F.avg_pool2d(d, c.smooth, 1, c.smooth // 2, count_include_pad=False)
        ok = 1 - well * (1 - (2 - d.abs() / tol).clamp(0, 1))
        ok = ok.masked_fill((clipped & (y[:, i] < lower)) | (dark & (y[:, i] > upper)), 0)
        if c.dilate > 1:
            ok = -F.max_pool2d(-ok, c.dilate, 1, c.dilate // 2)
        w[:, i] = w[:, i] * ok
    w[:, ref] = w[:, ref] + (w.sum(1) <= 0).to(frames.dtype) * expo[:, ref]
    merged = (w * frames).sum(1) / w.sum(1)
    h_short = frames[torch.arange(b), torch.argmin(ev, dim=1)]
    return torch.where((ldr_max >= c.high).all(1), torch.maximum(h_short, merged), merged)


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("hw", [(9, 13), (4, 5), (2, 3)])
def test_box_mean_equals_avg_pool(k, hw):
    x = torch.randn(2, 1, *hw, dtype=torch.float64)
    want = F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)
    torch.testing.assert_close(_box_mean(x, k), want)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("hw", [(9, 13), (3, 4), (1, 6)])
def test_min_filter_equals_max_pool(k, hw):
    x = torch.rand(2, 1, *hw)
    want = -F.max_pool2d(-x, k, 1, k // 2)
    got = _min_filter_(x.clone(), k)
    assert torch.equal(got, want)


@pytest.mark.parametrize("evs,ref", [([-1.5, 1.5], 0), ([-1.5, 1.5], 1), ([-2.0, 0.0, 2.0], 1), ([2.0, -2.0, 0.0], 0)])
@pytest.mark.parametrize("cfg", [MergeConfig(), MergeConfig(smooth=5, dilate=5, ghost_tolerance=0.4),
                                 MergeConfig(smooth=1, dilate=1)])
def test_merge_equals_reference(evs, ref, cfg):
    g = torch.Generator().manual_seed(7)
    h = scene(2, 40, 56, seed=3) * torch.exp2(torch.randn(2, 1, 40, 56, generator=g))  # fine texture too
    frames = expose(h, evs, quant=255)
    frames[:, (ref + 1) % len(evs), :, 10:22, 14:30] *= 3  # a ghost
    frames[0, :, :, 0, :4] = 0  # black in every frame
    valid = (torch.rand(2, len(evs), 1, 40, 56, generator=g) > 0.1).float()
    want = merge_reference(frames, torch.tensor(evs), valid, ref, cfg)
    got = merge_exposures(frames, torch.tensor(evs), valid, ref, cfg)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-7)
    # the cases the passes branch on all occur: rejected ghosts, pixels clipped in every frame
    ev = torch.tensor(evs)
    all_clipped = ((frames.amax(2) * torch.exp2(ev)[:, None, None]) >= 0.92 ** 2.2).all(1)
    assert all_clipped.any()


def test_merge_without_valid_and_nobody_fallback():
    h = scene(1, 24, 32)
    frames = expose(h, [-1.5, 1.5])
    valid = torch.zeros(1, 2, 1, 24, 32)
    valid[:, 0, :, :, 16:] = 1  # the reference is unusable on the left half: nobody vouches there
    for v in (None, valid):
        torch.testing.assert_close(merge_exposures(frames, torch.tensor([-1.5, 1.5]), v, 0),
                                   merge_reference(frames, torch.tensor([-1.5, 1.5]), v, 0), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("cfg", [MergeConfig(), MergeConfig(smooth=5, dilate=5), MergeConfig(smooth=1, dilate=3)])
def test_banded_merge_equals_whole_frame(monkeypatch, cfg):
    """Bands of 8 rows (plus the rows the box and min filters reach) give the whole-frame result."""
    import vs_hdrvid.ops.merge as merge_module

    g = torch.Generator().manual_seed(11)
    h = scene(1, 61, 40, seed=4) * torch.exp2(torch.randn(1, 1, 61, 40, generator=g))
    h[..., 50:55, 30:38] = 50.0  # clipped in every frame
    frames = expose(h, [-1.5, 1.5, -1.5], quant=255)
    frames[:, 2, :, 20:35, 5:25] *= 4  # a ghost across band edges
    valid = (torch.rand(1, 3, 1, 61, 40, generator=g) > 0.05).float()
    ev = torch.tensor([-1.5, 1.5, -1.5])
    whole = merge_exposures(frames, ev, valid, 1, cfg)
    assert torch.equal(merge_exposures(frames, ev, valid, 1, cfg, out=torch.empty_like(whole)), whole)
    monkeypatch.setattr(merge_module, "BAND_PIXELS", 8 * 40)
    banded = merge_exposures(frames, ev, valid, 1, cfg)
    assert torch.equal(banded, whole)
    out = torch.full_like(whole, float("nan"))
    assert merge_exposures(frames, ev, valid, 1, cfg, out=out) is out and torch.equal(out, whole)
    torch.testing.assert_close(banded, merge_reference(frames, ev, valid, 1, cfg), rtol=2e-6, atol=1e-7)
