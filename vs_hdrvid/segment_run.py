"""One segment of a reconstruction, as a worker makes it: the whole run's graph, only the segment's frames.

A worker builds the graph a one-process run builds (the same source, the same options, the
exposure pattern the driver resolved once) and asks it for the segment's output frames only.
VapourSynth then reads what those frames need and nothing more (:func:`vs_hdrvid.segments.plan`
says which source frames that is), so each frame is the one-process run's frame, bit for bit:
at a segment boundary the windows see the real neighbours, at the clip's ends the same
substitutes, and ``tonemap``'s key the same ``±smooth`` frames.

Images go into the attempt's folder, for the driver to rename into
place. For HDR10 video the PQ YUV420P10 frames go raw into one file, ``frames.yuv`` (the bytes a
one-process run pipes into ffmpeg), with each frame's light, for the driver to encode once.
Nothing here needs Ray: :mod:`vs_hdrvid.distributed` runs it as a Ray task, tests run it in-process.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import vapoursynth as vs

from .encode import frame_bytes, frame_light, hdr10_props, iterate_frames
from .outputs import atomic_path
from .reconstruct import Options, build, delivery_clip, write_image

__all__ = ["Job", "SegmentResult", "job_graph", "render_segment", "options_for_workers", "STREAM"]

STREAM = "frames.yuv"  # a video segment's raw frames in its attempt folder


@dataclass(frozen=True)
class Job:
    """What every segment of one run shares (picklable; paths absolute, the same on every node).

    Attributes:
        input: the source (video file, image-sequence pattern or ``.vpy``).
        output: the output as given (``out/%05d.exr``, ``out.mkv``, ...).
        kind: :func:`~vs_hdrvid.reconstruct.output_kind` of ``output``.
        options: the run's options, with the exposure pattern the driver resolved.
        peak_nits: HDR10 mastering peak.
        first: source frame number of output frame 0 (image files are numbered from it).
    """

    input: str
    output: str
    kind: str
    options: Options
    peak_nits: float = 1000.0
    first: int = 0


@dataclass
class SegmentResult:
    """What one attempt at a segment wrote.

    Attributes:
        files: ``(staged, final)`` path of each image frame.
        stream: video: the raw frames file; ``light``: each frame's ``(max, average)`` nits (None
            where a frame had none); ``props``: the HDR10 props of the segment's first frame.
        seconds: time spent on the segment, graph building included; ``first_frame``: until its
            first frame was written (building the graph and the first frame's whole window);
            ``cpu_seconds``: CPU time of the process meanwhile (all its threads).
    """

    index: int
    start: int
    stop: int
    files: list[tuple[str, str]] = field(default_factory=list)
    stream: str | None = None
    light: list[tuple[float, float] | None] = field(default_factory=list)
    props: dict | None = None
    seconds: float = 0.0
    first_frame: float = 0.0
    cpu_seconds: float = 0.0


def job_graph(job: Job) -> tuple[vs.VideoNode, vs.VideoNode]:
    """``(source, delivery clip)`` of a job, as the one-process run builds them."""
    from .nodes import source

    src = source(job.input)
    return src, delivery_clip(build(src, job.options), job.kind, job.peak_nits)


def render_segment(job: Job, index: int, start: int, stop: int, folder: str | os.PathLike,
                   on_frame: Callable[[int], None] | None = None) -> SegmentResult:
    """Make output frames ``[start, stop)`` of ``job`` into ``folder`` (which must exist).

    ``on_frame(k)`` is called after the segment's ``k``-th frame is written. The folder is the
    attempt's own: nothing outside it is written, and it is not created here (a folder the driver
    has removed makes a late attempt fail instead of writing).
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    folder = Path(folder)
    _, out = job_graph(job)
    result = SegmentResult(index, start, stop)
    frames = out[start:stop]
    user = on_frame

    def on_frame(k: int) -> None:
        if k == 1:
            result.first_frame = time.perf_counter() - t0
        if user:
            user(k)

    if job.kind == "video":
        result.stream = os.fspath(folder / STREAM)
        with open(result.stream, "xb") as stream:
            for k, f in iterate_frames(frames, progress=False):
                if result.props is None:
                    result.props = hdr10_props(f.props)
                stream.write(frame_bytes(f))
                result.light.append(frame_light(f.props))
                on_frame(k + 1)
    else:
        for k, f in iterate_frames(frames, progress=False):
            n = job.first + start + k
            final = job.output % n
            staged = os.fspath(folder / f"{n:08d}{Path(final).suffix}")
            write_image(job.kind, staged, f, atomic_path)
            result.files.append((staged, final))
            on_frame(k + 1)
    result.seconds, result.cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    return result


def options_for_workers(opts: Options, pattern: list[float]) -> Options:
    """``opts`` with the exposure pattern the driver resolved, so no worker detects it again (or
    decodes frames outside its segment to do so)."""
    return replace(opts, exposures=[float(e) for e in pattern])
