"""``vs-hdrvid bench-nets``: seconds per frame and peak memory of CoarseNet and RefineNet.

Each (network, size, device) is measured in a fresh Python process, so the peak memory is that
network's alone: on CPU the growth of the peak resident set (``ru_maxrss``) over the process's
peak once the model and inputs exist (tracemalloc does not see torch's allocations), on CUDA
``torch.cuda.max_memory_allocated`` over what was allocated before the forward pass. A compiled
network on CPU has no forward figure (the compilation's own peak comes first): measure its memory
with ``--no-compile``, the arithmetic is the same.

A frame of the full method costs one CoarseNet and one RefineNet forward (the coarse HDRs of
the neighbours are reused), so "coarse+refine" is the sum of the two. Trained weights are used
when present; otherwise the networks are randomly initialised, which does not change the timing
(the same layers run on the same sizes). Also here: :func:`write_random_weights`, a weights
folder of untrained networks for tests and for trying the nodes before training.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from .. import weights as weights_mod
from ..models.inference import Inference, Tiling
from ..models.spynet import SpyNet
from .report import write_figures

__all__ = ["add_cli", "run_cli", "run_bench_nets", "measure", "network_configs", "write_random_weights"]

PATTERNS = {2: [-1.5, 1.5], 3: [-2.0, 0.0, 2.0]}
NARROW = {"flow": {"channels": (16, 8, 8)}, "weight": {"encoder": (8, 16, 16), "decoder": (16, 16, 16)},
          "refine": {"features": 16, "deformable_groups": 4, "front_blocks": 1, "back_blocks": 1}}


def network_configs(period: int, narrow: bool = False, blend: str = "merge") -> dict[str, object]:
    """``{"coarse": CoarseNetConfig, "refine": RefineNetConfig}`` for ``period`` exposures.

    ``narrow`` gives a few-channel version of each (same layers and windows) for fast tests;
    ``blend`` CoarseNet's design (:class:`~vs_hdrvid.models.coarsenet.CoarseNetConfig`).
    """
    from ..models.coarsenet import CoarseNetConfig
    from ..models.refinenet import RefineNetConfig

    coarse, refine = CoarseNetConfig.for_exposures(period, blend), RefineNetConfig.for_exposures(period)
    if narrow:
        d = coarse.to_dict()
        d["flow"].update(NARROW["flow"])
        d["weight"].update(NARROW["weight"])
        coarse = CoarseNetConfig.from_dict(d)
        refine = RefineNetConfig.from_dict(refine.to_dict() | NARROW["refine"])
    return {"coarse": coarse, "refine": refine}


def write_random_weights(folder: str | os.PathLike, periods: tuple[int, ...] = (2, 3), narrow: bool = False,
                         zero_flow: bool = False, seed: int = 0, blend: str = "merge") -> Path:
    """Save randomly initialised coarse/refine networks and their manifest entries into ``folder``.

    Args:
        folder: created if needed; gets ``coarse_2exp.safetensors`` etc. and ``MANIFEST.json``.
        periods: exposure-pattern lengths to write.
        narrow: the few-channel configs of :func:`network_configs`.
        zero_flow: zero the output layer of every flow-pyramid level, so the flow network predicts
            no residual motion (lets tests check the flow plumbing without trained weights).
        seed: torch seed.
        blend: CoarseNet's design; with ``"merge"`` the zero-initialised corrections stay zero, so
            CoarseNet is the weight-free merge of its DIS-aligned window.

    Returns:
        the folder, for ``weights=`` of the nodes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for n in periods:
        for kind, cfg in network_configs(n, narrow, blend).items():
            torch.manual_seed(seed + n)
            spec = weights_mod.REGISTRY[f"{kind}-{n}exp"]
            model = spec.build(cfg.to_dict())
            if zero_flow and kind == "coarse" and isinstance(model.flownet, SpyNet):
                for level in model.flownet.basic:
                    torch.nn.init.zeros_(level[-1].weight)
                    torch.nn.init.zeros_(level[-1].bias)
            weights_mod.write(model, spec.name, folder, recipe={
                "training": "none: random initialisation (tests and benchmarks only)", "seed": seed + n,
                "zero_flow": zero_flow})
    return folder


