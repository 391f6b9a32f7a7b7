"""bridge.runner: the upload cache, tensors a node may modify (fetch(own=True)), per-slot scratch
buffers, torch's threads shared between slots, and uploads per frame through a window."""
import threading

import numpy as np
import pytest
import torch
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid.bridge import NodeRunner, counters, handoff
from vs_hdrvid.bridge.handoff import TOKEN_PROP

from conftest import clip_from_arrays, make_sequence, planes

CPU = torch.device("cpu")


def numbered_clip(n: int, h: int = 8, w: int = 12) -> vs.VideoNode:
    """Frame ``k`` is filled with the value ``k`` and carries ``Src=k``."""
    return clip_from_arrays([np.full((h, w, 3), k, np.float32) for k in range(n)],
                            [{"Src": k} for k in range(n)])


def test_runner_upload_cache_and_handoff():
    f = numbered_clip(1).get_frame(0)
    a, b = NodeRunner("a", CPU), NodeRunner("b", CPU)
    counters.reset()
    t1 = a.fetch(f, key=(0, 0))
    t2 = a.fetch(f, key=(0, 0))
    assert t1 is t2
    assert counters.snapshot() == {"uploads": 1, "downloads": 0, "handoffs": 0, "cache_hits": 1}
    out = a.emit(t1 + 1, f.format)
    assert TOKEN_PROP in out.props
    t3 = b.fetch(out)
    assert counters.handoffs == 1 and counters.uploads == 1
    assert torch.equal(t3, t1 + 1)


def test_fetch_own_copies_a_handed_over_tensor_only():
    arr = np.full((6, 8, 3), 0.25, np.float32)
    f = clip_from_arrays([arr]).get_frame(0)
    a, b = NodeRunner("a", CPU), NodeRunner("b", CPU)
    counters.reset()
    t = a.fetch(f, own=True)
    assert counters.uploads == 1
    t.mul_(2)  # ours: the frame keeps its pixels
    np.testing.assert_array_equal(planes(f), arr)
    published = a.emit(t, f.format)
    mine = b.fetch(published, own=True)
    assert counters.handoffs == 1 and counters.uploads == 1
    assert mine.data_ptr() != t.data_ptr() and torch.equal(mine, t)
    mine.add_(1)
    assert float(t.max()) == 0.5  # the published tensor is unchanged


def test_scratch_outside_callbacks_is_per_thread():
    r = NodeRunner("a", CPU)
    s1 = r.scratch("x", (2, 3))
    assert r.scratch("x", (2, 3)) is s1 and s1.dtype == torch.float32
    assert r.scratch("x", (2, 4)) is not s1 and r.scratch("y", (2, 3)) is not s1
    other = []
    th = threading.Thread(target=lambda: other.append(r.scratch("x", (2, 3))))
    th.start()
    th.join()
    assert other[0] is not s1


def test_scratch_is_reused_across_callbacks_of_a_graph():
    """VapourSynth's threads enter each callback with a fresh Python thread state: the buffers must
    still be the slot's, not new ones (each a page-faulted allocation) per frame."""
    src = clip_from_arrays([np.zeros((4, 4, 3), np.float32)] * 12)
    for streams in (1, 2):
        r = NodeRunner("a", CPU, num_streams=streams)
        seen = []

        def fn(n, f):
            seen.append(r.scratch("x", (8, 8)))
            return f[0]

        for _ in r.map_frames(src, [src], fn).frames(close=True):
            pass
        assert len(seen) == 12 and 1 <= len({id(t) for t in seen}) <= streams  # a slot's, not a frame's


def test_frames_run_in_any_free_slot_with_their_own_scratch():
    """Frames 0 and 2 (the same remainder for 2 streams) run at the same time, each in a slot of its
    own: both reach the barrier, and neither sees the other's scratch."""
    src = clip_from_arrays([np.zeros((4, 4, 3), np.float32)] * 4)
    r = NodeRunner("a", CPU, num_streams=2)
    both = threading.Barrier(2, timeout=20)
    kept = {}

    def fn(n, f):
        buf = r.scratch("x", (4,))
        buf.fill_(n)
        both.wait()  # the other frame writes its own scratch meanwhile
        kept[n] = buf.clone()
        return f[0]

    out = r.map_frames(src, [src], fn)
    pending = [out.get_frame_async(n) for n in (0, 2)]
    for p in pending:
        p.result()
    assert torch.equal(kept[0], torch.zeros(4)) and torch.equal(kept[2], torch.full((4,), 2.0))


def test_cpu_callbacks_share_torch_threads_between_streams():
    seen = {}
    total = torch.get_num_threads()
    arr = np.zeros((4, 4, 3), np.float32)
    src = clip_from_arrays([arr] * 4)
    for streams in (1, 2):
        r = NodeRunner("a", CPU, num_streams=streams)

        def fn(n, f, streams=streams):
            seen[streams] = torch.get_num_threads()
            return f[0]

        r.map_frames(src, [src], fn).get_frame(0)
        assert torch.get_num_threads() == total  # restored for the caller
    assert seen == {1: total, 2: max(1, total // 2)}
    assert NodeRunner("a", CPU, num_streams=None).num_streams == vs.core.num_threads


def test_linearize_gamma_in_place_matches_the_power_law():
    rng = np.random.default_rng(0)
    arr = rng.random((10, 12, 3)).astype(np.float32)
    arr[0, 0] = 0.0
    arr[0, 1] = 1.0
    src = clip_from_arrays([arr, arr])
    out = hv.linearize(src, exposures=[-1.5, 1.5], device="cpu")
    for n, ev in enumerate([-1.5, 1.5]):
        got = planes(out.get_frame(n)).astype(np.float64)
        want = arr.astype(np.float64) ** 2.2 / 2.0 ** ev
        np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-30)
    np.testing.assert_array_equal(planes(src.get_frame(0)), arr)  # the source frame is untouched
    assert handoff.lookup(out.get_frame(0), CPU) is not None


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
