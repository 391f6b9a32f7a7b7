"""The one HDR10 encode of a distributed run, fed by the segments in order as they arrive."""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..outputs import Claim
    from ..segment_run import Job, SegmentResult

__all__ = ["SegmentEncoder"]


class SegmentEncoder(threading.Thread):
    """Encodes the video segments' raw frames once, in segment order, as they arrive."""

    def __init__(self, job: Job, target: Claim, size: tuple[int, int], fps: tuple[int, int], count: int):
        super().__init__(name="vs-hdrvid-encoder", daemon=True)
        self.job, self.target, self.size, self.fps, self.count = job, target, size, fps, count
        self.frame_size = size[0] * size[1] * 3  # yuv420p10le: 2 bytes x 1.5 samples per pixel
        self.ready: dict[int, SegmentResult] = {}
        self.encoded = 0
        self.report: dict = {}
        self.error: BaseException | None = None
        self._cv = threading.Condition()
        self._aborted = False

    def add(self, result: SegmentResult) -> None:
        with self._cv:
            self.ready[result.index] = result
            self._cv.notify()

    def abort(self) -> None:
        with self._cv:
            self._aborted = True
            self._cv.notify()

    def _next(self, index: int) -> SegmentResult:
        with self._cv:
            while index not in self.ready and not self._aborted:
                self._cv.wait()
            if self._aborted:
                raise _Aborted()
            return self.ready.pop(index)

    def run(self) -> None:
        from ..encode import Hdr10Encoder

        try:
            first = self._next(0)
            encoder = Hdr10Encoder(self.job.output, self.size, self.fps, first.props, atomic=self.target.atomic)
            with encoder:
                result = first
                for index in range(self.count):
                    result = result if index == 0 else self._next(index)
                    with open(result.stream, "rb") as f:
                        for light in result.light:
                            if self._aborted:
                                raise _Aborted()
                            encoder.write(f.read(self.frame_size), light)
                            self.encoded += 1
                    os.unlink(result.stream)
            self.report = encoder.report
        except BaseException as e:  # handed to the driver, which stops the run
            self.error = e


class _Aborted(Exception):
    pass
