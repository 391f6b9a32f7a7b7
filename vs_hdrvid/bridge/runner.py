"""``NodeRunner``: how a node runs its per-frame work (slots, streams, threads, uploads, scratch).

A node builds one runner at graph-build time and gives :meth:`NodeRunner.map_frames` its per-frame
function. The runner's rules, each enforced where it is written:

- **Slots.** At most ``num_streams`` callbacks run at once, one per slot; a callback takes any
  free slot (:meth:`NodeRunner._slot`), so frames never queue behind a busy slot while another is
  idle. On CUDA each slot is a CUDA stream; on CPU each callback runs on
  ``torch.get_num_threads() // num_streams`` of torch's threads (at least 1), restored afterwards.
- **Default.** ``num_streams=None`` is the same rule for every node (:func:`default_streams`).
- **Uploads.** Each source frame is uploaded (or handed over) once per node however many windows
  contain it: one fetch per key at a time, the result kept in a bounded cache.
- **Scratch.** A work buffer belongs to a slot and so to one callback at a time; it never
  outlives the callback (never published, cached or returned).
"""
from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import vapoursynth as vs

from .handoff import handoff
from .timing import stage_times
from .requests import same_frames
from .transfer import counters, frame_to_tensor, host_pool, new_frame, tensor_to_frame

__all__ = ["NodeRunner", "default_streams", "blank_like"]

core = vs.core


def default_streams(device: torch.device, network: bool = False) -> int:
    """Frames a node processes at once when it is given ``num_streams=None``.

    One on CUDA (one CUDA stream). On CPU, one frame per VapourSynth thread (``core.num_threads``)
    for the nodes that work pixel by pixel (pointwise passes scale worse across threads than whole
    frames do), and one at a time for the networks (``network``): their convolutions already use
    all of torch's threads, and a frame's working set is gigabytes at 1080p.
    """
    if device.type != "cpu" or network:
        return 1
    return max(1, core.num_threads)


def blank_like(clip: vs.VideoNode, fmt: int | vs.VideoFormat = vs.RGBS,
               width: int | None = None, height: int | None = None) -> vs.VideoNode:
    """A template clip with ``clip``'s length and frame rate in another format or size."""
    return core.std.BlankClip(clip, format=int(fmt) if isinstance(fmt, int) else fmt.id,
                              width=width or clip.width, height=height or clip.height, keep=True)


