"""DeAltHDR (vs_hdrvid.models.dealthdr): inputs (eq. 1), wiring, the residual base, the ``s`` dial.

Untrained networks have a zero-initialised head, so their output is the residual base exactly:
on a static, noise-free window with zero flows the ``"merge"`` base is the true radiance (the
long frames clipped where the scene is bright), which checks eq. 1, the exposure weighting, the
padding and the output scale at once.
"""
import dataclasses
import json
import math

import pytest
import torch

from vs_hdrvid.models import fgma
from vs_hdrvid.models.blocks import ldr_to_hdr
from vs_hdrvid.models.dealthdr import (DeAltHDR, DeAltHDRConfig, FeatureCache, prepare_inputs,
                                      residual_attention_state, window_merge)
from vs_hdrvid.models.fgma import consistency_difference, level_mask
from vs_hdrvid.models.spynet import PairSpyNet, PairSpyNetConfig

EVS = [-2.0, 1.0, -2.0, 1.0, -2.0]  # centre short
EVS_LONG = [1.0, -2.0, 1.0, -2.0, 1.0]  # centre long


def tiny(**kw) -> DeAltHDRConfig:
    """Narrower than :meth:`DeAltHDRConfig.small`, same structure."""
    return dataclasses.replace(DeAltHDRConfig.small(), dim=8, **kw)


def net_of(cfg: DeAltHDRConfig | None = None, seed: int = 0, head: bool = False) -> DeAltHDR:
    torch.manual_seed(seed)
    net = DeAltHDR(cfg or tiny()).eval()
    if head:  # a non-zero head, so the features reach the output
        torch.nn.init.normal_(net.head.weight, std=0.05)
    return net


