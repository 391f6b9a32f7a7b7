"""The driver of a distributed run: segments as Ray tasks, retries, progress, assembling the output."""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

from ..outputs import Claim
from .cluster import check_reachable, connect, first_line
from .encoder import SegmentEncoder

if TYPE_CHECKING:
    from ..segment_run import Job, SegmentResult
    from ..segments import Segment

__all__ = ["write_distributed", "run_segments", "Outcome"]

log = logging.getLogger("vs_hdrvid")
RAISED_ATTEMPTS = 2  # a task that raised: once more, elsewhere
LOST_ATTEMPTS = 3    # a task whose worker or node died: twice more


def write_distributed(src, hdr, *, input: str, output: str, kind: str, options, pattern: list[float],
                      target: Claim, workers: int, address: str | None = None, segment_frames: int | None = None,
                      peak_nits: float = 1000.0, first: int = 0, progress: bool = True,
                      on_progress: Callable[[dict], None] | None = None) -> "Outcome":
    """Write ``hdr`` (built on ``src`` with ``options``) to ``output`` in segments on Ray workers.

    The frames are those :func:`vs_hdrvid.reconstruct.write_output` writes, bit for bit; every
    worker rebuilds the graph from ``input`` with ``options`` and the resolved exposure ``pattern``.

    Args:
        workers: Ray tasks at a time (one CPU each); the output is cut into as many segments,
            or into segments of ``segment_frames``.
        address: the Ray cluster (``HOST:PORT`` of its head, ``ray://...``, ``auto``); None starts a
            local instance (unless this process is connected already).
        on_progress: see :func:`run_segments`.
    """
    from ..reconstruct import delivery_clip
    from ..segment_run import Job, options_for_workers
    from ..segments import Frames, Segment, plan, split

    out = delivery_clip(hdr, kind, peak_nits)
    bounds = split(out.num_frames, workers, segment_frames)
    try:
        segments = plan(out, src, bounds)
        whole = len(plan(out, src, [(0, out.num_frames)])[0].reads)
    except ValueError as e:  # a graph whose requests were not all recorded: run it, without figures
        log.info("%s", e)
        segments, whole = [Segment(i, a, b, Frames()) for i, (a, b) in enumerate(bounds)], None
    lengths = sorted({s.frames for s in segments})
    span = f"{lengths[0]}" if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
    reads = ""
    if whole:
        extra = sum(len(s.reads) for s in segments) - whole
        reads = f"; they read {extra} source frames more than one process ({100 * extra / whole:.1f}%)"
    print(f"vs-hdrvid: {len(segments)} segments of {span} frames, {workers} at a time{reads}", file=sys.stderr)
    opts = options_for_workers(options, pattern)
    opts = replace(opts, crf=_absolute(opts.crf), weights=_absolute(opts.weights))  # the same on every node
    job = Job(os.path.abspath(input), os.path.abspath(output), kind, opts, peak_nits, first)
    paths, absent = _shared_paths(job)
    t0 = time.perf_counter()
    with connect(address) as ray:
        connected = time.perf_counter() - t0
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < min(workers, len(segments)):
            log.warning("the Ray cluster has %d CPUs: %d of the %d workers run at once",
                        cpus, cpus, workers)
        outcome = run_segments(ray, job, segments, target, workers, (out.width, out.height),
                               (out.fps.numerator, out.fps.denominator), progress, on_progress, paths, absent)
    outcome.connect_seconds = connected
    results = outcome.results.values()
    made, first_frames = [r.seconds for r in results], [r.first_frame for r in results]
    log.info("%d frames in %.1f s (%.2f fr/s) after %.1f s connecting to Ray; segments took %.1f-%.1f s "
             "(%.1f-%.1f s to their first frame), %.2f CPU s per frame", out.num_frames, outcome.seconds,
             out.num_frames / max(outcome.seconds, 1e-9), connected, min(made), max(made), min(first_frames),
             max(first_frames), sum(r.cpu_seconds for r in results) / out.num_frames)
    return outcome


def _absolute(path: str | None) -> str | None:
    """An existing path made absolute (workers may start elsewhere); anything else as it is."""
    return os.path.abspath(path) if path and os.path.exists(path) else path


def _shared_paths(job: "Job") -> tuple[list[str], list[str]]:
    """What every worker opens (the input, or an image sequence's first and last frame; a response
    curve, weights), and what it must not find (the frame after a sequence's last)."""
    from ..nodes.io import _PRINTF, sequence_files

    paths, absent = [job.input], []
    if _PRINTF.search(job.input):
        files = [os.fspath(f) for f in sequence_files(job.input)]
        start = next(i for i in range(1000) if job.input % i == files[0])
        paths, absent = [files[0], files[-1]], [job.input % (start + len(files))]
    paths += [p for p in (job.options.crf, job.options.weights) if p and os.path.exists(p)]
    return paths, absent


