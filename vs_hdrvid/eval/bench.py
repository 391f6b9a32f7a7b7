"""``vs-hdrvid bench``: throughput of the weight-free chain and the bridge, and where the time goes.

Per size (1920x1080 and 1280x720 by default) and exposure pattern, stages are timed cumulatively
(source, +linearize, +align, +merge, +tonemap), each by pulling the same frames through a fresh
graph, and the per-node cost is the difference between consecutive stages. One more pass of the
whole chain is instrumented (:mod:`vs_hdrvid.bridge.timing`): the CPU time of each node's frame
callbacks and of their parts (transfers, the alignment's luminance, pyramids and similarity
estimate, the merge's warps and weights, the curves), and the rest of the process's CPU time
(VapourSynth's own filters: the source, format conversions, frame allocation). ``--compare REV``
also times the chain of git revision ``REV`` against this tree, alternately, in fresh processes
(:mod:`.bench_compare`). Figures are for the steady state of a long clip: the whole chain runs
once untimed per pattern, and each timed graph follows a few untimed frames of its own chain
(frame pools, caches and the allocator warm). Run it on an otherwise idle machine; figures depend
on ``core.num_threads`` and on the allocator tuning the CLI applies (:func:`vs_hdrvid.tune_malloc`),
which the results record, with what the tuning saves (:func:`allocator_probe`).
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import vapoursynth as vs

from .. import bridge, nodes
from ..devices import resolve_device
from ..malloc import malloc_tuned
from ._chain_worker import source
from .bench_nets import sizes_of
from .report import write_figures

__all__ = ["add_cli", "run_cli", "run_bench", "bridge_cost", "allocator_probe", "stage_breakdown"]

core = vs.core


_source = source  # the synthetic panning clip (one definition, shared with the --compare worker)


def _fps(make: Callable[[], vs.VideoNode], warm_frames: int = 6) -> float:
    """Frames/s pulling every frame of a fresh graph, after a warm-up on another one.

    The warm-up pulls ``warm_frames`` frames of its own graph (allocations, frame pools,
    torch.compile). Nothing is cached between the two graphs, and the first frame counts: a node
    with a temporal window (tonemap's smoothed key) computes its neighbours while serving it.
    """
    warm = make()
    for _ in warm[:min(warm_frames, warm.num_frames)].frames(close=True):
        pass
    del warm
    clip = make()
    t = time.perf_counter()
    for _ in clip.frames(close=True):
        pass
    return clip.num_frames / (time.perf_counter() - t)


def bridge_cost(width: int, height: int, device: torch.device, repeats: int = 15) -> dict[str, float]:
    """Milliseconds to turn one RGBS frame into a tensor and one tensor back into a frame.

    Medians of ``repeats`` calls after two warm-up calls: the steady state of a running graph,
    where upload buffers come back from the host pool, without the odd page-faulting first
    allocation or a preempted call.
    """
    clip = core.std.BlankClip(format=vs.RGBS, width=width, height=height, length=1, color=[0.5] * 3)
    frame = clip.get_frame(0)
    fmt = clip.format
    to_tensor, to_frame = [], []
    for i in range(repeats + 2):
        start = time.perf_counter()
        t = bridge.frame_to_tensor(frame, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the upload is asynchronous
        mid = time.perf_counter()
        bridge.tensor_to_frame(t, fmt)
        end = time.perf_counter()
        del t
        if i >= 2:
            to_tensor.append((mid - start) * 1e3)
            to_frame.append((end - mid) * 1e3)
    frame_to, tensor_to = float(np.median(to_tensor)), float(np.median(to_frame))
    return {"frame_to_tensor_ms": frame_to, "tensor_to_frame_ms": tensor_to, "round_trip_ms": frame_to + tensor_to}


# page faults while filling 200 MB of 64 KB blocks (heap memory under any mmap threshold) the second
# time, freed in between: glibc's default trims the freed top of the heap back to the kernel, so the
# blocks are faulted in again; tune_malloc's thresholds keep it
_ALLOCATOR_PROBE = """
import resource, sys
import numpy as np
from vs_hdrvid.malloc import tune_malloc
if sys.argv[1] == "tuned":
    tune_malloc()
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.ones(16384, np.float32) for _ in range(3200)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[1])
"""


def allocator_probe() -> dict[str, int] | None:
    """Page faults of a second 200 MB fill in a fresh process, with glibc's default thresholds and
    with :func:`~vs_hdrvid.tune_malloc`'s (a few hundred at most when freed memory is kept for
    reuse, tens of thousands when it is returned to the kernel); None off glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    out = {}
    for mode in ("default", "tuned"):
        proc = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE, mode], capture_output=True, text=True,
                              check=True, env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")})
        out[mode] = int(proc.stdout.strip())
    return out


