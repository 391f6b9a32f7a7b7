"""ops.alignment: the pooled luminance (block max/min reduced along x then y, computed band by band)
against plain pooling, and the alignment input from it against the direct computation."""
import pytest
import torch
import torch.nn.functional as F

from vs_hdrvid.ops.alignment import alignment_input, pooled_luminance
from vs_hdrvid.ops.color import rgb_to_luminance


def test_alignment_input_from_pooled_equals_direct():
    h = torch.rand(1, 3, 40, 48) * 2
    luma = rgb_to_luminance(h, fused=True)
    a, m = alignment_input(h, 0.5, 0.8, 4)
    level = 0.8
    want_y = (F.avg_pool2d(luma, 4) / level).clamp(0, 1)
    lo, hi = 0.04 ** 2.2 / 2 ** 0.5, 0.92 ** 2.2 / 2 ** 0.5
    want_m = ((-F.max_pool2d(-luma, 4) > lo) & (F.max_pool2d(luma, 4) < min(hi, level))).float()
    torch.testing.assert_close(a, want_y)
    assert torch.equal(m, want_m)
    a2, m2 = alignment_input(None, 0.5, 0.8, 4, pooled=pooled_luminance(h, 4))
    assert torch.equal(a2, a) and torch.equal(m2, m)


@pytest.mark.parametrize("hw,k", [((24, 32), 4), ((27, 35), 4), ((9, 10), 3), ((8, 8), 1),
                                  ((1083, 1922), 4), ((300, 1030), 3)])
def test_pooled_luminance_is_box_pooling_of_the_luminance(hw, k):
    """Block max and min equal max pooling exactly, over several bands and with rows and columns left
    over that the pooling drops."""
    h = torch.rand(2, 3, *hw) * 2
    luma = rgb_to_luminance(h, fused=True)
    y, y_max, y_min = pooled_luminance(h, k)
    torch.testing.assert_close(y, F.avg_pool2d(luma, k))
    assert torch.equal(y_max, F.max_pool2d(luma, k)) and torch.equal(y_min, -F.max_pool2d(-luma, k))
