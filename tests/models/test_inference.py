"""Tests of vs_hdrvid.models.inference: precision choice, tile plans, seamless tiling."""

import pytest
import torch

from vs_hdrvid import weights
from vs_hdrvid.eval.bench_nets import network_configs
from vs_hdrvid.models import inference
from vs_hdrvid.models.coarsenet import CoarseNet
from vs_hdrvid.models.inference import TILE_RULES, Inference, Precision, Tiling
from vs_hdrvid.models.refinenet import RefineNet

CPU = torch.device("cpu")


def test_precision_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(inference, "native_bf16", lambda: True)
    assert Precision.choose(CPU) == Precision(torch.float32, torch.bfloat16)
    assert Precision.choose(CPU, fp32=True) == Precision(torch.float32)
    monkeypatch.setattr(inference, "native_bf16", lambda: False)
    assert Precision.choose(CPU).name == "fp32"
    assert Precision.choose(torch.device("cuda")).name == "fp16"


@pytest.mark.parametrize("tile, why", [(100, "multiple of 8"), (32, "at least 64")])
def test_bad_tiles_name_the_minimum_and_multiple(tile, why):
    with pytest.raises(ValueError, match=why):
        Tiling.for_network("coarse", tile)


def test_networks_without_tiles_and_bad_budgets_are_refused():
    with pytest.raises(ValueError, match="cannot be tiled"):
        Tiling.for_network("dealthdr", 256)
    with pytest.raises(ValueError, match="positive"):
        Tiling.for_network("coarse", max_memory=0.0, size=(64, 64))
    with pytest.raises(ValueError, match="too small"):
        Tiling.for_network("coarse", max_memory=1e-3, size=(3840, 2160))


def test_memory_budget_tiles_only_what_does_not_fit():
    assert Tiling.for_network("coarse", max_memory=64.0, size=(1920, 1080)) is None
    plan = Tiling.for_network("coarse", max_memory=5.0, size=(3840, 2160))
    rule = TILE_RULES["coarse"]
    assert plan is not None and plan.tile % rule.multiple == 0
    peak = 3840 * 2160 * rule.fixed_per_pixel + (plan.tile + 2 * plan.overlap) ** 2 * (
        rule.bytes_per_pixel - rule.fixed_per_pixel)
    assert peak <= 5.0 * 2 ** 30


def test_spans_cover_the_side_on_the_grid():
    plan = Tiling(512, 40, 8)
    for length in (56, 512, 1080, 1921):
        spans = plan.spans(length)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert all(a % 8 == 0 and b - a <= 512 for a, b in spans)
        assert all(b == c for (_, b), (c, _) in zip(spans, spans[1:]))


def _randomised(model):
    """Random weights everywhere, zero-initialised heads included (so tiles would show)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model


def _window(h, w, t=3):
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, t * 3, h // 16, w // 16, generator=g)
    ldr = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear").reshape(1, t, 3, h, w)
    return (ldr + 0.05 * torch.rand(1, t, 3, h, w, generator=g)).clamp(0, 1), torch.tensor([-1.5, 1.5, -1.5])


def test_coarse_tiled_equals_untiled_on_1080p():
    net = _randomised(CoarseNet(network_configs(2, narrow=True)["coarse"]))
    ldr, ev = _window(1080, 1920)
    flows = 4 * torch.randn(1, 2, 2, 1, 1).expand(1, 2, 2, 1080, 1920)  # warps reach past any tile
    conf = torch.ones(1, 2, 1, 1080, 1920)
    whole = Inference(net, "coarse", CPU, fp32=True)(ldr, ev, flows, conf).hdr
    tiled = Inference(net, "coarse", CPU, fp32=True, tiling=Tiling.for_network("coarse", 512))
    assert (tiled(ldr, ev, flows, conf).hdr - whole).abs().max() <= 1e-3
    short = Inference(net, "coarse", CPU, fp32=True, tiling=Tiling(512, 8, 8))  # under the receptive field
    assert (short(ldr, ev, flows, conf).hdr - whole).abs().max() > 1e-3


def test_refine_tiled_equals_untiled():
    net = _randomised(RefineNet(network_configs(2, narrow=True)["refine"]))
    ldr, ev = _window(272, 480)
    hdr = ldr.pow(2.2) * torch.exp2(-ev).view(1, 3, 1, 1, 1)
    whole = Inference(net, "refine", CPU, fp32=True)(hdr, ldr, ev[None]).hdr
    tiled = Inference(net, "refine", CPU, fp32=True, tiling=Tiling.for_network("refine", 128))
    assert (tiled(hdr, ldr, ev[None]).hdr - whole).abs().max() <= 1e-3
    short = Inference(net, "refine", CPU, fp32=True, tiling=Tiling(128, 8, 8))
    assert (short(hdr, ldr, ev[None]).hdr - whole).abs().max() > 1e-3


def test_bf16_autocast_stays_close_to_fp32_with_the_shipped_weights(monkeypatch):
    monkeypatch.setattr(inference, "native_bf16", lambda: True)
    net, _ = weights.load("coarse-2exp", CPU)
    ldr, ev = _window(96, 128)
    flows, conf = torch.zeros(1, 2, 2, 96, 128), torch.ones(1, 2, 1, 96, 128)
    exact = Inference(net, "coarse", CPU, fp32=True)(ldr, ev, flows, conf).hdr
    fast = Inference(net, "coarse", CPU)
    assert fast.precision.autocast == torch.bfloat16 and fast.channels_last
    out = fast(ldr, ev, flows, conf).hdr
    assert out.dtype == torch.float32
    assert (out - exact).abs().mean() < 2e-3 * exact.abs().mean()


def test_auto_compile_only_pays_on_long_cpu_clips():
    from vs_hdrvid.models.inference import AUTO_COMPILE_FRAMES, auto_compile

    assert auto_compile("coarse", CPU, AUTO_COMPILE_FRAMES, tiled=False)
    assert not auto_compile("coarse", CPU, AUTO_COMPILE_FRAMES - 1, tiled=False)
    assert not auto_compile("refine", CPU, 1000, tiled=True)
    assert auto_compile("dealthdr", CPU, AUTO_COMPILE_FRAMES, tiled=False)
    assert not auto_compile("spynet", CPU, 1000, tiled=False)
    assert not auto_compile("coarse", torch.device("cuda"), 1000, tiled=False)