NODES = ("linearize", "align", "merge", "tonemap")


def stage_breakdown(clip: vs.VideoNode) -> dict:
    """Where the CPU time of pulling every frame of ``clip`` goes, per output frame, in milliseconds.

    One pass with :data:`vs_hdrvid.bridge.stage_times` on: per node the CPU time of its frame
    callbacks (the calling thread's) and of their named parts, and ``vapoursynth``: the rest of the
    process's CPU time (user and system, all threads), which is VapourSynth's own filters (the
    source, format conversions), frame allocation and scheduling, and the Python around them.
    Timing costs a few microseconds per part, so the pass is slightly slower than the fps passes.
    """
    times = bridge.stage_times
    times.reset()
    times.enabled = True
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    try:
        for _ in clip.frames(close=True):
            pass
    finally:
        times.enabled = False
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    n = clip.num_frames
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    snap = times.snapshot()
    out: dict = {"cpu_ms": cpu / n * 1e3, "wall_ms": wall / n * 1e3,
                 "system_ms": (after.ru_stime - before.ru_stime) / n * 1e3,
                 "page_faults": (after.ru_minflt - before.ru_minflt) / n, "nodes": {}}
    for node in NODES:
        if node not in snap:
            continue
        parts = {k.split(".", 1)[1]: v["cpu_s"] / n * 1e3 for k, v in snap.items() if k.startswith(node + ".")}
        total = snap[node]["cpu_s"] / n * 1e3
        out["nodes"][node] = {"cpu_ms": total, "wall_ms": snap[node]["wall_s"] / n * 1e3, "parts": parts,
                              "other_ms": total - sum(parts.values())}
    out["vapoursynth_ms"] = out["cpu_ms"] - sum(v["cpu_ms"] for v in out["nodes"].values())
    return out


def run_bench(width: int = 1920, height: int = 1080, frames: int = 12, device: str = "cpu",
              compile: bool = False) -> dict:
    """Frames/s of each node of the weight-free chain for 2- and 3-exposure footage, and where its
    CPU time goes (:func:`stage_breakdown`)."""
    dev = resolve_device(device)
    load_before = os.getloadavg()[0]
    result: dict = {"size": f"{width}x{height}", "frames": frames, "device": str(dev), "compile": compile,
                    "machine": f"{platform.processor() or platform.machine()}, {core.num_threads} VS threads, "
                               f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
                    "malloc_tuned": malloc_tuned(), "allocator_faults": allocator_probe(),
                    "bridge": bridge_cost(width, height, dev), "patterns": {}}
    for evs in ([-1.5, 1.5], [-2.0, 0.0, 2.0]):
        def chain(upto: str) -> vs.VideoNode:
            """A fresh graph (nothing cached) from the source up to stage ``upto``."""
            clip = _source(width, height, evs, frames)
            steps = [("linearize", lambda c: nodes.linearize(c, exposures=evs, device=device)),
                     ("align", lambda c: nodes.align(c, device=device)),
                     ("merge", lambda c: nodes.merge(c, device=device, compile=compile)),
                     ("tonemap_pq", lambda c: nodes.tonemap(c, "pq", device=device))]
            for name, step in steps:
                if upto == "source":
                    break
                clip = step(clip)
                if name == upto:
                    break
            return clip

        names = ["source", "linearize", "align", "merge", "tonemap_pq"]
        # a long clip's steady state: the pools and caches that a run fills once (the handoff cache
        # holds 64 frames, the chain publishes 2 per frame) are filled before anything is timed
        for _ in range(3):
            for _ in chain("tonemap_pq").frames(close=True):
                pass
        cumulative = {name: _fps(lambda: chain(name)) for name in names}
        # a node's own rate from the difference of the chain's times; None where the difference is
        # within the measurement's noise (the longer chain timed no slower)
        added = {names[i]: 1.0 / cumulative[names[i]] - 1.0 / cumulative[names[i - 1]] for i in range(1, len(names))}
        per_node = {k: (1.0 / v if v > 0 else None) for k, v in added.items()}
        bridge.counters.reset()
        bridge.handoff.clear()
        for _ in chain("tonemap_pq").frames(close=True):
            pass
        c = bridge.counters.snapshot()
        result["patterns"][f"{len(evs)}-exposure"] = {
            "chain_fps": cumulative["tonemap_pq"], "cumulative_fps": cumulative, "node_fps": per_node,
            "per_output_frame": {k: v / frames for k, v in c.items()},
            "breakdown": stage_breakdown(chain("tonemap_pq"))}
    result["load_average"] = [load_before, os.getloadavg()[0]]  # 1-minute, before and after: was it idle?
    return result