def static_window(h: int, w: int, evs: list[float], b: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``ldrs (B, 5, 3, H, W)`` of a static scene with radiance ``H`` in [0.01, 3.5] (long frames clip
    above 0.5), unquantised, ``evs (B, 5)`` and ``H (B, 3, H, W)``."""
    g = torch.Generator().manual_seed(seed)
    hdr = torch.exp(torch.empty(b, 3, h, w).uniform_(math.log(0.01), math.log(3.5), generator=g))
    ldrs = torch.stack([(hdr * 2.0 ** ev).clamp(0, 1).pow(1 / 2.2) for ev in evs], 1)
    return ldrs, torch.tensor([evs] * b), hdr


def zero_flows(b: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(b, 4, 2, h, w), torch.zeros(b, 4, 2, h, w)


def random_window(b: int, h: int, w: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 5, 3, h, w, generator=g), torch.tensor([EVS_LONG] * b)


# -- config and inputs


def test_config_validation_and_round_trip():
    for bad in (dict(frames=4), dict(frames=1), dict(residual_base="centre"), dict(dim=6, heads=(4, 2, 4, 8))):
        with pytest.raises(ValueError, match="DeAltHDRConfig"):
            DeAltHDRConfig(**bad)
    for cfg in (DeAltHDRConfig(), DeAltHDRConfig.small(), tiny(dual_encoders=False, residual_base="reference")):
        stored = json.loads(json.dumps(cfg.to_dict()))  # as the manifest and safetensors metadata keep it
        assert DeAltHDRConfig.from_dict(stored) == cfg
    paper = DeAltHDRConfig()
    assert (paper.enc_blocks, paper.middle_blocks, paper.frames, paper.dual_encoders) == ((2, 4, 6), 8, 5, True)


def test_prepare_inputs_is_equation_1():
    ldrs, evs = random_window(2, 8, 8)
    evs = torch.tensor([EVS, EVS_LONG])
    x, short = prepare_inputs(ldrs, evs)
    assert x.shape == (2, 5, 6, 8, 8)
    lin = ldrs.pow(2.2) * torch.exp2(-2.0 - evs)[..., None, None, None]  # L**2.2 * 2**(EV_min - EV)
    torch.testing.assert_close(x[:, :, :3], lin)
    torch.testing.assert_close(x[:, :, 3:], lin.clamp_min(1e-8).pow(1 / 2.2), rtol=1e-5, atol=1e-6)
    assert short.tolist() == [[True, False, True, False, True], [False, True, False, True, False]]


def test_pair_spynet_shapes_and_zero_residuals():
    cfg = PairSpyNetConfig(levels=3, channels=(8, 8), kernel_size=3)
    net = PairSpyNet(cfg)
    a, b = torch.rand(2, 3, 20, 28), torch.rand(2, 3, 20, 28)
    assert net(a, b).shape == (2, 2, 20, 28)
    for level in net.basic:
        torch.nn.init.zeros_(level[-1].weight)
        torch.nn.init.zeros_(level[-1].bias)
    assert net(a, b).abs().max() == 0
    with pytest.raises(ValueError, match="PairSpyNet"):
        net(a, b[:, :, :-1])


# -- forward


def test_forward_shapes_batch_and_range():
    net = net_of(head=True)
    ldrs, evs = random_window(2, 32, 40)
    with torch.no_grad():
        out = net(ldrs, evs, 15.0)
    assert out.hdr.shape == (2, 3, 32, 40) and out.flows.shape == (2, 4, 2, 32, 40)
    assert torch.isfinite(out.hdr).all() and out.hdr.min() >= 0
    assert out.hdr.max() <= 2.0 ** 2 * (1 + 1e-5)  # H_sat = 2**-EV_min
    assert 0.0 <= out.attention_ratio <= 1.0
    with pytest.raises(ValueError, match="expected ldrs"):
        net(ldrs[:, :3], evs[:, :3])


@pytest.mark.parametrize("s", [-1.0, -math.inf, math.nan])
def test_forward_rejects_negative_and_nan_s(s):
    ldrs, evs = random_window(1, 16, 16)
    with pytest.raises(ValueError, match="s must be >= 0"):
        net_of()(ldrs, evs, s)


@pytest.mark.parametrize("evs", [EVS, EVS_LONG])
@pytest.mark.parametrize("size", [(32, 32), (36, 44)])
def test_untrained_network_returns_the_merge_of_a_static_window(evs, size):
    """Zero head + zero flows: the merge base, which for a static window is the truth (short frames
    alone where the long ones clip); sizes that are not multiples of 8 are padded and cropped."""
    ldrs, ev, hdr = static_window(*size, evs, b=2)
    with torch.no_grad():
        out = net_of()(ldrs, ev, 15.0, flows=zero_flows(2, *size))
    assert out.hdr.shape == (2, 3, *size)
    # grid_sample's float32 grid is not an exact identity: 1e-3 on a texture that varies 350x per pixel
    torch.testing.assert_close(out.hdr, hdr, rtol=2e-3, atol=1e-6)
    assert out.attention_ratio == 0.0  # zero flows are consistent: nothing for attention


def test_untrained_network_returns_window_merge_with_its_own_flows():
    net = net_of(seed=3)
    ldrs, evs = random_window(2, 32, 32, seed=4)
    with torch.no_grad():
        out = net(ldrs, evs, 15.0)
        x, _ = prepare_inputs(ldrs, evs)
        fwd, bwd = net.estimate_flows(x[:, :, 3:])
        d = consistency_difference(x[:, 2, 3:].repeat_interleave(4, 0), fwd.flatten(0, 1), bwd.flatten(0, 1))
        base = window_merge(x[:, :, :3], ldrs, evs, fwd, d, 2).clamp(0, 1)
    assert fwd.abs().max() > 0.01  # the untrained SpyNet does move things
    torch.testing.assert_close(out.flows, fwd)
    torch.testing.assert_close(out.hdr, base * 4.0, rtol=2e-4, atol=1e-6)
    # s only changes the features, which the zero head ignores
    with torch.no_grad():
        torch.testing.assert_close(net(ldrs, evs, math.inf).hdr, out.hdr, rtol=0, atol=0)


def test_reference_base_is_the_centre_frame_linearised():
    net = net_of(tiny(residual_base="reference"))
    ldrs, evs = random_window(2, 24, 40)
    with torch.no_grad():
        out = net(ldrs, evs, 15.0)
    torch.testing.assert_close(out.hdr, ldr_to_hdr(ldrs[:, 2], evs[:, 2]), rtol=2e-4, atol=1e-6)


def test_window_merge_down_weights_inconsistent_neighbours():
    """A neighbour flagged by D (>= 1/20) gets no weight."""
    ldrs, evs, _ = static_window(16, 16, EVS)
    x, _ = prepare_inputs(ldrs, evs)
    lin = x[:, :, :3].clone()
    lin[:, 1] = 0.5  # a wrong neighbour
    fwd = torch.zeros(1, 4, 2, 16, 16)
    d = torch.zeros(4, 1, 16, 16)
    polluted = window_merge(lin, ldrs, evs, fwd, d, 2)
    d[1] = 0.06  # frame 1 is the second of the neighbours 0, 1, 3, 4
    clean = window_merge(lin, ldrs, evs, fwd, d, 2)
    truth = window_merge(x[:, :, :3], ldrs, evs, fwd, d, 2)
    torch.testing.assert_close(clean, truth)
    assert (polluted - truth).abs().mean() > 0.01


# -- encoders


def test_dual_and_shared_encoders():
    dual, shared = DeAltHDR(tiny()), DeAltHDR(tiny(dual_encoders=False))
    n_enc = sum(p.numel() for p in dual.enc_short.parameters())
    assert dual.enc_long is not dual.enc_short and shared.enc_long is shared.enc_short
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(dual) - count(shared) == n_enc > 0


@pytest.mark.parametrize("evs,n_short", [(EVS, 3), (EVS_LONG, 2)])
def test_frames_go_through_the_encoder_of_their_exposure(evs, n_short):
    net = net_of()
    seen = {"short": 0, "long": 0}
    net.enc_short.stem.register_forward_hook(lambda m, i, o: seen.__setitem__("short", seen["short"] + o.shape[0]))
    net.enc_long.stem.register_forward_hook(lambda m, i, o: seen.__setitem__("long", seen["long"] + o.shape[0]))
    ldrs, ev, _ = static_window(16, 16, evs, b=2)
    with torch.no_grad():
        net(ldrs, ev, 0.0)
    assert seen == {"short": 2 * n_short, "long": 2 * (5 - n_short)}
    # the encoders differ, so swapping their roles changes the result
    with torch.no_grad():
        net.head.weight.normal_(std=0.05)
        a = net(ldrs, ev, 0.0).hdr
        net.enc_short, net.enc_long = net.enc_long, net.enc_short
        assert not torch.allclose(net(ldrs, ev, 0.0).hdr, a)



def test_feature_cache_encodes_one_new_frame_per_window_with_the_same_output():
    """A window sliding along an alternating clip: with a cache, each window after the first
    encodes only its new frame, and every output is that of encoding the whole window."""
    net = net_of(tiny(flow_source="dis"), head=True)
    g = torch.Generator().manual_seed(3)
    clip = torch.rand(9, 3, 24, 32, generator=g)
    evs = torch.tensor([-2.0, 1.0] * 5)[:9]
    encoded = []
    for enc in (net.enc_short, net.enc_long):
        enc.stem.register_forward_hook(lambda m, i, o: encoded.append(o.shape[0]))
    cache = FeatureCache(capacity=8)
    with torch.no_grad():
        for n in range(2, 7):
            idx = list(range(n - 2, n + 3))
            flows = (0.5 * torch.randn(1, 4, 2, 24, 32, generator=g), 0.5 * torch.randn(1, 4, 2, 24, 32, generator=g))
            whole = net(clip[idx][None], evs[idx][None], 15.0, flows=flows).hdr
            encoded.clear()
            cached = net(clip[idx][None], evs[idx][None], 15.0, flows=flows, frame_ids=idx, cache=cache).hdr
            assert sum(encoded) == (5 if n == 2 else 1)
            torch.testing.assert_close(cached, whole, rtol=1e-5, atol=1e-6)
    assert (cache.hits, cache.misses, len(cache)) == (16, 9, 8)


def test_feature_cache_keys_hold_the_exposure_and_the_call_is_checked():
    net = net_of(tiny(flow_source="dis"), head=True)
    ldrs, evs, _ = static_window(16, 16, EVS)
    cache = FeatureCache()
    with torch.no_grad():
        net(ldrs, evs, 0.0, flows=zero_flows(1, 16, 16), frame_ids=range(5), cache=cache)
        net(ldrs, torch.tensor([EVS_LONG]), 0.0, flows=zero_flows(1, 16, 16), frame_ids=range(5), cache=cache)
        assert cache.hits == 0 and cache.misses == 10  # the same ids at other exposures: other features
        with pytest.raises(ValueError, match="go together"):
            net(ldrs, evs, 0.0, flows=zero_flows(1, 16, 16), frame_ids=range(5))
        with pytest.raises(ValueError, match="one window and one id per frame"):
            net(ldrs.repeat(2, 1, 1, 1, 1), evs.repeat(2, 1), 0.0, flows=zero_flows(2, 16, 16),
                frame_ids=range(5), cache=cache)


# -- the s dial


def test_attention_ratio_endpoints_and_monotone():
    net = net_of(seed=2)
    ldrs, evs = random_window(1, 32, 32, seed=5)
    with torch.no_grad():
        ratios = [net(ldrs, evs, s).attention_ratio for s in (0.0, 0.5, 1.0, 5.0, 15.0, 100.0, 1e4, math.inf)]
    assert ratios[0] == 0.0 and ratios[-1] == 1.0
    assert all(a <= b for a, b in zip(ratios, ratios[1:]))
    assert 0.0 < ratios[3] < 1.0  # somewhere strictly between


def test_attention_ratio_is_the_masked_share_of_all_levels():
    net = net_of()
    ldrs, evs = random_window(2, 32, 32, seed=6)
    fwd = torch.zeros(2, 4, 2, 32, 32)
    bwd = torch.zeros(2, 4, 2, 32, 32)
    bwd[:, 0, :, 4:20, 8:24] = 3.0  # flow failure for one neighbour in one region
    x, _ = prepare_inputs(ldrs, evs)
    d = consistency_difference(x[:, 2, 3:].repeat_interleave(4, 0), fwd.flatten(0, 1), bwd.flatten(0, 1))
    for s in (15.0, 100.0):
        masks = [level_mask(d, s, (32 // f, 32 // f)) for f in (8, 4, 2, 1)]
        expected = sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)
        with torch.no_grad():
            got = net(ldrs, evs, s, flows=(fwd, bwd)).attention_ratio
        assert 0 < expected < 0.2 and got == pytest.approx(expected, rel=1e-6)


def test_s_zero_runs_no_attention_and_inf_attends_everywhere(monkeypatch):
    net = net_of(head=True)
    ldrs, evs = random_window(1, 32, 32, seed=7)
    rows: list[int] = []
    real = fgma.masked_window_attention

    def counting(q, k, v, flow, mask, *a, **kw):
        rows.append(int(mask.sum()))
        return real(q, k, v, flow, mask, *a, **kw)

    monkeypatch.setattr(fgma, "masked_window_attention", counting)
    with torch.no_grad():
        flow_only = net(ldrs, evs, 0.0).hdr
        assert rows == []
        attention = net(ldrs, evs, math.inf).hdr
    # four neighbours at 1/8, 1/4, 1/2 and full resolution
    assert rows == [4 * (32 // f) ** 2 for f in (8, 4, 2, 1)]
    assert (flow_only - attention).abs().max() > 1e-6


def test_attention_branch_receives_gradients_only_when_used():
    net = net_of(head=True).train()
    ldrs, evs = random_window(1, 16, 16, seed=8)
    proj = net.align[-1].fgma.proj_q.weight
    net(ldrs, evs, 0.0).hdr.mean().backward()
    assert proj.grad is None or proj.grad.abs().max() == 0
    net.zero_grad()
    net(ldrs, evs, math.inf).hdr.mean().backward()
    assert proj.grad is not None and proj.grad.abs().max() > 0


def test_weights_of_eq8_converted_to_the_residual_design_compute_their_s0_output_for_every_s():
    net = net_of(tiny(window=3), head=True)
    with torch.no_grad():  # every weight random, so the fusion's mask and attention columns matter
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    res = DeAltHDR(tiny(window=3, attention_residual=True)).eval()
    res.load_state_dict(residual_attention_state(net.state_dict()))
    ldrs, evs = random_window(1, 16, 16, seed=3)
    flows = (torch.randn(1, 4, 2, 16, 16), torch.randn(1, 4, 2, 16, 16))
    with torch.no_grad():
        want = net(ldrs, evs, 0.0, flows=flows).hdr
        assert (net(ldrs, evs, math.inf, flows=flows).hdr - want).abs().max() > 1e-4  # eq. 8: s matters
        for s in (0.0, 15.0, math.inf):
            torch.testing.assert_close(res(ldrs, evs, s, flows=flows).hdr, want, rtol=0, atol=1e-6)


# -- external flows


def test_external_flows_replace_the_spynet():
    net = net_of(head=True)
    calls = []
    net.flownet.register_forward_hook(lambda *a: calls.append(1))
    ldrs, evs = random_window(1, 36, 44, seed=9)
    fwd, bwd = zero_flows(1, 36, 44)
    shifted = torch.zeros_like(fwd)
    shifted[:, :, 0] = 2.0
    with torch.no_grad():
        a = net(ldrs, evs, 15.0, flows=(fwd, bwd))
        b = net(ldrs, evs, 15.0, flows=(shifted, -shifted))
    assert calls == []
    assert a.flows.shape == (1, 4, 2, 36, 44) and torch.equal(b.flows, shifted)
    assert (a.hdr - b.hdr).abs().max() > 1e-4
    with torch.no_grad():
        net(ldrs, evs, 15.0)
    assert calls == [1]


# -- flow_source="dis": the classical flows come from the caller


def test_dis_network_has_no_flow_network_and_needs_the_flows():
    net = net_of(tiny(flow_source="dis"))
    assert net.flownet is None and net.needs_flows and net.multiple == 8
    assert not any(k.startswith("flownet.") for k in net.state_dict())
    ldrs, evs = random_window(1, 32, 32)
    with pytest.raises(ValueError, match="needs the flows"):
        net(ldrs, evs, 15.0)
    with pytest.raises(ValueError, match="flow_source"):
        tiny(flow_source="raft")


def test_untrained_dis_network_is_the_merge_of_the_given_flows():
    """Step 0 of the classical-answer design: the output is the merge of the window aligned by the
    flows it is given, at every ``s``, and ``merge_base`` is that merge."""
    net = net_of(tiny(flow_source="dis"), seed=5)
    ldrs, evs = random_window(2, 40, 48, seed=6)
    g = torch.Generator().manual_seed(7)
    fwd, bwd = torch.randn(2, 4, 2, 40, 48, generator=g), torch.randn(2, 4, 2, 40, 48, generator=g)
    with torch.no_grad():
        x, _ = prepare_inputs(ldrs, evs)
        d = consistency_difference(x[:, 2, 3:].repeat_interleave(4, 0), fwd.flatten(0, 1), bwd.flatten(0, 1))
        want = window_merge(x[:, :, :3], ldrs, evs, fwd, d, 2).clamp(0, 1) * 4.0  # centre long: H_sat = 2**2
        base = net.merge_base(ldrs, evs, (fwd, bwd))
        outs = [net(ldrs, evs, s, flows=(fwd, bwd)) for s in (0.0, 15.0, math.inf)]
    torch.testing.assert_close(base, want, rtol=2e-4, atol=1e-6)
    for out in outs:
        torch.testing.assert_close(out.hdr, base, rtol=0, atol=0)
        assert torch.equal(out.flows, fwd)
    assert outs[0].attention_ratio == 0.0 < outs[1].attention_ratio < outs[2].attention_ratio == 1.0


def test_cpu_sizes_build_and_grow():
    counts = {}
    for size in ("tiny", "small", "medium"):
        cfg = DeAltHDRConfig.sized(size, flow_source="dis")
        assert DeAltHDRConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        counts[size] = sum(p.numel() for p in DeAltHDR(cfg).parameters())
    assert counts["tiny"] < counts["small"] < counts["medium"]
    assert DeAltHDRConfig.small() == DeAltHDRConfig.sized("small")
    with pytest.raises(ValueError, match="unknown size"):
        DeAltHDRConfig.sized("huge")


def test_tuned_merge_keeps_the_highlights_the_plain_merge_darkens():
    """A bright region clipped in the long frames and at 0.95 in the short ones (noise and blur
    keep real highlights just under 1): the plain window merge trusts the long frames' values under
    1 and the clipped-everywhere pixels fall to the long centre's darker value; the tuned base (a
    value counts only below 0.92, the fallback is the shortest exposure) keeps them at least at the
    short frames' radiance."""
    h, w = 16, 16
    hdr = torch.full((1, 3, h, w), 0.1)
    hdr[..., :8, :] = 3.0  # short frames (EV -2): 0.75 linear; long (EV +1): clipped
    hdr[..., :4, :] = 8.0  # clipped in every frame
    evs = torch.tensor([EVS_LONG])
    ldrs = torch.stack([(hdr * 2.0 ** ev).clamp(0, 1).pow(1 / 2.2) for ev in EVS_LONG], 1)
    ldrs[:, 2, :, 4:8] = 0.97  # the long centre's highlight just under clipping (blur, noise)
    flows = zero_flows(1, h, w)
    with torch.no_grad():
        plain = net_of(tiny(flow_source="dis")).merge_base(ldrs, evs, flows)
        tuned = net_of(tiny(flow_source="dis", residual_base="tuned_merge")).merge_base(ldrs, evs, flows)
    short_clip = 2.0 ** 2  # the radiance where the EV -2 frames clip
    assert float(tuned[..., :4, :].min()) >= short_clip * 0.999 > float(plain[..., :4, :].max())
    torch.testing.assert_close(tuned[..., 4:8, :], torch.full_like(tuned[..., 4:8, :], 3.0), rtol=1e-2, atol=0)
    assert float(plain[..., 4:8, :].mean()) < 2.0  # the long centre's 0.97 pulls it down
    torch.testing.assert_close(tuned[..., 8:, :], plain[..., 8:, :], rtol=1e-2, atol=0)  # elsewhere alike


