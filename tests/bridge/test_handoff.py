"""bridge.handoff: a node's output reaches the next node as its tensor, only while it matches the frame."""
import numpy as np
import pytest
import torch
import vapoursynth as vs

from vs_hdrvid.bridge import HandoffCache, NodeRunner, counters
from vs_hdrvid.bridge.handoff import TOKEN_PROP

from conftest import clip_from_arrays

CPU = torch.device("cpu")


def numbered_clip(n: int, h: int = 8, w: int = 12) -> vs.VideoNode:
    """Frame ``k`` is filled with the value ``k`` and carries ``Src=k``."""
    return clip_from_arrays([np.full((h, w, 3), k, np.float32) for k in range(n)],
                            [{"Src": k} for k in range(n)])


def test_handoff_guard_rejects_changed_pixels():
    runner = NodeRunner("a", CPU)
    clip = numbered_clip(1, h=16, w=16)
    produced = runner.map_frames(clip, [clip], lambda n, f: runner.emit(runner.fetch(f[0]) + 1, f[0].format))
    changed = produced.std.Expr("x 2 *")  # keeps the props (token), changes the pixels
    counters.reset()
    frame = changed.get_frame(0)
    assert TOKEN_PROP in frame.props
    t = NodeRunner("b", CPU).fetch(frame)
    assert counters.handoffs == 0 and counters.uploads >= 1
    assert float(t.mean()) == pytest.approx(2.0)


def test_handoff_cache_is_bounded_in_bytes_too():
    cache = HandoffCache(max_items=10, max_bytes=2 * 6 * 8 * 3 * 4)  # two 6x8 RGBS frames
    frames = [clip_from_arrays([np.full((6, 8, 3), v, np.float32)]).get_frame(0).copy() for v in range(3)]
    tensors = [torch.full((3, 6, 8), float(v)) for v in range(3)]
    for f, t in zip(frames, tensors):
        cache.publish(f, t)
    assert cache.lookup(frames[0], CPU) is None  # the oldest went past the byte bound
    assert cache.lookup(frames[1], CPU) is tensors[1] and cache.lookup(frames[2], CPU) is tensors[2]
    cache.publish(frames[0], torch.zeros(3, 60, 80))  # larger than the bound alone: still kept
    assert cache.lookup(frames[0], CPU) is None  # its size does not match the frame
    assert len(cache._items) == 1
