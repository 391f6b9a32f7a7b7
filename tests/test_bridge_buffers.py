"""bridge: tensors a node may modify (fetch(own=True)), per-thread scratch buffers, and a node that
computes in place on its upload (linearize) leaving the frames it reads untouched."""
import threading

import numpy as np
import torch

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


def test_scratch_is_reused_per_thread():
    r = NodeRunner("a", CPU)
    s1 = r.scratch("x", (2, 3))
    assert r.scratch("x", (2, 3)) is s1 and s1.dtype == torch.float32
    assert r.scratch("x", (2, 4)) is not s1 and r.scratch("y", (2, 3)) is not s1
    other = []
    th = threading.Thread(target=lambda: other.append(r.scratch("x", (2, 3))))
    th.start()
    th.join()
    assert other[0] is not s1


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