def add_cli(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="frames/s of the nodes and the bridge (a benchmark, not a test)")
    p.add_argument("--size", default="1920x1080,1280x720", help="WxH, or several comma-separated")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--compile", action="store_true", help="merge through torch.compile, CUDA only (warm-up excluded)")
    p.add_argument("--compare", metavar="REV", help="also time the chain of git revision REV of this checkout "
                   "against this tree, alternately in fresh processes, and report the ratio")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs of each tree for --compare")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p


def _breakdown_text(b: dict) -> str:
    """One line: the CPU time per frame and its parts."""
    def node(name: str, v: dict) -> str:
        parts = ", ".join(f"{k} {ms:.1f}" for k, ms in sorted(v["parts"].items(), key=lambda kv: -kv[1]))
        return f"{name} {v['cpu_ms']:.1f}" + (f" ({parts}, rest {v['other_ms']:.1f})" if parts else "")
    nodes_txt = " + ".join(node(k, v) for k, v in b["nodes"].items())
    return (f"{b['cpu_ms']:.0f} ms CPU per frame = {nodes_txt} + VapourSynth and the rest {b['vapoursynth_ms']:.1f}"
            f" (system {b['system_ms']:.1f}, {b['page_faults']:.0f} page faults); {b['cpu_ms'] / b['wall_ms']:.2f} cores "
            f"in use")


def run_cli(args: argparse.Namespace) -> int:
    sizes = sizes_of(args.size)
    runs = [run_bench(w, h, args.frames, args.device, args.compile) for w, h in sizes]
    res = dict(runs[0], sizes={r["size"]: r for r in runs})  # the first size's figures also at the top level
    if getattr(args, "compare", None):
        from .bench_compare import compare_chains

        try:
            res["compare"] = compare_chains(args.compare, sizes, [[-1.5, 1.5], [-2.0, 0.0, 2.0]], args.frames,
                                            getattr(args, "repeats", 2))
        except (ValueError, RuntimeError) as e:
            print(f"vs-hdrvid bench: --compare: {e}", file=sys.stderr)
            return 2
    for r in runs:
        b = r["bridge"]
        malloc = "tuned" if r["malloc_tuned"] else "default"
        print(f"vs-hdrvid bench at {r['size']} on {r['device']}{' (compiled merge)' if r['compile'] else ''}"
              f" ({r['machine']}; malloc {malloc}; load average {r['load_average'][0]:.2f} before, "
              f"{r['load_average'][1]:.2f} after)")
        print(f"  bridge: frame->tensor {b['frame_to_tensor_ms']:.1f} ms, tensor->frame "
              f"{b['tensor_to_frame_ms']:.1f} ms per frame")
        if r["allocator_faults"] is not None:
            a = r["allocator_faults"]
            print(f"  allocator: a second 200 MB fill faults {a['tuned']} pages with tune_malloc, "
                  f"{a['default']} with glibc's default")
        for pat, p in r["patterns"].items():
            nodes_txt = ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a (within noise)"
                                  for k, v in p["node_fps"].items())
            per = p["per_output_frame"]
            print(f"  {pat}: chain {p['chain_fps']:.2f} fps; per node fps: {nodes_txt}")
            print(f"    per output frame: uploads {per['uploads']:.2f}, downloads {per['downloads']:.2f}, "
                  f"handoffs {per['handoffs']:.2f}, cache hits {per['cache_hits']:.2f}")
            print(f"    where the time goes: {_breakdown_text(p['breakdown'])}")
    if "compare" in res:
        c = res["compare"]
        print(f"  --compare {c['revision']} (before) against this tree (after), {c['repeats']} alternating runs "
              f"of {c['frames']} frames each, medians:")
        for size, pats in c["sizes"].items():
            for pat, v in pats.items():
                fb, fa = (statistics.median(v[k]["fps"]) for k in ("before", "after"))
                cb, ca = (statistics.median(v[k]["cpu_ms_per_frame"]) for k in ("before", "after"))
                ub, ua = (statistics.median(v[k]["cores_used"]) for k in ("before", "after"))
                print(f"    {size} {pat}: {fb:.2f} -> {fa:.2f} fps (x{v['fps_ratio']:.2f}); CPU {cb:.0f} -> "
                      f"{ca:.0f} ms per frame (x{v['cpu_ratio']:.2f}); cores in use {ub:.2f} and {ua:.2f}")
    if args.json:
        write_figures(res, args.json)
    return 0
