"""The handoff cache: a frame made by one vs_hdrvid node reaches the next as its tensor, not re-uploaded.

A node that publishes a frame gives it the property ``HdrvidToken`` and keeps its tensor here; a
vs_hdrvid consumer on the same device takes the tensor instead of uploading the frame again. Only a
tensor that still matches the frame is handed over (:meth:`HandoffCache.lookup` checks it): the
same device type, plane count and size, and the same sampled pixels, so a filter in between that
kept the props but changed the pixels gets the frame uploaded instead. Handed-over tensors are
shared: consumers read them and copy before writing (``NodeRunner.fetch(own=True)``).
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict

import numpy as np
import torch
import vapoursynth as vs

__all__ = ["TOKEN_PROP", "HandoffCache", "handoff", "fingerprint"]

TOKEN_PROP = "HdrvidToken"


def fingerprint(frame: vs.VideoFrame) -> np.ndarray:
    """A few sampled pixel values: cheap to take, and different if a filter changed the pixels."""
    h, w = frame.height, frame.width
    ys = (np.arange(1, 9) * 7919 % h)
    xs = (np.arange(1, 9) * 104729 % w)
    return np.stack([np.asarray(frame[p])[ys, xs] for p in range(frame.format.num_planes)])


class HandoffCache:
    """Bounded map token -> (tensor, fingerprint) of frames produced by vs_hdrvid nodes.

    Holds at most ``max_items`` tensors and ``max_bytes`` of them (64 1080p RGBS frames are
    1.5 GiB; the byte bound keeps 4K within 2 GiB), oldest evicted first, the newest always kept.
    An evicted frame is uploaded again by its consumer: slower, never wrong.
    """

    def __init__(self, max_items: int = 64, max_bytes: int = 2 << 30):
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[int, tuple[torch.Tensor, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._next = itertools.count(1)

    def publish(self, frame: vs.VideoFrame, tensor: torch.Tensor) -> None:
        """Tag ``frame`` (a new, writable frame holding ``tensor``'s pixels) and keep ``tensor``."""
        token = next(self._next)
        frame.props[TOKEN_PROP] = token
        with self._lock:
            self._items[token] = (tensor, fingerprint(frame))
            self._bytes += tensor.numel() * tensor.element_size()
            while len(self._items) > 1 and (len(self._items) > self.max_items or self._bytes > self.max_bytes):
                old, _ = self._items.popitem(last=False)[1]
                self._bytes -= old.numel() * old.element_size()

    def lookup(self, frame: vs.VideoFrame, device: torch.device) -> torch.Tensor | None:
        """The published tensor of ``frame`` if it is still here and still matches the frame."""
        token = frame.props.get(TOKEN_PROP)
        if token is None:
            return None
        with self._lock:
            item = self._items.get(int(token))
        if item is None:
            return None
        tensor, fp = item
        if (tensor.device.type != device.type or tensor.shape[-2:] != (frame.height, frame.width)
                or tensor.shape[0] != frame.format.num_planes
                or not np.array_equal(fp, fingerprint(frame))):
            return None
        return tensor

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


handoff = HandoffCache()