def test_bounded_merge_drops_neighbours_that_contradict_a_short_centres_highlights():
    """A highlight clipped in the short centre and seen darker by a misaligned neighbour (here a
    long frame that reads 0.5 LDR, and a short one that reads 0.6), and a bright stripe the short
    neighbour sees 1.5 stops darker: the tuned base blends them in and darkens the highlights; the
    bounded base drops them (and their 3x3 surroundings), keeping at least the centre's clipping
    radiance and the stripe's own, and is the tuned base elsewhere and for a long centre."""
    h, w = 16, 16
    evs = torch.tensor([EVS])
    hdr = torch.full((1, 3, h, w), 0.05)
    hdr[..., :6, :] = 8.0  # clipped in every frame of the scene
    hdr[..., 10:12, :] = 2.0  # bright in the short frames (0.73 LDR), clipped in the long ones
    ldrs = torch.stack([(hdr * 2.0 ** ev).clamp(0, 1).pow(1 / 2.2) for ev in EVS], 1)
    ldrs[:, 1, :, :6] = 0.5  # a long neighbour misaligned over the highlight
    ldrs[:, 4, :, :6] = 0.6  # a short one too
    ldrs[:, 4, :, 10:12] = 0.4  # and over the bright stripe
    flows = zero_flows(1, h, w)
    with torch.no_grad():
        tuned = net_of(tiny(flow_source="dis", residual_base="tuned_merge")).merge_base(ldrs, evs, flows)
        bounded = net_of(tiny(flow_source="dis", residual_base="bounded_merge")).merge_base(ldrs, evs, flows)
        net = net_of(tiny(flow_source="dis", residual_base="bounded_merge"))
        torch.testing.assert_close(net(ldrs, evs, 15.0, flows=flows).hdr, bounded, rtol=0, atol=0)  # step 0
        long_c = torch.tensor([EVS_LONG])
        ldrs_l = torch.stack([(hdr * 2.0 ** ev).clamp(0, 1).pow(1 / 2.2) for ev in EVS_LONG], 1)
        ldrs_l[:, 1, :, :6] = 0.6
        same = [net_of(tiny(flow_source="dis", residual_base=b)).merge_base(ldrs_l, long_c, flows)
                for b in ("tuned_merge", "bounded_merge")]
    short_clip = 2.0 ** 2  # the radiance where the EV -2 frames clip
    assert float(bounded[..., :6, :].min()) >= short_clip * 0.999 > float(tuned[..., :6, :].max())
    torch.testing.assert_close(bounded[..., 10:12, :], hdr[..., 10:12, :], rtol=1e-4, atol=0)  # the centre alone
    assert float(tuned[..., 10:12, :].max()) < 1.9  # the misaligned short neighbour darkens it
    for rows in (slice(7, 9), slice(13, None)):  # beyond the 3x3 spread
        torch.testing.assert_close(bounded[..., rows, :], tuned[..., rows, :], rtol=1e-6, atol=0)
    torch.testing.assert_close(same[1], same[0], rtol=0, atol=0)