def _network(kind: str, period: int, device: torch.device, folder: Path) -> tuple[torch.nn.Module, str]:
    """The trained network if ``folder`` holds it, else a randomly initialised one."""
    try:
        model, _ = weights_mod.load(f"{kind}-{period}exp", device, folder)
        source = f"trained ({folder / weights_mod.REGISTRY[f'{kind}-{period}exp'].file})"
    except weights_mod.WeightsError:
        torch.manual_seed(0)
        cfg = network_configs(period)[kind]
        model = weights_mod.REGISTRY[f"{kind}-{period}exp"].build(cfg.to_dict())
        source = "random initialisation"
    return model, source


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(kind: str, period: int, width: int, height: int, device: str = "cpu", fp32: bool = False,
            repeats: int = 3, folder: str | os.PathLike | None = None, compile: bool = False,
            tile: int | None = None, profile: bool = False) -> dict:
    """Seconds per forward and peak memory of one network (run it in a fresh process for memory).

    The network runs as the nodes run it (:class:`~vs_hdrvid.models.inference.Inference`; ``fp32``:
    the exact float32 eager path). A first pass that takes under 5 s is a discarded warm-up;
    slower ones count as a repeat. With ``compile`` the first pass compiles and is reported apart;
    with ``profile`` one more pass runs under ``torch.profiler`` and the operators taking the
    most time are reported with their share (``kernels``).
    """
    dev = torch.device(device)
    model, source = _network(kind, period, dev, Path(folder or weights_mod.WEIGHTS_DIR))
    tiling = Tiling.for_network(kind, tile) if tile else None
    net = Inference(model, kind, dev, fp32=fp32, compile=compile, tiling=tiling)
    dtype = net.precision.dtype
    pattern = PATTERNS[period]
    frames = 2 * period - 1 if kind == "coarse" else model.config.num_frames
    evs = torch.tensor([pattern[(i - frames // 2) % period] for i in range(frames)], device=dev, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    ldrs = torch.rand(1, frames, 3, height, width, generator=gen).to(dev, dtype)
    if kind == "coarse" and model.needs_init_flows:  # the DIS flows come from classical_flow clips
        init = torch.zeros(1, frames - 1, 2, height, width, device=dev, dtype=dtype)
        conf = torch.ones(1, frames - 1, 1, height, width, device=dev, dtype=dtype)
        run = lambda: net(ldrs, evs, init, conf)  # noqa: E731
    elif kind == "coarse":
        run = lambda: net(ldrs, evs)  # noqa: E731
    else:
        hdrs = ldrs.float().pow(2.2).mul(torch.exp2(-evs.float()).view(1, -1, 1, 1, 1)).to(dtype)
        run = lambda: net(hdrs, ldrs, evs)  # noqa: E731
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    compile_s = None
    if compile:
        start = time.perf_counter()
        run()
        sync()
        compile_s = time.perf_counter() - start
    if dev.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = _peak_rss_mib()
    times: list[float] = []
    warm = False
    while len(times) < repeats:
        start = time.perf_counter()
        run()
        sync()
        elapsed = time.perf_counter() - start
        if not warm and elapsed < 5.0:  # a cheap first pass is the warm-up
            warm = True
            continue
        warm = True
        times.append(elapsed)
    kernels = _profile(run, dev) if profile else None
    if dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(dev) - base) / 2 ** 20
        total = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    else:  # after a compilation the process's peak is the compiler's: no forward figure then
        total = _peak_rss_mib()
        peak = float("nan") if compile else total - base
    return {"network": kind, "exposures": period, "size": f"{width}x{height}", "device": str(dev),
            "dtype": net.precision.name, "seconds": min(times), "seconds_all": times,
            "forward_peak_mib": None if peak != peak else round(peak, 1), "process_peak_mib": round(total, 1),
            "weights": source,
            "threads": torch.get_num_threads(), "path": net.describe(), "compile_seconds": compile_s,
            "kernels": kernels}


def _profile(run, dev: torch.device, top: int = 8) -> list[dict]:
    """The ``top`` operators by their own time in one pass of ``run``, with their share."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        run()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    attr = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [{"op": e.key, "ms": getattr(e, attr) / 1e3, "share": getattr(e, attr) / total, "calls": e.count}
            for e in events[:top]]


def _in_child(**kwargs) -> dict:
    """:func:`measure` in a fresh interpreter (its peak memory is then the network's alone), with the
    allocator tuned as ``vs-hdrvid`` tunes its own process (:func:`vs_hdrvid.tune_malloc`)."""
    code = ("import json, sys; from vs_hdrvid.malloc import tune_malloc; tune_malloc(); "
            "from vs_hdrvid.eval.bench_nets import measure; print(json.dumps(measure(**json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"error": why if proc.returncode > 0 else f"killed by signal {-proc.returncode} (out of memory?)"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _devices(device: str) -> list[str]:
    cuda = torch.cuda.is_available()
    if device == "all":
        return ["cpu"] + (["cuda"] if cuda else [])
    if device == "auto":
        return ["cuda" if cuda else "cpu"]
    if device.startswith("cuda") and not cuda:
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return [device]


def run_bench_nets(sizes: list[tuple[int, int]], device: str = "all", periods: tuple[int, ...] = (2,),
                   repeats: int = 2, fp32: bool = False, folder: str | os.PathLike | None = None,
                   compile: bool | None = None, tile: int | None = None, compare_fp32: bool = False,
                   profile: bool = False, log=None) -> dict:
    """CoarseNet and RefineNet seconds per frame and peak memory for each size, device and pattern.

    The networks run as the nodes run them on a long clip: ``compile=None`` compiles on a CPU
    without tiles (:func:`~vs_hdrvid.models.inference.auto_compile`), the compilation reported
    apart from the timed passes.

    ``compare_fp32``: each row also measures the exact float32 eager path (``fp32=True``, no
    compile, no tiles) just before the chosen path, and gives their ratio as ``speedup``.
    """
    folder = os.fspath(folder or weights_mod.WEIGHTS_DIR)
    rows = []
    for period in periods:
        for dev in _devices(device):
            for w, h in sizes:
                args = dict(period=period, width=w, height=h, device=dev, repeats=repeats, folder=folder)
                row = {"exposures": period, "size": f"{w}x{h}", "device": dev}
                if compare_fp32:
                    row["fp32_eager"] = {k: _in_child(kind=k, fp32=True, **args) for k in ("coarse", "refine")}
                    if log:
                        log(_format_row(row["fp32_eager"] | row))
                comp = (dev == "cpu" and not tile and not fp32) if compile is None else compile
                c = _in_child(kind="coarse", fp32=fp32, compile=comp, tile=tile, profile=profile, **args)
                r = _in_child(kind="refine", fp32=fp32, compile=comp, tile=tile, profile=profile, **args)
                row |= {"coarse": c, "refine": r}
                if "error" not in c and "error" not in r:
                    row["coarse_refine_seconds"] = c["seconds"] + r["seconds"]
                    peaks = [p for p in (c["forward_peak_mib"], r["forward_peak_mib"]) if p is not None]
                    row["peak_mib"] = max(peaks) if peaks else None
                    base = row.get("fp32_eager", {})
                    if all("seconds" in base.get(k, {}) for k in ("coarse", "refine")):
                        row["speedup"] = {"coarse": base["coarse"]["seconds"] / c["seconds"],
                                          "coarse_refine": (base["coarse"]["seconds"] + base["refine"]["seconds"])
                                          / row["coarse_refine_seconds"]}
                rows.append(row)
                if log:
                    log(_format_row(row))
    from ..devices import cpu_features

    return {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"torch {torch.__version__}", "cpu": cpu_features(), "weights_folder": folder, "rows": rows}


def _format_row(row: dict) -> str:
    c, r = row["coarse"], row["refine"]
    path = c.get("path", {})
    mode = c.get("dtype", "") + (" compiled" if path.get("compile") else "") + (
        f" tile {path['tile']}" if path.get("tile") else "")
    head = f"{row['exposures']}-exp {row['device']:<4} {mode:<22} {row['size']:>10}"
    if "error" in c or "error" in r:
        return f"{head}  failed: {c.get('error') or r.get('error')}"
    mib = lambda m: f"{m:9.0f}" if m is not None else f"{'-':>9}"  # noqa: E731
    return (f"{head}  {c['seconds']:9.3f} {c['seconds'] + r['seconds']:9.3f}"
            f"  {mib(c['forward_peak_mib'])} {mib(r['forward_peak_mib'])}")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes look like 1280x720, got {text!r}") from None
    if min(w, h) < 32:
        raise argparse.ArgumentTypeError(f"sizes must be at least 32x32, got {text!r}")
    return w, h


def sizes_of(text: str) -> list[tuple[int, int]]:
    """``--sizes``: comma-separated WxH."""
    return [_size(s) for s in text.split(",") if s]


def add_bench_args(p: argparse.ArgumentParser, sizes: str) -> None:
    """The options every network benchmark takes (``bench-nets``, ``bench-dealthdr``)."""
    p.add_argument("--sizes", default=sizes, help="comma-separated WxH")
    p.add_argument("--device", default="all", help="all (CPU, and CUDA when present), auto, cpu or cuda[:N]")
    p.add_argument("--repeats", type=int, default=2, help="timed passes per measurement (best is reported)")
    p.add_argument("--fp32", action="store_true", help="float32 on CUDA too (default fp16 there)")
    p.add_argument("--weights", type=Path, help="weights folder (default: the shipped weights/)")
    p.add_argument("--json", type=Path, help="also write the figures here")


def add_cli(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench-nets", help="seconds per frame and peak memory of CoarseNet and "
                       "CoarseNet+RefineNet (a benchmark, not a test)")
    add_bench_args(p, "640x360,1280x720,1920x1080")
    p.add_argument("--exposures", default="2", help="pattern lengths to measure: 2, 3 or 2,3")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the networks, compile time reported apart (default: as the nodes on a long "
                        "clip: on a CPU, untiled)")
    p.add_argument("--tile", type=int, help="run the networks on tiles of this side (as the nodes' tile=)")
    p.add_argument("--profile", action="store_true", help="also list the operators that take the time")
    p.add_argument("--compare-fp32", action="store_true",
                   help="also measure the exact fp32 eager path beside each row and report the speedup")
    return p


def run_cli(args: argparse.Namespace) -> int:
    from ..cli import fail

    try:
        sizes = sizes_of(args.sizes)
        periods = tuple(int(v) for v in args.exposures.split(","))
        devices = _devices(args.device)
    except (argparse.ArgumentTypeError, ValueError) as e:
        return fail(e, 2)
    if not sizes or any(p not in (2, 3) for p in periods) or args.repeats < 1:
        return fail("give sizes, --exposures 2 and/or 3, and --repeats >= 1", 2)
    say = lambda text: print(text, flush=True)  # noqa: E731
    say(f"vs-hdrvid bench-nets: Chen et al. networks on {', '.join(devices)}; seconds per frame, peak memory "
        "of the forward pass (one fresh process per measurement)")
    say(f"{'pattern device dtype':<22} {'size':>9}  {'coarse s':>9} {'+refine s':>9}  {'coarse MiB':>9} "
        f"{'refine MiB':>9}")
    res = run_bench_nets(sizes, args.device, periods, args.repeats, args.fp32, args.weights, args.compile,
                         args.tile, args.compare_fp32, args.profile, log=say)
    sources = sorted({r[k]["weights"] for r in res["rows"] for k in ("coarse", "refine") if "weights" in r[k]})
    if any(s.startswith("random") for s in sources):
        say("weights: randomly initialised (no trained weights found in "
            f"{res['weights_folder']}); timing and memory do not depend on the weight values")
    threads = {r["coarse"].get("threads") for r in res["rows"]} - {None}
    say(f"machine: {res['machine']}, torch threads {', '.join(map(str, sorted(threads)))}; "
        "'+refine' = CoarseNet + RefineNet per output frame")
    for row in res["rows"] if args.profile else []:
        for kind in ("coarse", "refine"):
            ops = ", ".join(f"{k['op']} {k['share']:.0%}" for k in row[kind].get("kernels") or [])
            say(f"profile {kind} {row['size']}: {ops}")
    cpu = res["cpu"]
    say(f"cpu: {cpu['model']}, AMX {'yes' if cpu['amx_bf16'] else 'no'}, AVX512-BF16 "
        f"{'yes' if cpu['avx512_bf16'] else 'no'}, torch ISA {cpu['torch_isa']}")
    if args.json:
        write_figures(res, args.json)
    for row in res["rows"]:
        if "speedup" in row:
            say(f"speedup {row['speedup']['coarse']:.2f}x over fp32 eager (CoarseNet, {row['size']}); "
                f"CoarseNet+RefineNet {row['speedup']['coarse_refine']:.2f}x")
    return 1 if any("error" in r["coarse"] or "error" in r["refine"] for r in res["rows"]) else 0
