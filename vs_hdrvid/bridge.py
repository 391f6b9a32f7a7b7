"""VideoFrame <-> numpy <-> torch, the device-tensor handoff between nodes, and temporal windows.

Every node goes through this module, so the rules live in one place:

- CPU frames become tensors as views of the frame's planes (``np.asarray(frame[p])`` ->
  ``torch.from_numpy``); the only copy on input is stacking the planes into one ``(C, H, W)``
  tensor, into a recycled buffer (VapourSynth allocates each plane on its own, so the planes
  are not one strided array). Output is one ``np.copyto`` per plane into a new frame.
- On CUDA, uploads and downloads go through pinned staging buffers with non-blocking copies.
- A frame made by a vs_hdrvid node carries the property ``HdrvidToken``; its tensor stays in a
  bounded cache so a vs_hdrvid consumer on the same device takes the tensor instead of uploading the
  frame again. A fingerprint of sampled pixels guards against a filter in between that kept the
  props but changed the pixels.
- Within a node, each source frame is uploaded at most once however many windows contain it.
- :data:`counters` counts uploads, downloads and handoffs for benchmarks.
"""
from __future__ import annotations

import itertools
import sys
import threading
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import vapoursynth as vs

from .ops.bands import row_bands

__all__ = [
    "Counters", "counters", "resolve_device", "frame_to_tensor", "tensor_to_frame",
    "NodeRunner", "shift_clip", "window_index", "blank_like", "handoff", "TOKEN_PROP", "row_bands",
]

TOKEN_PROP = "HdrvidToken"
core = vs.core
# frame planes are read-only views; tensors made from them are never written to
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


# ----------------------------------------------------------------------------- frame <-> tensor
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


