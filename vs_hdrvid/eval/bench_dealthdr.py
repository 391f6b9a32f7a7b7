"""``vs-hdrvid bench-dealthdr``: DeAltHDR's cost and quality against the FGMA sensitivity ``s``.

Default mode: seconds per frame and GFLOPs of one forward pass for each configuration (the
paper's :class:`DeAltHDRConfig` and the shipped/small one), size, device and ``s``. The input is a
real window of the synthetic test preset (its first degraded day/night crop, resized to the
measured size), so the attention ratio reported beside each ``s`` is the share of FGMA query
pixels the dial really sends to attention on that content; the cost of FGMA follows that share.
CUDA runs in fp16 (``--fp32`` for float32) and is synchronised before each clock read. GFLOPs
count the convolutions and matrix products (``torch.utils.flop_counter.FlopCounterMode``);
the attention's gather, softmax and the warps are not FLOPs there.

``--curve PNG``: PSNR-mu and seconds per frame for ``s`` in {0, 0.5, 1, 15, 100, inf} (DeAltHDR
section 3.3's performance curve, Fig. 1 / Table I) over fixed crops of the degraded scenes of a
preset, with the given trained weights; writes a plot (PSNR-mu against time, the attention
ratio beside each point) and, with ``--json``, the figures.

Trained weights (``dealthdr-2exp``) are used for the configuration they were trained with;
others are randomly initialised, which keeps the cost but not the flows, so their attention
ratios only show that the dial works. Weights that take the classical flows
(``flow_source="dis"``, the shipped ones) get the DIS flows of the measured window; their time is
reported apart (``flow_seconds``: the four DIS flows ``t -> t+o`` the node computes per frame,
whose reverse directions it reads from the same clips), and they are timed as the node runs a
clip: the encoder features of the four frames a window shares with the one before are reused
(:class:`~vs_hdrvid.models.dealthdr.FeatureCache`), so each frame encodes one new frame.
``--compare-fp32`` times the exact float32 eager path beside it as it was before that cache:
every window encoded whole.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .. import weights as weights_mod
from ..devices import cpu_features
from ..models.dealthdr import DeAltHDR, DeAltHDRConfig, FeatureCache
from ..models.inference import Inference
from .bench_nets import _devices, _size, add_bench_args, sizes_of
from .report import write_figures

__all__ = ["add_cli", "run_cli", "run_bench", "run_curve", "plot_curve", "load_network", "real_window"]

S_BENCH = (0.0, 15.0, math.inf)
S_CURVE = (0.0, 0.5, 1.0, 15.0, 100.0, math.inf)
CONFIGS = {"paper": DeAltHDRConfig, "small": DeAltHDRConfig.small, "shipped": None}  # shipped: whatever is there


def load_network(config: str, folder: str | os.PathLike, device: torch.device, dtype: torch.dtype,
                 require_trained: bool = False) -> tuple[DeAltHDR, str]:
    """The trained ``dealthdr-2exp`` of ``folder`` if it has the ``config`` width, else a random one.

    ``config`` is ``"paper"``, ``"small"`` or ``"shipped"`` (whatever ``folder`` holds).
    """
    want = None if config == "shipped" else CONFIGS[config]()
    try:
        net, _ = weights_mod.load("dealthdr-2exp", "cpu", Path(folder))
    except weights_mod.WeightsError as e:
        if require_trained or want is None:
            raise
        net, source = None, f"random initialisation ({e})"
    else:
        source = f"trained ({Path(folder) / weights_mod.REGISTRY['dealthdr-2exp'].file})"
        if want is not None and net.config != want:
            if require_trained:
                raise weights_mod.WeightsError(f"{folder} holds DeAltHDR weights of another width than '{config}'")
            net, source = None, "random initialisation (the shipped weights are of another width)"
    if net is None:
        torch.manual_seed(0)
        net = DeAltHDR(want)
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False), source


def window_flows(net: DeAltHDR, ldrs: torch.Tensor, evs: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, float]:
    """The classical flows of a ``(1, 5, 3, H, W)`` window for a network that takes them (else
    None), and the seconds of the node's per-frame share of them (:func:`_dis_seconds`)."""
    if not net.needs_flows:
        return None, 0.0
    from ..train.data import window_classical_flows

    c = net.center
    fwd, bwd = window_classical_flows(ldrs[0].float().cpu().numpy(), evs[0].float().cpu().numpy(), c)
    flows = tuple(torch.from_numpy(f)[None].to(ldrs.device, ldrs.dtype) for f in (fwd, bwd))
    return flows, _dis_seconds(ldrs[0].float().cpu(), evs[0].float().cpu(), c)