@dataclass
class Outcome:
    """How a distributed run went: how each attempt at each segment ended, and what was written."""

    paths: list[str] = field(default_factory=list)
    attempts: dict[int, list[str]] = field(default_factory=dict)  # segment -> "done", "failed: ...", "lost: ..."
    report: dict = field(default_factory=dict)  # HDR10: max_cll, max_fall, measured
    nodes: int = 0
    results: dict[int, "SegmentResult"] = field(default_factory=dict)  # the adopted attempt of each segment
    connect_seconds: float = 0.0  # ray.init (or joining the cluster)
    seconds: float = 0.0  # from the first task submitted to the output complete

    @property
    def retried(self) -> int:
        return sum(max(0, len(v) - 1) for v in self.attempts.values())


def run_segments(ray, job: Job, segments: list[Segment], target: Claim, workers: int,
                 size: tuple[int, int], fps: tuple[int, int], progress: bool = True,
                 on_progress: Callable[[dict], None] | None = None, paths: list[str] | None = None,
                 absent: list[str] | None = None) -> Outcome:
    """Run ``segments`` of ``job`` on at most ``workers`` Ray tasks at a time and assemble the output.

    Args:
        size, fps: of the delivery clip (for the HDR10 encode).
        on_progress: called about four times a second with the progress actor's snapshot,
            ``{(segment, attempt): {node, where, pid, done, since, updated}}``.
        paths, absent: what every node must be able to open, and must not find (:func:`check_reachable`).

    Raises:
        UserError: a node cannot reach the input or the output folder.
        vs.Error, ValueError, OSError: what a segment raised on every attempt (the input or the
            output's fault), as one process raises it.
        RuntimeError: a segment's workers were lost on every attempt, or the encode failed.
    """
    outcome = Outcome(attempts={s.index: [] for s in segments})
    with target.staging() as staging:
        outcome.nodes = check_reachable(ray, paths or [job.input], absent or [], staging)
        driver = _Driver(ray, job, segments, target, staging, workers, size, fps, outcome)
        t0 = time.perf_counter()
        driver.run(progress, on_progress)
        outcome.seconds = time.perf_counter() - t0
    outcome.paths = list(target.written)
    return outcome