def test_bounded_merge_keeps_each_channel_a_short_centre_clips():
    """A white highlight clipped in the short centre, seen as a yellow light by a misaligned short
    neighbour: bright enough to pass the luminance tests, but its blue channel is dark. The tuned
    base pulls the highlight's blue halfway to it; the bounded base keeps every clipped channel at
    least at the centre's clipping radiance, and leaves the unclipped pixels alone."""
    h, w = 16, 16
    evs = torch.tensor([EVS])
    hdr = torch.full((1, 3, h, w), 0.05)
    hdr[..., :6, :] = 8.0  # clipped in every frame of the scene
    ldrs = torch.stack([(hdr * 2.0 ** ev).clamp(0, 1).pow(1 / 2.2) for ev in EVS], 1)
    ldrs[:, 4, 2, :6] = 0.1  # the short neighbour t+2 sees a yellow light there
    flows = zero_flows(1, h, w)
    with torch.no_grad():
        tuned = net_of(tiny(flow_source="dis", residual_base="tuned_merge")).merge_base(ldrs, evs, flows)
        bounded = net_of(tiny(flow_source="dis", residual_base="bounded_merge")).merge_base(ldrs, evs, flows)
    short_clip = 2.0 ** 2  # the radiance where the EV -2 frames clip
    assert float(tuned[:, 2, :6].max()) < 0.6 * short_clip
    assert float(bounded[..., :6, :].min()) >= short_clip * 0.92 ** 2.2 * 0.999
    torch.testing.assert_close(bounded[..., 9:, :], tuned[..., 9:, :], rtol=1e-6, atol=0)


