"""Frames to tensors and back: the copies, the buffers they go through, and their counts.

- CPU frames are read as views of their planes (``np.asarray(frame[p])``); the one copy on input
  stacks the planes into a ``(C, H, W)`` array from :data:`host_pool` (VapourSynth allocates each
  plane on its own, so the planes are not one strided array). Output is one ``np.copyto`` per
  plane into a new frame.
- On CUDA, uploads and downloads go through pinned staging buffers with non-blocking copies.
- :data:`counters` counts uploads, downloads, handoffs and cache hits for benchmarks and tests.

Tensors made from frame planes are never written to: the planes of a rendered frame are read-only,
so nothing here makes a tensor that views one (``torch.from_numpy`` of a read-only array warns,
rightly, that writing to it is undefined).
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import vapoursynth as vs

__all__ = ["Counters", "counters", "HostPool", "host_pool", "frame_to_tensor", "tensor_to_frame",
           "new_frame"]

core = vs.core


@dataclass
class Counters:
    """Transfers between frames and tensors, for benchmarks (thread-safe increments)."""

    uploads: int = 0
    downloads: int = 0
    handoffs: int = 0
    cache_hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, k: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + k)

    def reset(self) -> None:
        with self._lock:
            self.uploads = self.downloads = self.handoffs = self.cache_hits = 0

    def snapshot(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("uploads", "downloads", "handoffs", "cache_hits")}


counters = Counters()


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


class HostPool:
    """Recycled host arrays for frame-sized tensors (uploads, node outputs).

    A new 1080p RGBS array costs more in page faults (about 10-25 ms) than copying the planes into
    it (about 3 ms). An array handed out is in use while anything views it: a tensor made with
    ``torch.from_numpy`` (and every view of that tensor) holds the array through its storage, as
    does a numpy view, so the array's reference count says whether it is free (see :meth:`take`).
    The pool keeps the arrays in use (the handoff cache and the nodes' window caches bound how many)
    and at most ``keep_free`` idle ones per shape.
    """

    def __init__(self, keep_free: int = 4):
        self.keep_free = keep_free
        self._arrays: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        # the count of an array that only the pool's list holds, measured through the same code
        # that counts the pooled ones, so it does not depend on how this Python counts references
        self._unviewed = self._references([np.empty(0)])[0]

    @staticmethod
    def _references(arrays: list[np.ndarray]) -> list[int]:
        return [sys.getrefcount(a) for a in arrays]

    def take(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` that nothing else views (contents undefined)."""
        key = (tuple(shape), np.dtype(dtype))
        with self._lock:
            arrays = self._arrays.setdefault(key, [])
            kept, found, idle = [], None, 0
            for a, refs in zip(arrays, self._references(arrays)):
                if refs > self._unviewed:  # in use: a tensor or array outside the pool views it
                    kept.append(a)
                elif found is None:
                    found = a
                    kept.append(a)
                elif idle < self.keep_free:
                    idle += 1
                    kept.append(a)
            if found is None:
                found = np.empty(shape, dtype)
                kept.append(found)
            arrays[:] = kept
            return found

    def tensor(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """:meth:`take` as a CPU tensor."""
        return torch.from_numpy(self.take(tuple(shape), torch.empty((), dtype=dtype).numpy().dtype))


host_pool = HostPool()

# pinned staging buffers, one per (shape, dtype, thread); a buffer is reused only once the last
# non-blocking copy that reads it has finished (the event beside it)
_staging: dict[tuple, tuple[torch.Tensor, list]] = {}
_staging_lock = threading.Lock()


def _pinned(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, list]:
    """The calling thread's pinned buffer of this shape, once its last async copy has finished.

    Returns the buffer and a one-item list holding the event of its last copy; record a new
    event there after queueing a copy that reads from it.
    """
    key = (shape, dtype, threading.get_ident())
    with _staging_lock:
        item = _staging.get(key)
        if item is None:
            item = _staging[key] = (torch.empty(shape, dtype=dtype, pin_memory=True), [None])
    buf, last = item
    if last[0] is not None:
        last[0].synchronize()  # the previous non-blocking upload may still be reading it
    return buf, last


def frame_to_tensor(frame: vs.VideoFrame, device: torch.device, dtype: torch.dtype = torch.float32
                    ) -> torch.Tensor:
    """Planes of ``frame`` as one ``(C, H, W)`` tensor on ``device`` (counts one upload).

    Float frames only (nodes convert integer input with ``resize`` before reaching here). The
    tensor owns its memory (a pooled array on CPU), never the frame's.
    """
    planes = [np.asarray(frame[p]) for p in range(frame.format.num_planes)]
    counters.add("uploads")
    if device.type == "cpu":
        # numpy's stack is one single-threaded memcpy per plane: as fast as torch's on an idle
        # machine and unaffected when the cores are busy, where torch's threads wait on each other
        buf = host_pool.take((len(planes), *planes[0].shape), planes[0].dtype)
        return torch.from_numpy(np.stack(planes, out=buf)).to(dtype)
    staging, last = _pinned((len(planes), *planes[0].shape), _torch_dtype(planes[0].dtype))
    for i, p in enumerate(planes):
        np.copyto(staging[i].numpy(), p)
    out = staging.to(device, non_blocking=True)
    last[0] = torch.cuda.Event()
    last[0].record(torch.cuda.current_stream(device))
    return out.to(dtype)


def tensor_to_frame(t: torch.Tensor, fmt: vs.VideoFormat, props: dict | None = None) -> vs.VideoFrame:
    """A new frame of format ``fmt`` holding ``t`` ``(C, H, W)`` (counts one download).

    Values are cast to the frame's sample type; integer formats expect ``t`` already scaled to
    the integer range and rounded.
    """
    c, h, w = t.shape
    out = core.create_video_frame(fmt, w, h)
    if props:
        out.props.update(props)
    t = t.detach()
    if t.device.type == "cuda":
        staging, _ = _pinned((c, h, w), t.dtype)
        staging.copy_(t, non_blocking=True)
        torch.cuda.current_stream(t.device).synchronize()
        t = staging
    src = t.numpy()
    for p in range(c):
        np.copyto(np.asarray(out[p]), src[p], casting="unsafe")
    counters.add("downloads")
    return out


def new_frame(fmt: vs.VideoFormat, width: int, height: int) -> tuple[vs.VideoFrame, list[torch.Tensor]]:
    """A new CPU frame and its planes as writable ``(H, W)`` tensors (counts one download).

    For output written piece by piece (band by band) straight into the frame, without a
    whole-frame tensor in between. The frame is new and so writable: the tensors may be written
    until the frame is returned to VapourSynth, never after.
    """
    out = core.create_video_frame(fmt, width, height)
    planes = [torch.from_numpy(np.asarray(out[p])) for p in range(fmt.num_planes)]
    counters.add("downloads")
    return out, planes