class NodeRunner:
    """Per-node execution: device, slots (CUDA streams or CPU thread shares), upload cache, scratch.

    Args:
        name: node name for error messages.
        device: torch device the node computes on.
        dtype: compute dtype (fp16 on CUDA unless the node was asked for fp32).
        num_streams: frames processed concurrently, each in its own slot; 1 runs callbacks one at
            a time through a single ``ModifyFrame``. None: :func:`default_streams`.
        cache_frames: how many uploaded source frames to keep for overlapping windows.
        network: the node runs a network (the default of ``num_streams=None`` is then 1 on CPU).

    Raises:
        vs.Error: ``num_streams`` is neither None nor a whole number >= 1.
    """

    def __init__(self, name: str, device: torch.device, dtype: torch.dtype = torch.float32,
                 num_streams: int | None = None, cache_frames: int = 16, network: bool = False):
        self.name, self.device, self.dtype = name, device, dtype
        if num_streams is None:
            num_streams = default_streams(device, network)
        if isinstance(num_streams, bool) or not isinstance(num_streams, int) or num_streams < 1:
            raise vs.Error(f"hdrvid.{name}: num_streams must be a whole number >= 1 or None, got {num_streams!r}")
        self.num_streams = num_streams
        self._cpu_threads = max(1, torch.get_num_threads() // num_streams) if device.type == "cpu" else 0
        self.cache_frames = cache_frames
        self._uploads: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()
        # one fetch per key at a time (concurrent windows wait for the first instead of uploading
        # the frame again), through a fixed set of locks chosen by the key's hash
        self._fetch_locks = [threading.Lock() for _ in range(16)]
        self._streams = ([torch.cuda.Stream(device) for _ in range(num_streams)]
                         if device.type == "cuda" else [None] * num_streams)
        self._free: queue.LifoQueue[int] = queue.LifoQueue()  # the most recently used slot first
        for i in reversed(range(num_streams)):
            self._free.put(i)
        # scratch buffers belong to a slot, found from the native thread id of the callback holding
        # it: not a threading.local, which VapourSynth's worker threads see empty in every callback
        # (each enters Python through a fresh thread state)
        self._scratch: dict[object, dict[tuple, torch.Tensor]] = {}
        self._slot_of: dict[int, int] = {}

    def scratch(self, name: str, shape: Sequence[int], dtype: torch.dtype | None = None) -> torch.Tensor:
        """A work buffer of the calling callback's slot, reused from frame to frame (contents undefined).

        A new 1080p temporary costs more in page faults than most arithmetic on it. Private to the
        callback while it runs (its slot runs nothing else); never publish, cache or return it past
        the callback. Outside a callback the buffers are the calling thread's.
        """
        me = threading.get_ident()
        store = self._scratch.setdefault(self._slot_of.get(me, ("thread", me)), {})
        key = (name, tuple(shape), dtype or self.dtype)
        buf = store.get(key)
        if buf is None:
            buf = store[key] = torch.empty(key[1], dtype=key[2], device=self.device)
        return buf

    def workspace(self, name: str) -> dict:
        """A dict of the calling callback's slot, kept from frame to frame, for an op that keeps its
        own work buffers in it (``merge_window``'s band planes); the same rules as :meth:`scratch`."""
        me = threading.get_ident()
        store = self._scratch.setdefault(self._slot_of.get(me, ("thread", me)), {})
        return store.setdefault(("workspace", name), {})

    def output(self, shape: Sequence[int]) -> torch.Tensor:
        """A tensor for a frame the callback will emit and publish: from the host pool on CPU."""
        if self.device.type == "cpu":
            return host_pool.tensor(shape, self.dtype)
        return torch.empty(tuple(shape), dtype=self.dtype, device=self.device)

    def fetch(self, frame: vs.VideoFrame, key: tuple[int, int] | None = None, own: bool = False) -> torch.Tensor:
        """Tensor ``(C, H, W)`` for ``frame``: cached, handed over, or uploaded once.

        ``key`` identifies the source frame (input slot, source index) for the per-node cache, so a
        frame shared by several windows is uploaded (or handed over) once; the tensor is shared
        with other windows: read it only. With ``own`` (and no ``key``) the caller may modify the
        tensor in place: a fresh upload is returned as it is, a handed-over tensor is copied.
        """
        if key is None:
            with stage_times.phase(f"{self.name}.fetch"):
                return self._take(frame, copy=own)
        with self._fetch_locks[hash(key) % len(self._fetch_locks)]:
            with self._cache_lock:
                t = self._uploads.get(key)
                if t is not None:
                    self._uploads.move_to_end(key)
                    counters.add("cache_hits")
                    return t
            with stage_times.phase(f"{self.name}.fetch"):
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
        """A new CPU frame and its planes as writable tensors (see :func:`~.transfer.new_frame`);
        not published to the handoff cache."""
        return new_frame(fmt, width, height)

    def emit(self, t: torch.Tensor, fmt: vs.VideoFormat, props: dict | None = None,
             publish: bool = True) -> vs.VideoFrame:
        """Write ``t`` into a new frame and make it available to downstream vs_hdrvid nodes.

        ``t`` must not be a scratch buffer when published (the handoff cache keeps it).
        """
        with stage_times.phase(f"{self.name}.emit"):
            out = tensor_to_frame(t, fmt, props)
            if publish:
                handoff.publish(out, t)
        return out

    def timed(self, part: str):
        """A context timing a part of this node's callbacks as ``<node>.<part>`` (:mod:`.timing`)."""
        return stage_times.phase(f"{self.name}.{part}")

    @contextmanager
    def _slot(self) -> Iterator[None]:
        """Hold a free slot for one callback: its stream (CUDA) or its share of torch's threads."""
        i = self._free.get()  # blocks only while every slot is busy
        me = threading.get_ident()
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
            self._free.put(i)

    def map_frames(self, template: vs.VideoNode, clips: Sequence[vs.VideoNode],
                   fn: Callable[[int, list[vs.VideoFrame]], vs.VideoFrame]) -> vs.VideoNode:
        """Run ``fn(n, frames)`` for every output frame; frames are ``clips``' frames ``n``.

        ``template`` gives the output format, size and length (its frames are never requested).
        With several streams the
        ``FrameEval(ModifyFrame)`` pattern lets frames run concurrently (``ModifyFrame`` alone runs
        one callback at a time), as many as there are slots.
        """
        clips = list(clips)

        @torch.inference_mode()
        def selector(n: int, f) -> vs.VideoFrame:
            frames = list(f) if isinstance(f, (list, tuple)) else [f]
            with self._slot(), stage_times.phase(self.name):
                try:
                    return fn(n, frames)
                except vs.Error:
                    raise
                except Exception as e:  # keep the node name on every error
                    raise vs.Error(f"hdrvid.{self.name}: frame {n}: {type(e).__name__}: {e}") from e

        if self.num_streams == 1:
            out = core.std.ModifyFrame(template, clips, selector)
        else:
            out = core.std.FrameEval(
                template, lambda n: core.std.ModifyFrame(template, clips, selector), clip_src=clips)
        return same_frames(out, *clips, node=self.name)  # what it reads, for vs_hdrvid.segments