def test_bound_power_shrinks_the_trust_region_in_the_highlights_only():
    """``bound_power``: the bound ``tau * f**(1 - p) * (b + f)**p`` holds for p = 0.5, never lets
    through more than p = 1's and somewhere less (p = 0.5 is tighter wherever b > 0)."""
    tau, floor = 0.05, 0.05
    ldrs, evs = random_window(1, 32, 32, seed=3)
    flows = zero_flows(1, 32, 32)
    outs = {}
    for p in (1.0, 0.5):
        net = net_of(tiny(flow_source="dis", residual_base="tuned_merge", residual_bound=tau, bound_power=p), head=True)
        torch.nn.init.constant_(net.head.bias, 0.5)
        with torch.no_grad():
            outs[p] = net(ldrs, evs, 15.0, flows=flows).hdr / 4.0, net.merge_base(ldrs, evs, flows) / 4.0
    (o, b), (o1, _) = outs[0.5], outs[1.0]
    assert ((o - b).abs() <= tau * floor ** 0.5 * (b + floor) ** 0.5 + 1e-6).all()
    assert ((o - b).abs() <= (o1 - b).abs() + 1e-6).all() and ((o - b).abs() < (o1 - b).abs() - 1e-4).any()
    with pytest.raises(ValueError, match="bound_power"):
        tiny(bound_power=1.5)


