"""Where a node's frame time goes: CPU and wall seconds per node and per named part, for benchmarks.

Off by default (each part then costs one attribute test). ``vs-hdrvid bench`` switches it on for
one instrumented pass of the chain. :meth:`NodeRunner.map_frames` times every callback under the
node's name, :meth:`NodeRunner.fetch` and :meth:`NodeRunner.emit` time the transfers under
``<node>.fetch`` and ``<node>.emit``, and a node marks its own parts with
``with runner.timed("similarity")`` (``<node>.similarity``). A part is counted inside its node's
total. CPU time is the calling thread's (``time.thread_time``): the whole callback's work where
torch runs it on that thread, as it does on CPU with one torch thread per stream slot (the default).
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

__all__ = ["StageTimes", "stage_times"]


class StageTimes:
    """Accumulated ``[cpu_s, wall_s, calls]`` per stage name (thread-safe)."""

    def __init__(self) -> None:
        self.enabled = False
        self._lock = threading.Lock()
        self._data: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])

    def reset(self) -> None:
        with self._lock:
            self._data.clear()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block under ``name`` (nothing when disabled)."""
        if not self.enabled:
            yield
            return
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            yield
        finally:
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            with self._lock:
                item = self._data[name]
                item[0] += cpu
                item[1] += wall
                item[2] += 1

    def snapshot(self) -> dict[str, dict[str, float]]:
        """``{name: {"cpu_s", "wall_s", "calls"}}`` so far."""
        with self._lock:
            return {k: {"cpu_s": v[0], "wall_s": v[1], "calls": int(v[2])} for k, v in self._data.items()}


stage_times = StageTimes()
