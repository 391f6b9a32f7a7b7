"""Cutting a run into segments, and which frames each one reads: the overlap of segment-parallel runs.

A segment is a range of output frames ``[start, stop)``. To make them, the graph needs more than
those frames from every clip it is built from: the temporal window of the method (the neighbours
of ``merge``, ``coarse`` and the rest, and the props-only neighbours whose transforms they
compose), the ``±smooth`` frames of ``tonemap``'s smoothed key, and, near the clip's ends, the
exposure-aware substitutes of missing neighbours (the nearest frame with the same exposure,
whole pattern periods away). The builders record what each clip reads of its inputs as they
build the graph (:mod:`vs_hdrvid.bridge.requests`); :func:`trace` follows those records from the
output back to the source, so the overlap is the one the nodes actually request, and it holds at
every position of the exposure pattern.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import vapoursynth as vs

from .bridge.requests import Read, node_of, reads_of
from .bridge.windows import window_index

__all__ = ["Frames", "trace", "split", "Segment", "plan", "overlap_by_node"]


class Frames:
    """A set of frame numbers as sorted, disjoint half-open spans ``[a, b)``."""

    __slots__ = ("spans",)

    def __init__(self, spans: Iterable[tuple[int, int]] = ()):
        merged: list[tuple[int, int]] = []
        for a, b in sorted((int(a), int(b)) for a, b in spans if b > a):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self.spans = tuple(merged)

    @classmethod
    def of(cls, frames: Iterable[int]) -> "Frames":
        return cls((m, m + 1) for m in frames)

    def __or__(self, other: "Frames") -> "Frames":
        return Frames(self.spans + other.spans)

    def __len__(self) -> int:
        return sum(b - a for a, b in self.spans)

    def __iter__(self) -> Iterator[int]:
        for a, b in self.spans:
            yield from range(a, b)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frames) and self.spans == other.spans

    def __repr__(self) -> str:
        return f"Frames({', '.join(f'{a}:{b}' for a, b in self.spans) or '-'})"

    @property
    def first(self) -> int:
        return self.spans[0][0]

    @property
    def last(self) -> int:
        return self.spans[-1][1] - 1

    def through(self, read: Read) -> "Frames":
        """The frames of ``read.parent`` that these frames of the reading clip ask for."""
        n, o = read.length, read.offset
        out: list[tuple[int, int]] = []
        for a, b in self.spans:
            if read.kind == "same":
                out.append((a, b))
            elif read.kind == "offset":
                out.append((a + o, b + o))
            elif read.kind == "clamped":
                out.append((min(max(a + o, 0), n - 1), min(max(b - 1 + o, 0), n - 1) + 1))
            else:  # exposure-aware: in-range neighbours as one span, the substitutes past the ends one by one
                lo, hi = max(a, -o), min(b, n - o)
                if lo < hi:
                    out.append((lo + o, hi + o))
                    outside = [*range(a, lo), *range(hi, b)]  # at most |o| frames at each end
                else:
                    outside = list(range(a, b))
                out.extend((k, k + 1) for k in (window_index(m, o, n, read.period) for m in outside))
        return Frames(out)


def trace(clip: vs.VideoNode, frames: Frames) -> dict[vs.VideoNode, Frames]:
    """The frames every clip of the graph behind ``clip`` is asked for when ``frames`` of ``clip``
    are made, from what the builders recorded (:mod:`vs_hdrvid.bridge.requests`).

    Clips with no record are the graph's sources (or clips built outside vs_hdrvid: what they
    read is not known). Keys are the clip objects, ``clip`` included.
    """
    order: list[vs.VideoNode] = []  # consumers before the clips they read
    seen: set[int] = set()
    stack: list[tuple[vs.VideoNode, bool]] = [(clip, False)]
    while stack:  # depth-first post-order, reversed below
        c, done = stack.pop()
        if done:
            order.append(c)
            continue
        if id(c) in seen:
            continue
        seen.add(id(c))
        stack.append((c, True))
        stack.extend((r.parent, False) for r in reads_of(c) if id(r.parent) not in seen)
    order.reverse()
    need: dict[int, Frames] = {id(clip): frames}
    out: dict[vs.VideoNode, Frames] = {}
    for c in order:
        mine = need.get(id(c), Frames())
        out[c] = mine
        for r in reads_of(c):
            need[id(r.parent)] = need.get(id(r.parent), Frames()) | mine.through(r)
    return out


def split(total: int, count: int | None = None, length: int | None = None) -> list[tuple[int, int]]:
    """``[0, total)`` cut into ``count`` segments of near-equal length, or into segments of
    ``length`` frames (the last one shorter); never an empty segment."""
    if total < 1:
        raise ValueError(f"nothing to cut: {total} frames")
    if length is None:
        count = min(max(1, int(count or 1)), total)
        bounds = [round(i * total / count) for i in range(count + 1)]
    else:
        if length < 1:
            raise ValueError(f"a segment needs at least 1 frame, got {length}")
        bounds = list(range(0, total, length)) + [total]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


@dataclass(frozen=True)
class Segment:
    """Output frames ``[start, stop)`` and the source frames ``reads`` they need."""

    index: int
    start: int
    stop: int
    reads: Frames

    @property
    def frames(self) -> int:
        return self.stop - self.start

    @property
    def overlap(self) -> int:
        """Source frames read beyond the segment's own number of frames."""
        return len(self.reads) - self.frames


def plan(out: vs.VideoNode, source: vs.VideoNode, bounds: list[tuple[int, int]]) -> list[Segment]:
    """The segments ``bounds`` of ``out`` with the frames of ``source`` each reads.

    Raises:
        ValueError: part of the graph was built by something that recorded no reads, so the
            frames it asks of ``source`` are not known.
    """
    segments = []
    for i, (a, b) in enumerate(bounds):
        reached = trace(out, Frames([(a, b)]))
        leaves = [c for c, f in reached.items() if not reads_of(c) and len(f) and c is not source]
        if leaves:
            raise ValueError(f"cannot tell which frames segment {i} reads: the graph has a clip "
                             f"({leaves[0].format.name if leaves[0].format else 'variable'}) "
                             "whose frame requests were not recorded")
        segments.append(Segment(i, a, b, reached.get(source, Frames())))
    return segments


def overlap_by_node(out: vs.VideoNode, start: int, stop: int) -> dict[str, int]:
    """Frames each vs_hdrvid node of ``out``'s graph computes beyond ``stop - start`` when the
    output frames ``[start, stop)`` are made, by node name (the largest among nodes of one name,
    e.g. the several ``classical_flow`` of a window)."""
    extra: dict[str, int] = {}
    for c, f in trace(out, Frames([(start, stop)])).items():
        name = node_of(c)
        if name is not None:
            extra[name] = max(extra.get(name, -math.inf), len(f) - (stop - start))
    return {k: int(v) for k, v in extra.items()}
