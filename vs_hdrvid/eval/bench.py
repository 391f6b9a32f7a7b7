"""``vs-hdrvid bench``: throughput of the weight-free chain and the bridge at a given size.

Stages are timed cumulatively (source, +linearize, +align, +merge, +tonemap), each by pulling the
same frames through a fresh graph, and the per-node cost is the difference between consecutive
stages. Figures are for the steady state of a long clip: the whole chain runs once untimed per
pattern, and each timed graph follows a few untimed frames of its own chain (frame pools, caches
and the allocator warm). Run it on an otherwise idle machine; figures depend on
``core.num_threads`` and on the allocator tuning the CLI applies (:func:`vs_hdrvid.tune_malloc`),
which the results record, with what the tuning saves (:func:`allocator_probe`).
"""
from __future__ import annotations

import argparse
import os
import platform
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
from .report import write_figures

__all__ = ["add_cli", "run_cli", "run_bench", "bridge_cost", "allocator_probe"]

core = vs.core


def _source(width: int, height: int, evs: list[float], frames: int, seed: int = 0) -> vs.VideoNode:
    """An RGB48 alternating-exposure clip of a textured scene panning 3 px per frame."""
    rng = np.random.default_rng(seed)
    small = rng.standard_normal((height // 16 + 4, width // 16 + 4)).astype(np.float32)
    import cv2

    field = cv2.resize(small, (width + 3 * frames + 64, height + 64), interpolation=cv2.INTER_CUBIC)
    hdr = np.exp2(2.5 * field)[..., None] * np.array([1.0, 0.85, 0.7], np.float32)
    imgs = []
    for n in range(len(evs) * 2):
        h = hdr[32:32 + height, 32 + 3 * n:32 + 3 * n + width]
        ldr = np.clip(h * 2.0 ** evs[n % len(evs)], 0, 1) ** (1 / 2.2)
        imgs.append(np.round(ldr * 65535).astype(np.uint16))
    blank = core.std.BlankClip(format=vs.RGB48, width=width, height=height, length=frames)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), imgs[n % len(imgs)][..., p])
        return out

    return core.std.ModifyFrame(blank, blank, fill)


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


def run_bench(width: int = 1920, height: int = 1080, frames: int = 12, device: str = "cpu",
              compile: bool = False) -> dict:
    """Frames/s of each node of the weight-free chain for 2- and 3-exposure footage."""
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
        # holds 64 frames, the chain publishes 3 per frame) are filled before anything is timed
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
            "per_output_frame": {k: v / frames for k, v in c.items()}}
    result["load_average"] = [load_before, os.getloadavg()[0]]  # 1-minute, before and after: was it idle?
    return result


def add_cli(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="frames/s of the nodes and the bridge (a benchmark, not a test)")
    p.add_argument("--size", default="1920x1080", help="WxH")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--compile", action="store_true", help="merge through torch.compile, CUDA only (warm-up excluded)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p


def run_cli(args: argparse.Namespace) -> int:
    w, h = (int(v) for v in args.size.lower().split("x"))
    res = run_bench(w, h, args.frames, args.device, args.compile)
    b = res["bridge"]
    malloc = "tuned" if res["malloc_tuned"] else "default"
    print(f"vs-hdrvid bench at {res['size']} on {res['device']}{' (compiled merge)' if res['compile'] else ''}"
          f" ({res['machine']}; malloc {malloc}; load average {res['load_average'][0]:.2f} before, "
          f"{res['load_average'][1]:.2f} after)")
    print(f"  bridge: frame->tensor {b['frame_to_tensor_ms']:.1f} ms, tensor->frame "
          f"{b['tensor_to_frame_ms']:.1f} ms per frame")
    if res["allocator_faults"] is not None:
        a = res["allocator_faults"]
        print(f"  allocator: a second 200 MB fill faults {a['tuned']} pages with tune_malloc, "
              f"{a['default']} with glibc's default")
    for pat, r in res["patterns"].items():
        nodes_txt = ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a (within noise)"
                              for k, v in r["node_fps"].items())
        per = r["per_output_frame"]
        print(f"  {pat}: chain {r['chain_fps']:.2f} fps; per node fps: {nodes_txt}")
        print(f"    per output frame: uploads {per['uploads']:.2f}, downloads {per['downloads']:.2f}, "
              f"handoffs {per['handoffs']:.2f}, cache hits {per['cache_hits']:.2f}")
    if args.json:
        write_figures(res, args.json)
    return 0
