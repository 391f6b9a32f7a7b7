"""Segment-parallel reconstruction on Ray: ``vs-hdrvid reconstruct --workers N [--ray ADDRESS]``.

The driver (this process) has built the run's graph and holds the output's claim. It cuts the
output frames into segments (:func:`vs_hdrvid.segments.split`), runs each as a Ray task
(:func:`vs_hdrvid.segment_run.render_segment`, one CPU each, at most ``workers`` at a time), and
assembles the output:

- images: each task writes its frames into its own attempt folder under the output's
  :meth:`~vs_hdrvid.outputs.Claim.staging`; when it succeeds the driver renames them into place.
  A segment is adopted once, from one attempt: a retried or late attempt never overwrites it.
- HDR10 video: each task writes its PQ frames raw; the driver encodes them once, in order, as
  the segments arrive (:class:`~.encoder.SegmentEncoder`), so the stream is the one a one-process run encodes and
  MaxCLL/MaxFALL are measured over the whole clip.

A task that raises is retried once on another worker (another node when the cluster has one), a
task whose worker or node is lost up to twice; a run that cannot finish cancels the rest, and the
claim removes every file it made. Ray is an optional dependency, imported only here.

Modules: :mod:`.cluster` (connecting, and what every node must see), :mod:`.driver` (the
scheduling loop, the progress actor, the task), :mod:`.encoder` (the one HDR10 encode). Nothing
heavy is imported at the top of them: the progress actor's process imports them too.
"""
from .cluster import RAY_MISSING, check_address, check_reachable, connect, import_ray, preflight
from .driver import Outcome, run_segments, write_distributed

__all__ = ["RAY_MISSING", "preflight", "import_ray", "check_address", "connect", "check_reachable",
           "write_distributed", "run_segments", "Outcome"]
