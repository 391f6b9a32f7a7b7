"""bridge.windows: exposure-aware temporal windows as shifted clips."""
import numpy as np
import pytest
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid.bridge import shift_clip, window_index

from conftest import clip_from_arrays


def numbered_clip(n: int, h: int = 8, w: int = 12) -> vs.VideoNode:
    """Frame ``k`` is filled with the value ``k`` and carries ``Src=k``."""
    return clip_from_arrays([np.full((h, w, 3), k, np.float32) for k in range(n)],
                            [{"Src": k} for k in range(n)])


@pytest.mark.parametrize("period", [2, 3])
@pytest.mark.parametrize("num_frames", [6, 7, 10])
def test_window_index_keeps_exposure_and_is_nearest(period, num_frames):
    for offset in range(-3, 4):
        for n in range(num_frames):
            m = window_index(n, offset, num_frames, period)
            want = n + offset
            assert 0 <= m < num_frames
            assert m % period == want % period, (n, offset, m)
            if 0 <= want < num_frames:
                assert m == want
            else:  # the nearest in-range frame with the same exposure index
                same = [k for k in range(num_frames) if k % period == want % period]
                assert abs(m - want) == min(abs(k - want) for k in same)


@pytest.mark.parametrize("period,expect", [
    (2, {(0, -1): 1, (0, -2): 0, (0, -3): 1, (9, 1): 8, (9, 2): 9, (8, 3): 9, (1, -2): 1}),
    (3, {(0, -1): 2, (0, -2): 1, (1, -2): 2, (9, 1): 7, (9, 2): 8, (8, 2): 7, (0, -3): 0}),
])
def test_window_index_values_at_both_ends(period, expect):
    for (n, o), m in expect.items():
        assert window_index(n, o, 10, period) == m, (n, o)


def test_window_index_too_short_raises():
    with pytest.raises(IndexError):
        window_index(0, 2, 2, 3)  # exposure index 2 does not exist in a 2-frame clip


@pytest.mark.parametrize("period", [2, 3])
@pytest.mark.parametrize("offset", [-3, -2, -1, 0, 1, 2, 3])
def test_shift_clip_frame_n_is_window_index(period, offset):
    num = 8
    shifted = shift_clip(numbered_clip(num), offset, period)
    assert shifted.num_frames == num
    for n in range(num):
        f = shifted.get_frame(n)
        want = window_index(n, offset, num, period)
        assert f.props["Src"] == want
        assert np.all(np.asarray(f[1]) == want)


@pytest.mark.parametrize("evs", [[-1.5, 1.5], [-2.0, 0.0, 2.0]])
def test_shifted_slots_have_expected_exposure(evs):
    num, period = 7, len(evs)
    lin = hv.linearize(numbered_clip(num).std.Expr("x 0.05 *"), exposures=evs, device="cpu")
    for offset in (-2, -1, 1, 2):
        shifted = shift_clip(lin, offset, period)
        for n in range(num):
            props = shifted.get_frame(n).props
            assert props["HdrExposureIndex"] == (n + offset) % period
            assert props["HdrExposureEV"] == evs[(n + offset) % period]
