"""tonemap's fused HDR path against the plain formulas it replaces: primaries, gain, roll-off,
PQ curve and the frame props, on content with highlights far past the knee."""
import numpy as np
import pytest
import torch

import vs_hdrvid as hv
from vs_hdrvid.bridge import NodeRunner
from vs_hdrvid.nodes.tonemap import _display_light
from vs_hdrvid.ops.color import bt709_to_bt2020, primaries_matrix
from vs_hdrvid.ops.tonemap import highlight_rolloff, pq_encode, pq_encode_normalized_

from conftest import clip_from_arrays, planes

EVS = [-1.5, 1.5]
PROPS = {"HdrExposurePattern": EVS, "HdrExposureEV": -1.5, "HdrExposureIndex": 0, "HdrExposureCount": 2}


def st2084(nits):
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = (np.clip(np.asarray(nits, np.float64), 0, 10000) / 10000) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def radiance(h=24, w=40, seed=0):
    """Log-normal radiance over ~16 stops, with negatives and exact zeros mixed in."""
    rng = np.random.default_rng(seed)
    x = np.exp2(rng.normal(-3, 4, (h, w, 3))).astype(np.float32)
    x[0, :5] = 0
    x[1, :5] = -0.01
    return x


def test_pq_curve_close_to_float64_everywhere():
    nits = torch.cat([torch.tensor([-1.0, 0.0, 1e-12, 10000.0, 2e4]), torch.exp2(torch.linspace(-30, 13.3, 100001))])
    got = pq_encode(nits).double().numpy()
    np.testing.assert_allclose(got, st2084(nits.double().numpy()), rtol=0, atol=1e-6)  # 1/1000 of a 10-bit code
    y = nits / 10000
    assert pq_encode_normalized_(y) is y  # in place


def test_pq_curve_keeps_dtype_and_does_not_modify_input():
    x = torch.tensor([100.0, 1000.0, 10000.0])
    for dtype in (torch.float16, torch.float32, torch.float64):
        v = x.to(dtype)
        out = pq_encode(v)
        assert out.dtype == dtype and torch.equal(v, x.to(dtype))
        tol = 2e-3 if dtype == torch.float16 else 2e-6
        np.testing.assert_allclose(out.double().numpy(), [0.508078, 0.751827, 1.0], atol=tol)


@pytest.mark.parametrize("gain,peak", [(300.0, 1000.0), (0.05, 1000.0), (2000.0, 4000.0)])
def test_display_light_equals_the_plain_formula(gain, peak):
    x = torch.from_numpy(radiance().transpose(2, 0, 1).copy())
    runner = NodeRunner("tonemap", torch.device("cpu"))
    want = highlight_rolloff(bt709_to_bt2020(x.clamp(min=0)[None] * gain).clamp(min=0), peak, 0.75 * peak)[0]
    got, max_nits, sum_nits = _display_light(runner, x, gain, peak, 0.75 * peak)
    avg_nits = sum_nits / got[0].numel()
    torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-6)
    assert max_nits == pytest.approx(float(want.amax()), rel=1e-6)
    assert avg_nits == pytest.approx(float(want.amax(0).mean()), rel=1e-5)
    assert (float(want.amax()) > 0.75 * peak) == (gain > 10)  # both branches are exercised


def test_primaries_matrix_is_the_bt709_to_bt2020_matrix():
    x = torch.rand(3, 4, 5, dtype=torch.float64)
    m = torch.from_numpy(primaries_matrix("709", "2020"))
    torch.testing.assert_close(torch.einsum("ij,jhw->ihw", m, x), bt709_to_bt2020(x))
    with pytest.raises(ValueError):
        primaries_matrix("601", "2020")


def test_node_pq_rgb_matches_the_standard_curve():
    """Frame by frame, the node's 16-bit PQ values equal the formula in float64 (roll-off included)."""
    arrays = [radiance(seed=s) * 4 for s in range(2)]
    key = 0.05
    out = hv.tonemap(clip_from_arrays(arrays, [PROPS] * 2), "pq", peak_nits=1000, key=key, output="rgb",
                     device="cpu")
    for n in range(2):
        x = torch.from_numpy(arrays[n].transpose(2, 0, 1).astype(np.float64))
        nits = highlight_rolloff(bt709_to_bt2020(x.clamp(min=0)[None] * (203.0 / key)).clamp(min=0), 1000.0, 750.0)
        want = np.round(st2084(nits[0].numpy()) * 65535)
        got = planes(out.get_frame(n)).transpose(2, 0, 1).astype(np.float64)
        assert np.abs(got - want).max() <= 1
        assert (nits.amax(1) > 750).any()


@pytest.mark.parametrize("op", ["pq", "hlg"])
def test_bands_give_the_whole_frame_result(monkeypatch, op):
    """Written band by band into the frame (4 rows a band here): the same pixels and frame props."""
    import sys

    from vs_hdrvid.ops import bands

    tonemap_module = sys.modules["vs_hdrvid.nodes.tonemap"]
    arrays = [radiance(h=26, seed=3) * 4]
    clip = clip_from_arrays(arrays, [PROPS])
    whole = hv.tonemap(clip, op, key=0.05, output="rgb", device="cpu").get_frame(0)
    monkeypatch.setattr(tonemap_module, "row_bands", lambda h, w, d: bands.row_bands(h, w, d, pixels=4 * w))
    banded = hv.tonemap(clip, op, key=0.05, output="rgb", device="cpu").get_frame(0)
    np.testing.assert_array_equal(planes(banded), planes(whole))
    for k in ("HdrFrameMaxNits", "HdrFrameAverageNits"):
        assert banded.props[k] == pytest.approx(whole.props[k], rel=1e-6)
    assert whole.props["HdrFrameMaxNits"] > 750  # the roll-off ran


def test_row_bands_cover_the_frame():
    from vs_hdrvid.ops.bands import row_bands

    bands = row_bands(1080, 1920, torch.device("cpu"))
    assert bands[0].start == 0 and bands[-1].stop == 1080 and len(bands) > 4
    assert all(a.stop == b.start for a, b in zip(bands, bands[1:]))
    assert row_bands(1080, 1920, torch.device("cuda")) == [slice(0, 1080)]
