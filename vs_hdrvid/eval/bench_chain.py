"""``vs-hdrvid bench-chain``: a whole network chain through VapourSynth, with its transfer counters.

``linearize -> align -> coarse [-> refine] -> tonemap`` (or ``dealthdr`` in place of the Chen et
al. pair) on the synthetic panning clip of ``vs-hdrvid bench``: frames per second of the whole
graph after a warm-up, and the bridge's counters (:data:`vs_hdrvid.bridge.counters`) per output
frame: how often a frame was turned into a tensor (``uploads``: once per source frame and per
classical-flow clip is the least the graph allows), back into a frame (``downloads``: the
delivered frame, and any node that is not a vs_hdrvid network node, such as the DIS flow of
``classical_flow``), and handed from one vs_hdrvid node to the next as a tensor (``handoffs``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import vapoursynth as vs

from .. import bridge, nodes
from .bench import _source
from .bench_nets import _size
from .report import write_figures

__all__ = ["add_cli", "run_cli", "run_chain", "build_chain"]

CHAINS = ("coarse", "refine", "dealthdr")


def build_chain(src: vs.VideoNode, method: str, device: str, num_streams: int | None, compile: bool,
                fp32: bool) -> vs.VideoNode:
    """The graph of ``method`` from an LDR source to tonemapped RGB48."""
    lin = nodes.align(nodes.linearize(src, exposures=[-1.5, 1.5], device=device), device=device)
    net = dict(device=device, num_streams=num_streams, compile=compile, fp32=fp32)
    if method == "dealthdr":
        hdr = nodes.dealthdr(lin, **net)
    else:
        hdr = nodes.coarse(lin, **net)
        if method == "refine":
            hdr = nodes.refine(hdr, lin, **net)
    return nodes.tonemap(hdr, device=device)


def run_chain(width: int, height: int, method: str = "refine", frames: int = 8, device: str = "auto",
              num_streams: int | None = None, compile: bool = False, fp32: bool = False, warm_frames: int = 2,
              log=None) -> dict:
    """Frames per second and transfer counters of one chain.

    As ``vs-hdrvid bench`` times its stages: a first graph pulls ``warm_frames`` frames untimed
    (the networks load, compile and warm their allocators: they are shared with the next graph),
    then every frame of a fresh graph is timed and counted.
    """
    if method not in CHAINS:
        raise ValueError(f"method must be one of {CHAINS}, got {method!r}")
    src = _source(width, height, [-1.5, 1.5], frames)
    start = time.perf_counter()
    for f in build_chain(src, method, device, num_streams, compile, fp32)[:warm_frames].frames(close=True):
        pass
    warm_s = time.perf_counter() - start
    out = build_chain(src, method, device, num_streams, compile, fp32)
    bridge.counters.reset()
    start = time.perf_counter()
    for f in out.frames(close=True):
        pass
    seconds = time.perf_counter() - start
    counts = bridge.counters.snapshot()
    res = {"method": method, "size": f"{width}x{height}", "device": device, "num_streams": num_streams,
           "compile": compile, "fp32": fp32, "frames": frames, "fps": frames / seconds,
           "seconds_per_frame": seconds / frames, "warm_up_seconds": warm_s, "counters": counts,
           "per_frame": {k: v / frames for k, v in counts.items()}}
    if log:
        pf = res["per_frame"]
        log(f"{method:<9} {res['size']:>10} {device:<5} {res['fps']:7.2f} fps  uploads/frame {pf['uploads']:.2f}  "
            f"downloads/frame {pf['downloads']:.2f}  handoffs/frame {pf['handoffs']:.2f}")
    return res


def add_cli(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench-chain", help="fps and transfer counters of linearize -> align -> coarse [-> refine] "
                       "-> tonemap through VapourSynth (a benchmark, not a test)")
    p.add_argument("--sizes", default="1280x720", help="comma-separated WxH")
    p.add_argument("--methods", default="coarse,refine", help=f"comma-separated, from {', '.join(CHAINS)}")
    p.add_argument("--frames", type=int, default=8, help="timed frames per chain")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--streams", type=int, default=None, help="num_streams of the network nodes (CUDA streams)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (warm-up frames absorb it)")
    p.add_argument("--fp32", action="store_true", help="the networks' exact float32 path")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p


def run_cli(args: argparse.Namespace) -> int:
    from ..cli import fail

    try:
        sizes = [_size(s) for s in args.sizes.split(",") if s]
        methods = [m for m in args.methods.split(",") if m]
        if not sizes or not methods or set(methods) - set(CHAINS) or args.frames < 1:
            raise ValueError(f"give sizes, --methods from {', '.join(CHAINS)} and --frames >= 1")
    except (argparse.ArgumentTypeError, ValueError) as e:
        return fail(e, 2)
    say = lambda text: print(text, flush=True)  # noqa: E731
    rows = [run_chain(w, h, m, args.frames, args.device, args.streams, args.compile, args.fp32, log=say)
            for w, h in sizes for m in methods]
    if args.json:
        write_figures({"rows": rows}, args.json)
    return 0
