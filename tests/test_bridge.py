"""bridge: frame <-> tensor, the handoff cache, exposure-aware temporal windows, upload counting."""
import numpy as np
import pytest
import torch
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid import bridge
from vs_hdrvid.bridge import NodeRunner, counters, handoff, shift_clip, window_index

from conftest import clip_from_arrays, make_sequence, planes

CPU = torch.device("cpu")


def numbered_clip(n: int, h: int = 8, w: int = 12) -> vs.VideoNode:
    """Frame ``k`` is filled with the value ``k`` and carries ``Src=k``."""
    return clip_from_arrays([np.full((h, w, 3), k, np.float32) for k in range(n)],
                            [{"Src": k} for k in range(n)])


# ---------------------------------------------------------------------------------- window_index
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


# ------------------------------------------------------------------------------------ shift_clip
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


# ------------------------------------------------------------------------------ frames / tensors
def test_frame_tensor_round_trip():
    rng = np.random.default_rng(0)
    arr = rng.random((6, 10, 3)).astype(np.float32)
    f = clip_from_arrays([arr]).get_frame(0)
    before = counters.snapshot()
    t = bridge.frame_to_tensor(f, CPU)
    assert t.shape == (3, 6, 10) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.permute(1, 2, 0).numpy(), arr)
    out = bridge.tensor_to_frame(t * 2, f.format, {"Foo": 3})
    np.testing.assert_allclose(planes(out), 2 * arr, rtol=0, atol=0)
    assert out.props["Foo"] == 3
    after = counters.snapshot()
    assert after["uploads"] - before["uploads"] == 1 and after["downloads"] - before["downloads"] == 1


def test_runner_upload_cache_and_handoff():
    f = numbered_clip(1).get_frame(0)
    a, b = NodeRunner("a", CPU), NodeRunner("b", CPU)
    counters.reset()
    t1 = a.fetch(f, key=(0, 0))
    t2 = a.fetch(f, key=(0, 0))
    assert t1 is t2
    assert counters.snapshot() == {"uploads": 1, "downloads": 0, "handoffs": 0, "cache_hits": 1}
    out = a.emit(t1 + 1, f.format)
    assert bridge.TOKEN_PROP in out.props
    t3 = b.fetch(out)
    assert counters.handoffs == 1 and counters.uploads == 1
    assert torch.equal(t3, t1 + 1)


def test_handoff_guard_rejects_changed_pixels():
    runner = NodeRunner("a", CPU)
    clip = numbered_clip(1, h=16, w=16)
    produced = runner.map_frames(clip, [clip], lambda n, f: runner.emit(runner.fetch(f[0]) + 1, f[0].format))
    changed = produced.std.Expr("x 2 *")  # keeps the props (token), changes the pixels
    counters.reset()
    frame = changed.get_frame(0)
    assert bridge.TOKEN_PROP in frame.props
    t = NodeRunner("b", CPU).fetch(frame)
    assert counters.handoffs == 0 and counters.uploads >= 1
    assert float(t.mean()) == pytest.approx(2.0)


# -------------------------------------------------------------------------- uploads per frame
def test_merge_window_uploads_each_input_frame_once(tmp_path):
    """A 5-frame window over 10 frames: merge takes each input frame once (handed over or
    uploaded), every other use is a cache hit; linearize uploads each source frame at most once."""
    n = 10
    seq = make_sequence(tmp_path, [-1.5, 1.5], n, size=(32, 48), motion=None)
    lin = hv.linearize(hv.read_images(seq.pattern), exposures=[-1.5, 1.5], device="cpu")
    merged = hv.merge(lin, radius=2, device="cpu")
    counters.reset()
    handoff.clear()
    for _ in merged.frames():
        pass
    c = counters.snapshot()
    lin_computed = c["downloads"] - n  # each linearize frame: one upload and one download
    assert 0 <= lin_computed <= n
    merge_uploads = c["uploads"] - lin_computed
    assert merge_uploads + c["handoffs"] == n, c
    assert c["cache_hits"] == 5 * n - n, c