def _dis_seconds(ldrs: torch.Tensor, evs: torch.Tensor, center: int) -> float:
    """Seconds of ``exposure_flow`` from the centre to each neighbour (what ``classical_flow``
    computes for one output frame: each call also runs the reverse DIS for its confidence)."""
    from ..ops.classical_flow import exposure_flow
    from ..train.data import CLASSICAL_FLOW, window_radiance

    lin = window_radiance(ldrs.numpy(), evs.numpy())
    start = time.perf_counter()
    for i in range(len(evs)):
        if i != center:
            exposure_flow(lin[center], lin[i], float(max(evs[center], evs[i])), *CLASSICAL_FLOW)
    return time.perf_counter() - start


def real_window(root: str, preset: str, patch: int, index: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A fixed crop of a degraded test window: ``ldrs (1, 5, 3, P, P)``, ``evs (1, 5)`` and its scene."""
    from ..train.data import WindowDataset

    ds = WindowDataset(root, preset, "dealthdr", 2, patch=patch, train=False, val_windows=1)
    item = ds[index]
    return item["ldrs"][None], item["evs"][None], ds.dirs[ds.fixed[index][0].scene].name


def _resized(ldrs: torch.Tensor, width: int, height: int) -> torch.Tensor:
    if tuple(ldrs.shape[-2:]) == (height, width):
        return ldrs
    flat = F.interpolate(ldrs.flatten(0, 1), (height, width), mode="bilinear", align_corners=False, antialias=True)
    return flat.unflatten(0, ldrs.shape[:2]).clamp(0, 1)


def _sync(device: torch.device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


@torch.inference_mode()
def _timed(net: DeAltHDR, ldrs: torch.Tensor, evs: torch.Tensor, s: float, repeats: int,
           flows: tuple[torch.Tensor, torch.Tensor] | None = None, video: bool = False) -> tuple[float, float]:
    """Best seconds of ``repeats`` forwards after one warm-up, and the attention ratio.

    ``video``: as the node runs through a clip with the flows given, with a :class:`FeatureCache`:
    each timed forward shares four frames with the one before and encodes one new frame.
    """
    sync = _sync(ldrs.device)
    cache = FeatureCache() if video else None

    def reuse(r: int) -> dict:
        return {} if cache is None else {"frame_ids": [0, 1, 2, 3, 100 + r], "cache": cache}

    out = net(ldrs, evs, s, flows=flows, **reuse(-1))  # warm-up (allocator, cuDNN algorithm choice)
    sync()
    best = math.inf
    for r in range(repeats):
        start = time.perf_counter()
        out = net(ldrs, evs, s, flows=flows, **reuse(r))
        sync()
        best = min(best, time.perf_counter() - start)
    return best, float(out.attention_ratio)


@torch.inference_mode()
def _gflops(net: Inference, ldrs: torch.Tensor, evs: torch.Tensor, s: float,
            flows: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """GFLOPs of one forward (counted without autocast: the count does not depend on the precision)."""
    with FlopCounterMode(display=False) as counter:
        net.model(ldrs, evs, s, flows=flows)
    return counter.get_total_flops() / 1e9


def _fmt_s(s: float) -> str:
    """``s`` as JSON-safe text (strict JSON has no infinity)."""
    return "inf" if math.isinf(s) else f"{s:g}"


def _dtype(device: torch.device, fp32: bool) -> torch.dtype:
    return torch.float16 if device.type == "cuda" and not fp32 else torch.float32


def run_bench(configs: list[str], sizes: list[tuple[int, int]], device: str = "all", s_values=S_BENCH,
              repeats: int = 2, fp32: bool = False, folder: str | os.PathLike | None = None,
              root: str = "data/synth", preset: str = "test", patch: int = 256, flops: bool = True,
              compile: bool = False, compare_fp32: bool = False, log=None) -> dict:
    """Seconds per frame, GFLOPs and attention ratio for every configuration, size, device and ``s``.

    The network runs as the node runs it (:class:`~vs_hdrvid.models.inference.Inference`);
    ``compare_fp32`` also times the exact float32 eager path beside each row (``fp32_seconds``).
    """
    folder = os.fspath(folder or weights_mod.WEIGHTS_DIR)
    ldrs0, evs0, scene = real_window(root, preset, patch)
    rows, counted = [], {}
    for dev_name in _devices(device):
        dev = torch.device(dev_name)
        dtype = _dtype(dev, fp32)
        for config in configs:
            model, source = load_network(config, folder, dev, dtype)
            params = sum(p.numel() for p in model.parameters())
            exact = Inference(copy.deepcopy(model), "dealthdr", dev, fp32=True) if compare_fp32 else None
            net = Inference(model, "dealthdr", dev, fp32=fp32, compile=compile)
            for w, h in sizes:
                ldrs, evs = _resized(ldrs0, w, h).to(dev, dtype), evs0.to(dev, dtype)
                flows, flow_seconds = window_flows(model, ldrs, evs)
                for s in s_values:
                    row = {"config": config, "size": f"{w}x{h}", "device": dev_name, "dtype": net.precision.name,
                           "s": _fmt_s(s), "weights": source, "parameters": params, "path": net.describe()}
                    if flows is not None:
                        row["flow_seconds"] = flow_seconds
                    try:
                        if exact is not None:
                            f32 = None if flows is None else tuple(f.float() for f in flows)
                            row["fp32_seconds"], _ = _timed(exact, ldrs.float(), evs.float(), s, repeats, f32)
                        row["seconds"], row["attention_ratio"] = _timed(net, ldrs, evs, s, repeats, flows,
                                                                        video=flows is not None)
                        key = (config, w, h, s)
                        if flops and key not in counted:
                            counted[key] = _gflops(net, ldrs, evs, s, flows)
                        row["gflops"] = counted.get(key)
                    except (RuntimeError, MemoryError) as e:  # out of memory at a large size
                        row["error"] = str(e).splitlines()[0]
                        if dev.type == "cuda":
                            torch.cuda.empty_cache()
                    rows.append(row)
                    if log:
                        log(_format_row(row))
            del net, exact
    cpu = cpu_features()
    isa = ", ".join(f for f in ("amx_bf16", "avx512_bf16") if cpu[f]) or "no native bf16"
    return {"machine": f"{cpu['model']} ({isa}), {os.cpu_count()} cores, torch "
                       f"{torch.__version__}, {torch.get_num_threads()} threads"
                       + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
            "window": {"root": root, "preset": preset, "scene": scene, "crop": patch, "resized_to": "size"},
            "weights_folder": folder, "rows": rows}


def _format_row(row: dict) -> str:
    head = f"{row['config']:<6} {row['device']:<5} {row['dtype']:<8} {row['size']:>10} s={row['s']:<4}"
    if "error" in row:
        return f"{head}  failed: {row['error']}"
    gf = f"{row['gflops']:9.1f}" if row.get("gflops") is not None else f"{'-':>9}"
    line = f"{head}  {row['seconds'] * 1e3:10.1f} {gf} {row['attention_ratio']:8.3f}"
    if "flow_seconds" in row:
        line += f"  + DIS {row['flow_seconds'] * 1e3:.1f} ms"
    if "fp32_seconds" in row:
        line += f"  fp32 eager {row['fp32_seconds'] * 1e3:.1f} ms ({row['fp32_seconds'] / row['seconds']:.2f}x)"
    return line


@torch.inference_mode()
def run_curve(folder: str | os.PathLike | None = None, root: str = "data/synth", preset: str = "test",
              patch: int = 256, windows: int = 2, s_values=S_CURVE, device: str = "auto", fp32: bool = False,
              time_size: tuple[int, int] | None = None, repeats: int = 1, log=None) -> dict:
    """PSNR-mu, seconds per frame, GFLOPs and attention ratio per ``s`` over a preset's degraded crops.

    Seconds are the mean forward time over the crops (after one warm-up forward), or
    with ``time_size`` the best of ``repeats`` forwards on the first crop resized to that size
    (GFLOPs likewise: the first crop, at the timed size; ``attention_ratio_timed`` is that input's).
    """
    from ..ops.metrics import psnr_mu
    from ..train.data import WindowDataset

    folder = os.fspath(folder or weights_mod.WEIGHTS_DIR)
    dev = torch.device(_devices(device)[0])
    dtype = _dtype(dev, fp32)
    model, source = load_network("shipped", folder, dev, dtype, require_trained=True)
    net = Inference(model, "dealthdr", dev, fp32=fp32)
    ds = WindowDataset(root, preset, "dealthdr", 2, patch=patch, train=False, val_windows=windows,
                       classical_flow=model.needs_flows)
    crops = [ds[i] for i in range(len(ds))]
    for c in crops:  # the classical flows where the network takes them
        c["flows"] = (c["init_flows"][:1].to(dev, dtype), c["init_bwd"][:1].to(dev, dtype)) \
            if model.needs_flows else None  # (1, 4, 2, P, P): the crop's one window
    sync = _sync(dev)
    net(crops[0]["ldrs"][None].to(dev, dtype), crops[0]["evs"][None].to(dev, dtype), math.inf,
        flows=crops[0]["flows"])  # warm-up
    points = []
    for s in s_values:
        psnrs, secs, ratios = [], [], []
        for c in crops:
            ldrs, evs = c["ldrs"][None].to(dev, dtype), c["evs"][None].to(dev, dtype)
            sync()
            start = time.perf_counter()
            out = net(ldrs, evs, s, flows=c["flows"])
            sync()
            secs.append(time.perf_counter() - start)
            psnrs.append(float(psnr_mu(out.hdr.float().cpu(), c["gt"][:1], c["h_sat"])))
            ratios.append(out.attention_ratio)
        first = crops[0]
        ldrs, evs = first["ldrs"][None], first["evs"][None]
        flows = first["flows"]
        if time_size is not None:
            ldrs = _resized(ldrs, *time_size)
        ldrs, evs = ldrs.to(dev, dtype), evs.to(dev, dtype)
        timed_ratio = None
        if time_size is not None:
            flows = window_flows(model, ldrs, evs)[0]
            seconds, timed_ratio = _timed(net, ldrs, evs, s, repeats, flows)
        else:
            seconds = sum(secs) / len(secs)
        point = {"s": _fmt_s(s), "psnr_mu": sum(psnrs) / len(psnrs), "seconds": seconds,
                 "attention_ratio": sum(ratios) / len(ratios), "gflops": _gflops(net, ldrs, evs, s, flows),
                 "psnr_mu_per_crop": psnrs, "attention_ratio_timed": timed_ratio}
        points.append(point)
        if log:
            log(f"s={point['s']:<5} PSNR-mu {point['psnr_mu']:7.3f} dB  {seconds * 1e3:9.1f} ms  "
                f"{point['gflops']:8.2f} GFLOPs  attention {point['attention_ratio']:.3f}")
    size = f"{time_size[0]}x{time_size[1]}" if time_size else f"{patch}x{patch}"
    return {"weights": source, "config": net.config.to_dict(), "device": str(dev), "dtype": net.precision.name,
            "preset": preset, "root": root, "crops": len(crops), "crop": patch, "timed_size": size,
            "scenes": sorted({d.name for d in ds.dirs}), "threads": torch.get_num_threads(), "points": points}


def plot_curve(res: dict, path: str | os.PathLike) -> None:
    """PSNR-mu against milliseconds per frame, each point labelled with ``s`` and its attention ratio."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = res["points"]
    xs, ys = [p["seconds"] * 1e3 for p in pts], [p["psnr_mu"] for p in pts]
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=110)
    ax.plot(xs, ys, "o-", color="C0")
    for i, (p, x, y) in enumerate(zip(pts, xs, ys)):  # staggered: cheap points lie close together
        share = 100 * p["attention_ratio"]
        ax.annotate(f"s={p['s']}: {share:.{1 if 0 < share < 10 else 0}f}% attention", (x, y), textcoords="offset points",
                    xytext=(10, (-16, 10, 26, -32, 42, -48)[i % 6]), fontsize=7, arrowprops={"arrowstyle": "-", "lw": 0.4})
    ax.margins(x=0.25, y=0.3)
    ax.set_xlabel(f"ms per frame ({res['timed_size']}, {res['device']} {res['dtype']})")
    ax.set_ylabel("PSNR-mu (dB)")
    ax.set_title(f"DeAltHDR: FGMA sensitivity s, {res['crops']} crops of {res['preset']} day/night", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _s_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v)
    except ValueError:
        values = (math.nan,)
    if not values or not all(v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"--s takes comma-separated numbers >= 0 or inf, got {text!r}")
    return values


def add_cli(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench-dealthdr", help="DeAltHDR seconds per frame, GFLOPs and attention ratio against s; "
                       "--curve: PSNR-mu against time (a benchmark, not a test)")
    add_bench_args(p, "256x256,1920x1080")
    p.add_argument("--configs", default="paper,shipped",
                   help="paper, small (DeAltHDRConfig.small) and/or shipped (the weights folder's network)")
    p.add_argument("--s", type=_s_list, default=None, metavar="S,S,...",
                   help="sensitivities (default 0,15,inf; with --curve 0,0.5,1,15,100,inf)")
    p.add_argument("--no-flops", dest="flops", action="store_false", help="skip the FLOP count (one more forward)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (compile time not counted)")
    p.add_argument("--compare-fp32", action="store_true", help="also time the exact fp32 eager path beside each row")
    p.add_argument("--root", default="data/synth", help="synthetic data root")
    p.add_argument("--preset", default="test", help="preset whose day/night scenes give the windows")
    p.add_argument("--patch", type=int, default=256, help="side of the real crops (multiple of 16)")
    p.add_argument("--curve", type=Path, metavar="PNG", help="PSNR-mu/time curve over the preset; plot here")
    p.add_argument("--windows", type=int, default=2, help="--curve: fixed crops per scene")
    p.add_argument("--time-size", type=_size, help="--curve: time each s at this WxH (default: the crops)")
    return p


def run_cli(args: argparse.Namespace) -> int:
    from ..cli import fail

    try:
        sizes = sizes_of(args.sizes)
        configs = [c for c in args.configs.split(",") if c]
        devices = _devices("auto" if args.curve and args.device == "all" else args.device)
    except (argparse.ArgumentTypeError, ValueError) as e:
        return fail(e, 2)
    if not sizes or not configs or set(configs) - set(CONFIGS) or args.repeats < 1 or args.patch % 16 \
            or args.windows < 1:
        return fail("give sizes, --configs of paper, small and shipped, --repeats >= 1, --windows >= 1 and a --patch "
                    "that is a multiple of 16", 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    say = lambda text: print(text, flush=True)  # noqa: E731
    try:
        if args.curve:
            say(f"vs-hdrvid bench-dealthdr --curve: {args.preset} day/night crops of {args.patch} px on {devices[0]}")
            res = run_curve(args.weights, args.root, args.preset, args.patch, args.windows, args.s or S_CURVE,
                            devices[0], args.fp32, args.time_size, args.repeats, log=say)
            plot_curve(res, args.curve)
            print(f"wrote {args.curve}", file=sys.stderr)
            failed = False
        else:
            say(f"vs-hdrvid bench-dealthdr: on {', '.join(devices)}; one forward pass per frame (with the "
                "classical flows: the steady state of a clip, encoder features of shared frames reused)")
            say(f"{'config device dtype':<22} {'size':>9} {'s':<6}  {'ms/frame':>10} {'GFLOPs':>9} {'attn':>8}")
            res = run_bench(configs, sizes, args.device, args.s or S_BENCH, args.repeats, args.fp32, args.weights,
                            args.root, args.preset, args.patch, args.flops, args.compile, args.compare_fp32,
                            log=say)
            say(f"window: {res['window']['scene']} ({args.patch} px crop resized to each size); weights: "
                + "; ".join(sorted({f"{r['config']} {r['weights']}" for r in res['rows']})))
            say(f"machine: {res['machine']}")
            failed = any("error" in r for r in res["rows"])
    except (FileNotFoundError, weights_mod.WeightsError, ValueError) as e:
        return fail(str(e).splitlines()[0], 2)
    if args.json:
        write_figures(res, args.json)
    return 1 if failed else 0
