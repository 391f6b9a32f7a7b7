"""bridge.transfer: frame <-> tensor, the host pool, upload counting."""
import numpy as np
import torch

from vs_hdrvid.bridge import HostPool, counters, frame_to_tensor, tensor_to_frame

from conftest import clip_from_arrays, planes

CPU = torch.device("cpu")


def test_frame_tensor_round_trip():
    rng = np.random.default_rng(0)
    arr = rng.random((6, 10, 3)).astype(np.float32)
    f = clip_from_arrays([arr]).get_frame(0)
    before = counters.snapshot()
    t = frame_to_tensor(f, CPU)
    assert t.shape == (3, 6, 10) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.permute(1, 2, 0).numpy(), arr)
    out = tensor_to_frame(t * 2, f.format, {"Foo": 3})
    np.testing.assert_allclose(planes(out), 2 * arr, rtol=0, atol=0)
    assert out.props["Foo"] == 3
    after = counters.snapshot()
    assert after["uploads"] - before["uploads"] == 1 and after["downloads"] - before["downloads"] == 1


def test_host_pool_recycles_an_array_only_once_nothing_views_it():
    pool = HostPool(keep_free=1)
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
    t0 = frame_to_tensor(frames[0], CPU)
    t1 = frame_to_tensor(frames[1], CPU)
    assert t0.data_ptr() != t1.data_ptr() and float(t0.max()) == 0.25 and float(t1.max()) == 0.5
    ptr = t0.data_ptr()
    del t0
    assert frame_to_tensor(frames[1], CPU).data_ptr() == ptr  # recycled, not reallocated