class _HostPool:
    """Recycled host arrays for frame-sized tensors (uploads, node outputs).

    A new 1080p RGBS array costs more in page faults (about 10-25 ms) than copying the planes
    into it (about 3 ms). A pooled array is free again once nothing views it: tensors made with
    ``torch.from_numpy`` hold the array through their storage, so CPython's reference count is
    exact (the pool's list, the loop variable and ``getrefcount``'s argument: 3). The pool keeps
    the arrays in use (the handoff cache and the nodes' window caches bound how many) and at most
    ``keep_free`` idle ones per shape.
    """

    def __init__(self, keep_free: int = 4):
        self.keep_free = keep_free
        self._arrays: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` that nothing else views (contents undefined)."""
        key = (tuple(shape), np.dtype(dtype))
        with self._lock:
            arrays = self._arrays.setdefault(key, [])
            kept, found, idle = [], None, 0
            for a in arrays:
                if sys.getrefcount(a) > 3:  # viewed by a tensor or array outside the pool
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


host_pool = _HostPool()


def frame_to_tensor(frame: vs.VideoFrame, device: torch.device, dtype: torch.dtype = torch.float32
                    ) -> torch.Tensor:
    """Planes of ``frame`` as one ``(C, H, W)`` tensor on ``device`` (counts one upload).

    Float frames only (nodes convert integer input with ``resize`` before reaching here).
    """
    planes = [np.asarray(frame[p]) for p in range(frame.format.num_planes)]
    counters.add("uploads")
    if device.type == "cpu":
        # numpy's stack is one single-threaded memcpy per plane: as fast as torch's on an idle
        # machine and unaffected when the cores are busy, where torch's threads wait on each other
        buf = host_pool.take((len(planes), *planes[0].shape), planes[0].dtype)
        return torch.from_numpy(np.stack(planes, out=buf)).to(dtype)
    staging, last = _pinned((len(planes), *planes[0].shape), torch.from_numpy(planes[0][:1, :1]).dtype)
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


# ----------------------------------------------------------------------------- device handoff
def _fingerprint(frame: vs.VideoFrame) -> np.ndarray:
    """A few sampled pixel values: cheap to take, and different if a filter changed the pixels."""
    h, w = frame.height, frame.width
    ys = (np.arange(1, 9) * 7919 % h)
    xs = (np.arange(1, 9) * 104729 % w)
    return np.stack([np.asarray(frame[p])[ys, xs] for p in range(frame.format.num_planes)])


class _HandoffCache:
    """Bounded map token -> (tensor, fingerprint) of frames produced by vs_hdrvid nodes.

    Holds at most ``max_items`` tensors and ``max_bytes`` of them (64 1080p RGBS frames are
    1.5 GiB; the byte bound keeps 4K within 2 GiB), oldest evicted first. An evicted frame is
    uploaded again by its consumer: slower, never wrong.
    """

    def __init__(self, max_items: int = 64, max_bytes: int = 2 << 30):
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[int, tuple[torch.Tensor, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._next = itertools.count(1)

    def publish(self, frame: vs.VideoFrame, tensor: torch.Tensor) -> None:
        token = next(self._next)
        frame.props[TOKEN_PROP] = token
        with self._lock:
            self._items[token] = (tensor, _fingerprint(frame))
            self._bytes += tensor.numel() * tensor.element_size()
            while len(self._items) > 1 and (len(self._items) > self.max_items or self._bytes > self.max_bytes):
                old, _ = self._items.popitem(last=False)[1]
                self._bytes -= old.numel() * old.element_size()

    def lookup(self, frame: vs.VideoFrame, device: torch.device) -> torch.Tensor | None:
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
                or not np.array_equal(fp, _fingerprint(frame))):
            return None
        return tensor

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


handoff = _HandoffCache()


# ----------------------------------------------------------------------------- temporal windows
def window_index(n: int, offset: int, num_frames: int, period: int) -> int:
    """Source frame for slot ``offset`` of the window centred on ``n``.

    Past either end the neighbour is replaced by the nearest in-range frame with the same exposure
    index, shifting by whole pattern periods, so every window has the exposures it expects.
    """
    m = n + offset
    if m < 0:
        m += -(m // period) * period  # whole periods up to the first in-range frame
    elif m >= num_frames:
        m -= -(-(m - num_frames + 1) // period) * period
    if not 0 <= m < num_frames:
        raise IndexError(f"no frame with exposure index {(n + offset) % period} within the clip")
    return m


def shift_clip(clip: vs.VideoNode, offset: int, period: int) -> vs.VideoNode:
    """``clip`` shifted so frame ``n`` is source frame :func:`window_index` ``(n, offset)``.

    Built from trims and splices, so the host graph serves the frame requests.
    """
    if offset == 0:
        return clip
    n_frames = clip.num_frames
    idx = [window_index(n, offset, n_frames, period) for n in range(n_frames)]
    runs: list[tuple[int, int]] = []  # contiguous source runs [a, b]
    for m in idx:
        if runs and m == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], m)
        else:
            runs.append((m, m))
    return core.std.Splice([clip[a:b + 1] for a, b in runs]) if len(runs) > 1 else clip[runs[0][0]:runs[0][1] + 1]


class NodeRunner:
    """Per-node execution: device, upload cache, locks per CUDA stream, frame mapping.

    Args:
        name: node name for error messages.
        device: torch device the node computes on.
        dtype: compute dtype (fp16 on CUDA unless the node was asked for fp32).
        num_streams: frames processed concurrently (CUDA streams, each with its own lock);
            1 runs callbacks one at a time through a single ``ModifyFrame``. None: one on CUDA,
            and on CPU as many as VapourSynth has threads (``core.num_threads``).
        cache_frames: how many uploaded source frames to keep for overlapping windows.

    On CPU the streams share torch's intra-op threads: each callback runs on
    ``torch.get_num_threads() // num_streams`` of them (at least 1), so frames processed side by
    side do not oversubscribe the cores. Pointwise passes over a frame scale worse across threads
    than whole frames do: the weight-free nodes default to one frame per VapourSynth thread and
    one torch thread each, the networks to one frame at a time on all of torch's threads.
    """

    def __init__(self, name: str, device: torch.device, dtype: torch.dtype = torch.float32,
                 num_streams: int | None = 1, cache_frames: int = 16):
        self.name, self.device, self.dtype = name, device, dtype
        if num_streams is None:
            num_streams = core.num_threads if device.type == "cpu" else 1
        self.num_streams = max(1, int(num_streams))
        self._cpu_threads = max(1, torch.get_num_threads() // self.num_streams) if device.type == "cpu" else 0
        self.cache_frames = cache_frames
        self._uploads: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._fetch_locks = [threading.Lock() for _ in range(16)]  # striped by cache key
        self._locks = [threading.Lock() for _ in range(self.num_streams)]
        self._streams = ([torch.cuda.Stream(device) for _ in range(self.num_streams)]
                         if device.type == "cuda" else [None] * self.num_streams)
        # scratch buffers belong to a slot (held by one callback at a time), found from the native
        # thread id: not a threading.local, which VapourSynth's worker threads see empty in every
        # callback (each enters Python through a fresh thread state)
        self._scratch: dict[object, dict[tuple, torch.Tensor]] = {}
        self._slot_of: dict[int, int] = {}

    def scratch(self, name: str, shape: Sequence[int], dtype: torch.dtype | None = None) -> torch.Tensor:
        """A work buffer of the calling callback's slot, reused from frame to frame (contents undefined).

        A new 1080p temporary costs more in page faults than most arithmetic on it. A slot (one per
        stream) runs one callback at a time, so its scratch is private to that callback while it
        runs; never publish, cache or return a scratch tensor past the callback. Outside a callback
        the buffers are the calling thread's.
        """
        me = threading.get_ident()
        store = self._scratch.setdefault(self._slot_of.get(me, ("thread", me)), {})
        key = (name, tuple(shape), dtype or self.dtype)
        buf = store.get(key)
        if buf is None:
            buf = store[key] = torch.empty(key[1], dtype=key[2], device=self.device)
        return buf

    def output(self, shape: Sequence[int]) -> torch.Tensor:
        """A tensor for a frame the callback will emit and publish: from :data:`host_pool` on CPU."""
        if self.device.type == "cpu":
            return host_pool.tensor(shape, self.dtype)
        return torch.empty(tuple(shape), dtype=self.dtype, device=self.device)

    def fetch(self, frame: vs.VideoFrame, key: tuple[int, int] | None = None, own: bool = False) -> torch.Tensor:
        """Tensor ``(C, H, W)`` for ``frame``: cached, handed over, or uploaded once.

        ``key`` identifies the source frame (input slot, source index) for the per-node cache, so a
        frame shared by several windows is uploaded (or handed over) once. With ``own`` (and no
        ``key``) the caller may modify the tensor in place: a fresh upload is returned as it is, a
        handed-over tensor (which other nodes may hold) is copied.
        """
        if key is None:
            return self._take(frame, copy=own)
        # one fetch per key at a time: concurrent windows wait for the first instead of uploading again
        with self._fetch_locks[hash(key) % len(self._fetch_locks)]:
            with self._cache_lock:
                t = self._uploads.get(key)
                if t is not None:
                    self._uploads.move_to_end(key)
                    counters.add("cache_hits")
                    return t
            t = self._take(frame)
            with self._cache_lock:
                self._uploads[key] = t
                while len(self._uploads) > self.cache_frames:
                    self._uploads.popitem(last=False)
            return t

    def _take(self, frame: vs.VideoFrame, copy: bool = False) -> torch.Tensor:
        """``frame``'s tensor, handed over from the node that made it (a copy with ``copy``) or uploaded."""
        t = handoff.lookup(frame, self.device)
        if t is not None:
            counters.add("handoffs")
            return t.to(self.dtype, copy=copy)
        return frame_to_tensor(frame, self.device, self.dtype)

    def new_frame(self, fmt: vs.VideoFormat, width: int, height: int) -> tuple[vs.VideoFrame, list[torch.Tensor]]:
        """A new CPU frame and its planes as writable ``(H, W)`` tensors (counts one download).

        For output written piece by piece (band by band) straight into the frame, without a
        whole-frame tensor in between; the frame is not published to the handoff cache.
        """
        out = core.create_video_frame(fmt, width, height)
        planes = [torch.from_numpy(np.asarray(out[p])) for p in range(fmt.num_planes)]
        counters.add("downloads")
        return out, planes

    def emit(self, t: torch.Tensor, fmt: vs.VideoFormat, props: dict | None = None,
             publish: bool = True) -> vs.VideoFrame:
        """Write ``t`` into a new frame and make it available to downstream vs_hdrvid nodes."""
        out = tensor_to_frame(t, fmt, props)
        if publish:
            handoff.publish(out, t)
        return out

    @contextmanager
    def _slot(self, n: int):
        i = n % self.num_streams
        me = threading.get_ident()
        with self._locks[i]:
            self._slot_of[me] = i
            try:
                stream = self._streams[i]
                if stream is not None:
                    with torch.cuda.stream(stream):
                        yield
                    return
                prev = torch.get_num_threads()  # per calling thread (OpenMP): restored for other users
                if prev != self._cpu_threads:
                    torch.set_num_threads(self._cpu_threads)
                try:
                    yield
                finally:
                    if prev != self._cpu_threads:
                        torch.set_num_threads(prev)
            finally:
                del self._slot_of[me]

    def map_frames(self, template: vs.VideoNode, clips: Sequence[vs.VideoNode],
                   fn: Callable[[int, list[vs.VideoFrame]], vs.VideoFrame]) -> vs.VideoNode:
        """Run ``fn(n, frames)`` for every output frame; frames are ``clips``' frames ``n``.

        ``template`` gives the output format, size and length. With several streams the
        ``FrameEval(ModifyFrame)`` pattern lets frames run concurrently, one per stream lock.
        """
        clips = list(clips)

        @torch.inference_mode()
        def selector(n: int, f) -> vs.VideoFrame:
            frames = list(f) if isinstance(f, (list, tuple)) else [f]
            with self._slot(n):
                try:
                    return fn(n, frames)
                except vs.Error:
                    raise
                except Exception as e:  # keep the node name on every error
                    raise vs.Error(f"hdrvid.{self.name}: frame {n}: {type(e).__name__}: {e}") from e

        if self.num_streams == 1:
            return core.std.ModifyFrame(template, clips, selector)
        return core.std.FrameEval(
            template, lambda n: core.std.ModifyFrame(template, clips, selector), clip_src=clips)


def blank_like(clip: vs.VideoNode, fmt: int | vs.VideoFormat = vs.RGBS,
               width: int | None = None, height: int | None = None) -> vs.VideoNode:
    """A template clip with ``clip``'s length and frame rate in another format or size."""
    return core.std.BlankClip(clip, format=int(fmt) if isinstance(fmt, int) else fmt.id,
                              width=width or clip.width, height=height or clip.height, keep=True)
