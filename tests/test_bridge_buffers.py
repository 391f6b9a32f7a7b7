"""bridge: tensors a node may modify (fetch(own=True)), per-slot scratch buffers, and a node that
computes in place on its upload (linearize) leaving the frames it reads untouched."""
import threading

import numpy as np
import torch
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid import bridge
from vs_hdrvid.bridge import NodeRunner, counters

from conftest import clip_from_arrays, planes

CPU = torch.device("cpu")


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
        assert len(seen) == 12 and len({id(t) for t in seen}) == streams


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
    assert bridge.handoff.lookup(out.get_frame(0), CPU) is not None


def test_host_pool_recycles_an_array_only_once_nothing_views_it():
    pool = bridge._HostPool(keep_free=1)
    shape = (2, 4, 5)
    a = pool.tensor(shape)
    pa, view = a.data_ptr(), a[1:]  # a view keeps the storage, and so the array, in use
    del a
    b = pool.tensor(shape)
    pb, arr = b.data_ptr(), b.numpy()  # a numpy view of the tensor counts too
    assert pb != pa
    del b, view
    c = pool.tensor(shape)
    assert c.data_ptr() == pa  # free again; b's array is still viewed by `arr`
    del arr, c
    held = [pool.tensor(shape) for _ in range(3)]
    assert len({t.data_ptr() for t in held} | {pa, pb}) == 3  # the two free ones, and one new
    del held
    d = pool.tensor(shape)  # three idle: one handed out, one kept idle, one dropped
    assert len(pool._arrays[(shape, np.dtype(np.float32))]) == 2
    assert pool.tensor((3,), torch.float16).dtype == torch.float16
    del d


def test_uploads_reuse_host_buffers_and_keep_their_values():
    arrs = [np.full((6, 8, 3), v, np.float32) for v in (0.25, 0.5)]
    frames = [clip_from_arrays([a]).get_frame(0) for a in arrs]
    t0 = bridge.frame_to_tensor(frames[0], CPU)
    t1 = bridge.frame_to_tensor(frames[1], CPU)
    assert t0.data_ptr() != t1.data_ptr() and float(t0.max()) == 0.25 and float(t1.max()) == 0.5
    ptr = t0.data_ptr()
    del t0
    assert bridge.frame_to_tensor(frames[1], CPU).data_ptr() == ptr  # recycled, not reallocated


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


def test_handoff_cache_is_bounded_in_bytes_too():
    cache = bridge._HandoffCache(max_items=10, max_bytes=2 * 6 * 8 * 3 * 4)  # two 6x8 RGBS frames
    frames = [clip_from_arrays([np.full((6, 8, 3), v, np.float32)]).get_frame(0).copy() for v in range(3)]
    tensors = [torch.full((3, 6, 8), float(v)) for v in range(3)]
    for f, t in zip(frames, tensors):
        cache.publish(f, t)
    assert cache.lookup(frames[0], CPU) is None  # the oldest went past the byte bound
    assert cache.lookup(frames[1], CPU) is tensors[1] and cache.lookup(frames[2], CPU) is tensors[2]
    cache.publish(frames[0], torch.zeros(3, 60, 80))  # larger than the bound alone: still kept
    assert cache.lookup(frames[0], CPU) is None  # its size does not match the frame
    assert len(cache._items) == 1
