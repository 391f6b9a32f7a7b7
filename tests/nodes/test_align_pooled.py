"""align's pooled luminance (block max/min reduced along x then y, computed once per frame) against
the pooling it replaces, and the node's estimates against similarity_between pair by pair."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vs_hdrvid as hv
from vs_hdrvid.nodes.align import _block_extremes, alignment_input, pooled_luminance, similarity_between

from conftest import clip_from_arrays


@pytest.mark.parametrize("hw,k", [((24, 32), 4), ((27, 35), 4), ((9, 10), 3), ((8, 8), 1)])
def test_block_extremes_equal_pooling(hw, k):
    y = torch.rand(2, 1, *hw)
    hi, lo = _block_extremes(y, k)
    assert torch.equal(hi, F.max_pool2d(y, k)) and torch.equal(lo, -F.max_pool2d(-y, k))


def test_alignment_input_from_pooled_equals_direct():
    h = torch.rand(1, 3, 40, 48) * 2
    luma = 0.2126 * h[:, 0:1] + 0.7152 * h[:, 1:2] + 0.0722 * h[:, 2:3]
    a, m = alignment_input(h, 0.5, 0.8, 4)
    level = 0.8
    want_y = (F.avg_pool2d(luma, 4) / level).clamp(0, 1)
    lo, hi = 0.04 ** 2.2 / 2 ** 0.5, 0.92 ** 2.2 / 2 ** 0.5
    want_m = ((-F.max_pool2d(-luma, 4) > lo) & (F.max_pool2d(luma, 4) < min(hi, level))).float()
    torch.testing.assert_close(a, want_y)
    assert torch.equal(m, want_m)
    a2, m2 = alignment_input(None, 0.5, 0.8, 4, pooled=pooled_luminance(h, 4))
    assert torch.equal(a2, a) and torch.equal(m2, m)


@pytest.mark.parametrize("hw,k", [((1083, 1922), 4), ((300, 1030), 3)])
def test_pooled_luminance_in_bands_equals_whole_frame(hw, k):
    """Several bands, and rows and columns left over that the pooling drops."""
    h = torch.rand(1, 3, *hw) * 2
    luma = 0.2126 * h[:, 0:1] + 0.7152 * h[:, 1:2] + 0.0722 * h[:, 2:3]
    y, y_max, y_min = pooled_luminance(h, k)
    torch.testing.assert_close(y, F.avg_pool2d(luma, k))
    torch.testing.assert_close(y_max, F.max_pool2d(luma, k))
    torch.testing.assert_close(y_min, -F.max_pool2d(-luma, k))


def test_node_equals_pairwise_estimates():
    """The node reuses each frame's pooled luminance (at factor 2 here) for its next pair: the
    same transforms as estimating every pair from scratch, for a 3-exposure pattern (a different
    clip level per pair)."""
    rng = np.random.default_rng(0)
    base = np.exp2(rng.normal(-2, 1.5, (96, 520)).astype(np.float32))
    base = F.avg_pool2d(torch.from_numpy(base)[None, None], 5, 1, 2).numpy()[0, 0]
    evs = [-2.0, 0.0, 2.0]
    arrays = [np.clip(np.roll(base, n, 1)[..., None] * [1.0, 0.9, 0.8] * 2 ** evs[n % 3], 0, 1).astype(np.float32)
              / 2 ** evs[n % 3] for n in range(5)]
    props = [{"HdrExposureEV": evs[n % 3], "HdrExposureIndex": n % 3, "HdrExposureCount": 3,
              "HdrExposurePattern": evs} for n in range(5)]
    out = hv.align(clip_from_arrays(arrays, props), device="cpu")
    for n in range(1, 5):
        t = lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy())[None]  # noqa: E731
        m, conf = similarity_between(t(arrays[n - 1]), t(arrays[n]), evs[(n - 1) % 3], evs[n % 3])
        p = out.get_frame(n).props
        np.testing.assert_allclose(p["HdrSimilarityPrev"], m[0].flatten().tolist(), rtol=0, atol=1e-5)
        assert p["HdrSimilarityConfidence"] == pytest.approx(float(conf[0]), abs=1e-6)