class _Driver:
    """The scheduling loop of :func:`run_segments`."""

    def __init__(self, ray, job, segments, target, staging, workers, size, fps, outcome):
        self.ray, self.job, self.target, self.staging = ray, job, target, staging
        self.segments = {s.index: s for s in segments}
        self.workers, self.outcome = workers, outcome
        self.task = ray.remote(num_cpus=1, max_retries=0)(_segment_task)
        self.progress = ray.remote(num_cpus=0)(_Progress).remote()
        self.encoder = (SegmentEncoder(job, target, size, fps, len(segments)) if job.kind == "video" else None)
        self.running: dict[Any, tuple[int, int]] = {}  # ref -> (segment, attempt)
        self.queue: list[tuple[int, int, str | None]] = [(s.index, 0, None) for s in segments]  # + node to avoid
        self.done: dict[int, int] = {}  # segment -> frames made (adopted)
        self.snapshot: dict = {}

    def run(self, progress: bool, on_progress) -> None:
        from tqdm import tqdm

        total = sum(s.frames for s in self.segments.values())
        bar = tqdm(total=total, desc=f"{len(self.segments)} segments", unit="fr", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        if self.encoder:
            self.encoder.start()
        try:
            while self.queue or self.running:
                self._submit()
                ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=0.25)
                self.snapshot = self.ray.get(self.progress.snapshot.remote())
                if on_progress:
                    on_progress(self.snapshot)
                for ref in ready:
                    self._finished(ref)
                self._check_encoder()
                self._show(bar)
            if self.encoder:
                while self.encoder.is_alive():
                    self.encoder.join(0.25)
                    self._show(bar)
                self._check_encoder()
                self.outcome.report = self.encoder.report
            self._show(bar)
        finally:
            bar.close()
            self._stop()

    def _submit(self) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        while self.queue and len(self.running) < self.workers:
            index, attempt, avoid = self.queue.pop(0)
            seg = self.segments[index]
            folder = self.staging / f"seg{index:05d}.{attempt}"
            folder.mkdir()
            task = self.task
            other = self._other_node(avoid)
            if other is not None:
                task = task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(other, soft=True))
            ref = task.remote(self.job, index, attempt, seg.start, seg.stop, os.fspath(folder), self.progress)
            self.running[ref] = (index, attempt)

    def _other_node(self, avoid: str | None) -> str | None:
        if avoid is None:
            return None
        alive = [n["NodeID"] for n in self.ray.nodes() if n.get("Alive") and n["NodeID"] != avoid]
        return alive[0] if alive else None

    def _finished(self, ref) -> None:
        from ray import exceptions as rex

        index, attempt = self.running.pop(ref)
        node = self.snapshot.get((index, attempt), {}).get("node")
        try:
            result: SegmentResult = self.ray.get(ref)
        except rex.RayTaskError as e:  # the segment raised
            self._retry(index, attempt, node, e.cause if e.cause is not None else e, RAISED_ATTEMPTS, raised=True)
            return
        except rex.RayError as e:  # its worker or node was lost
            self._retry(index, attempt, node, e, LOST_ATTEMPTS, raised=False)
            return
        if index in self.done:  # never adopt a segment twice
            return
        self.outcome.attempts[index].append("done")
        self.outcome.results[index] = result
        if self.encoder:
            self.encoder.add(result)
        else:
            for staged, final in result.files:
                self.target.adopt(staged, final)
        self.done[index] = result.stop - result.start

    def _retry(self, index: int, attempt: int, node: str | None, error: BaseException, limit: int,
               raised: bool) -> None:
        self.outcome.attempts[index].append(f"{'failed' if raised else 'lost'}: {first_line(error)}")
        seg = self.segments[index]
        if attempt + 1 < limit:
            where = self.snapshot.get((index, attempt), {})
            worker = f" (pid {where['pid']} on {where['where']})" if where else ""
            say = log.info if raised else log.warning  # an error about the input is likely to come again
            say("segment %d (frames %d-%d) %s on its worker%s, retrying elsewhere: %s", index, seg.start,
                seg.stop - 1, "failed" if raised else "was lost", worker, first_line(error))
            self.queue.insert(0, (index, attempt + 1, node))
            return
        import vapoursynth as vs

        if raised and isinstance(error, (vs.Error, ValueError, OSError)):
            raise error  # what the input or the output did, as one process reports it
        what = f"segment {index} (frames {seg.start}-{seg.stop - 1})"
        if raised:
            raise RuntimeError(f"{what} failed on {attempt + 1} workers: {type(error).__name__}: {first_line(error)}")
        raise RuntimeError(f"{what} was lost with its worker {attempt + 1} times: {first_line(error)}")

    def _check_encoder(self) -> None:
        if self.encoder is not None and self.encoder.error is not None:
            raise self.encoder.error

    def _show(self, bar) -> None:
        """Frames made of the total, and the slowest running worker."""
        running = [self.snapshot[key] for key in self.running.values() if key in self.snapshot]
        made = sum(self.done.values()) + sum(a["done"] for a in running)
        bar.update(max(0, made - bar.n))  # a lost attempt's frames are not taken back from the bar
        now = time.time()
        rates = [(a["done"] / max(1e-6, now - a["since"]), a) for a in running
                 if a["done"] or now - a["since"] > 5]  # not those still building their graph
        post = {}
        if rates:
            rate, slow = min(rates, key=lambda r: r[0])
            post["slowest"] = f"{slow['where']}:{slow['pid']} {rate:.2f} fr/s"
        if self.outcome.retried:
            post["retried"] = self.outcome.retried
        if self.encoder:
            post["encoded"] = self.encoder.encoded
        bar.set_postfix(post, refresh=False)

    def _stop(self) -> None:
        for ref in list(self.running):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished or its worker gone
                pass
        self.running.clear()
        if self.encoder is not None and self.encoder.is_alive():
            self.encoder.abort()
            self.encoder.join()
        try:
            self.ray.kill(self.progress)
        except Exception:
            pass




# ------------------------------------------------------------------------------ progress actor
class _Progress:
    """Where every attempt is: workers report, the driver reads (a Ray actor)."""

    def __init__(self):
        self.attempts: dict[tuple[int, int], dict] = {}

    def started(self, index: int, attempt: int, node: str, where: str, pid: int) -> None:
        self.attempts[index, attempt] = dict(node=node, where=where, pid=pid, done=0, since=time.time(),
                                             updated=time.time())

    def update(self, index: int, attempt: int, done: int) -> None:
        a = self.attempts.get((index, attempt))
        if a is not None:
            a.update(done=done, updated=time.time())

    def snapshot(self) -> dict[tuple[int, int], dict]:
        return self.attempts


def _segment_task(job: Job, index: int, attempt: int, start: int, stop: int, folder: str, progress) -> SegmentResult:
    """A segment as a Ray task: report where it runs and how far it is, then render it."""
    import cv2
    import ray
    import vapoursynth as vs

    from ..malloc import tune_malloc
    from ..segment_run import render_segment

    tune_malloc()
    cpus = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    vs.core.num_threads = cpus  # Ray sets torch's (OMP_NUM_THREADS); the frames do not depend on either
    cv2.setNumThreads(cpus)
    progress.started.remote(index, attempt, ray.get_runtime_context().get_node_id(),
                            ray.util.get_node_ip_address(), os.getpid())
    last = [0.0]

    def on_frame(done: int) -> None:
        now = time.monotonic()
        if now - last[0] > 0.25 or done == stop - start:
            last[0] = now
            progress.update.remote(index, attempt, done)

    return render_segment(job, index, start, stop, folder, on_frame)
