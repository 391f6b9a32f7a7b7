"""Which frames a clip asks of the clips it is built from, recorded where the graph is built.

VapourSynth requests frames lazily and keeps no record a script can read, so the builders that
give a clip its temporal structure write it down here as they build it: :func:`~.windows.shift_clip`
(an exposure-aware shift), :func:`~.windows.clamped_shift`, :meth:`~.runner.NodeRunner.map_frames`
(frame n of every input), and, through :func:`same_frames` and :func:`trimmed`, the plain filters a
node puts between them. :mod:`vs_hdrvid.segments` follows these records from an output back to its
source to say which source frames a run of output frames reads.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import vapoursynth as vs

__all__ = ["Read", "record", "reads_of", "node_of", "same_frames", "trimmed"]

KINDS = ("same", "offset", "clamped", "exposure")


@dataclass(frozen=True, eq=False)
class Read:
    """Frame ``n`` of a clip reads frame ``m`` of ``parent``, by ``kind``:

    - ``same``: ``m = n``;
    - ``offset``: ``m = n + offset`` (a trim; always inside the parent);
    - ``clamped``: ``m = clamp(n + offset, 0, length - 1)`` (:func:`~.windows.clamped_shift`);
    - ``exposure``: ``m = window_index(n, offset, length, period)``, the nearest frame with the same
      exposure index past either end (:func:`~.windows.shift_clip`).

    ``length`` is the parent's number of frames.
    """

    parent: vs.VideoNode
    kind: str = "same"
    offset: int = 0
    period: int = 1
    length: int = 0


_reads: weakref.WeakKeyDictionary[vs.VideoNode, tuple[Read, ...]] = weakref.WeakKeyDictionary()
_nodes: weakref.WeakKeyDictionary[vs.VideoNode, str] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def record(clip: vs.VideoNode, parent: vs.VideoNode, kind: str = "same", offset: int = 0,
           period: int = 1) -> vs.VideoNode:
    """Note that ``clip`` reads ``parent`` by ``kind`` (see :class:`Read`); returns ``clip``.

    A clip recorded as reading itself (a shift by 0 returns its input) records nothing.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if clip is not parent:
        with _lock:
            _reads[clip] = _reads.get(clip, ()) + (Read(parent, kind, int(offset), int(period), parent.num_frames),)
    return clip


def same_frames(clip: vs.VideoNode, *parents: vs.VideoNode, node: str | None = None) -> vs.VideoNode:
    """Note that frame n of ``clip`` reads frame n of each of ``parents`` (a resize, props, a
    per-frame choice between conversions); ``node`` names the vs_hdrvid node whose output
    ``clip`` is. Returns ``clip``."""
    for parent in parents:
        record(clip, parent)
    if node is not None:
        with _lock:
            _nodes[clip] = node
    return clip


def trimmed(clip: vs.VideoNode, parent: vs.VideoNode, start: int) -> vs.VideoNode:
    """Note that ``clip`` is ``parent[start:...]``; returns ``clip``."""
    return record(clip, parent, "offset", start)


def reads_of(clip: vs.VideoNode) -> tuple[Read, ...]:
    """What was recorded for ``clip``: empty for a source, or for a clip built elsewhere."""
    with _lock:
        return _reads.get(clip, ())


def node_of(clip: vs.VideoNode) -> str | None:
    """The vs_hdrvid node whose output ``clip`` is, if one recorded it."""
    with _lock:
        return _nodes.get(clip)