def test_bounded_correction_stays_in_its_trust_region_around_the_base():
    """``residual_bound``: untrained, still the base exactly; with a large correction, the output's
    radiance (short-exposure units) stays within ``tau * (b + floor)`` of the base's ``b``, a
    small correction passes nearly unchanged, and the bound has a gradient everywhere."""
    tau, floor = 0.05, 0.05
    cfg = tiny(flow_source="dis", residual_base="tuned_merge", residual_bound=tau, bound_floor=floor)
    ldrs, evs = random_window(1, 32, 32, seed=3)
    flows = zero_flows(1, 32, 32)
    scale = 4.0  # centre long: H_sat = 2**2 in scene units
    with torch.no_grad():
        base = net_of(cfg).merge_base(ldrs, evs, flows)
        torch.testing.assert_close(net_of(cfg)(ldrs, evs, 15.0, flows=flows).hdr, base, rtol=0, atol=0)
        big = net_of(cfg, head=True)
        torch.nn.init.constant_(big.head.bias, 0.5)  # a mu-law correction of half the range
        out = big(ldrs, evs, 15.0, flows=flows).hdr
        free = net_of(dataclasses.replace(cfg, residual_bound=0.0), head=True)
        free.load_state_dict(big.state_dict())
        unbounded = free(ldrs, evs, 15.0, flows=flows).hdr
    b, o = base / scale, out / scale
    assert ((o - b).abs() <= tau * (b + floor) + 1e-6).all()
    assert ((unbounded / scale - b).abs() > tau * (b + floor)).any()  # it was a large correction
    small = net_of(cfg, head=True)
    with torch.no_grad():
        small.head.weight.mul_(1e-3)
    out = small(ldrs, evs, 15.0, flows=flows).hdr
    free.load_state_dict(small.state_dict())
    torch.testing.assert_close(out, free(ldrs, evs, 15.0, flows=flows).hdr, rtol=1e-3, atol=1e-5)
    out.sum().backward()
    assert small.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="residual_bound"):
        tiny(residual_bound=-0.1)
