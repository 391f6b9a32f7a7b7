"""``vs-hdrvid export-onnx``: the shipped networks as ONNX files, checked against torch.

Each network is exported whole, as the graph of :mod:`vs_hdrvid.export.graphs` (one input of
planes, the HDR out: what vs-mlrt runs), with ``torch.onnx.export(dynamo=True)`` at opset 18
(``GridSample`` needs 16; 19 with ``deform="op"``, for ``DeformConv``), for a fixed frame size or
for any size that is a multiple of the network's (``dynamic``). Every file is then run by
onnxruntime (and OpenVINO, when installed, in f32) on a real window, made from the bundled sample's
ground-truth HDR frames resized to the export size and photographed again at the network's exposure
pattern, and compared in fp32 with the torch network's own forward: the largest absolute difference
must be at most 1e-3. The figures go into ``report.json`` beside the files. docs/onnx.md says how a
script feeds the files to vs-mlrt.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["OPSET", "TOLERANCE", "ExportError", "export_graph", "sample_window", "check_file", "export_network",
           "variants", "add_cli", "run_cli"]

log = logging.getLogger("vs_hdrvid")

OPSET = 18  # GridSample from 16 on; torch.onnx's own default
OPSET_DEFORM = 19  # DeformConv
TOLERANCE = 1e-3  # largest absolute difference from torch allowed, fp32 radiance
MIN_SIDE = 32  # as the nodes
PATTERNS = {2: [-1.5, 1.5], 3: [-2.0, 0.0, 2.0]}


class ExportError(ValueError):
    """A request that cannot be exported: unknown name, bad size, a check that failed."""


def _deform_translation() -> dict:
    """torch.onnx translation of ``torchvision::deform_conv2d`` to ONNX ``DeformConv`` (opset 19)."""
    from onnxscript import opset19 as op

    def deform_conv2d(input, weight, offset, mask, bias, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                      dil_h: int, dil_w: int, n_weight_grps: int, n_offset_grps: int, use_mask: bool):
        return op.DeformConv(input, weight, offset, bias, mask, dilations=[dil_h, dil_w], group=n_weight_grps,
                             offset_group=n_offset_grps, pads=[pad_h, pad_w, pad_h, pad_w],
                             strides=[stride_h, stride_w])

    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    return {torch.ops.torchvision.deform_conv2d.default: deform_conv2d}


def export_graph(graph: nn.Module, path: str | os.PathLike, size: tuple[int, int], dynamic: int = 0,
                 deform: str = "grid", metadata: dict | None = None, optimize: bool = True) -> Path:
    """Write ``graph`` to ``path`` as one ONNX file (no external data), atomically.

    Args:
        graph: from :func:`~vs_hdrvid.export.graphs.build_graph`.
        size: ``(W, H)`` of the example input (the fixed size unless ``dynamic``).
        dynamic: 0 for a fixed size, else the multiple both sides must be of.
        deform: ``"op"`` when the graph holds torchvision's deformable convolution (opset 19).
        metadata: strings stored as the model's ``metadata_props``.
        optimize: run the onnxscript optimizer (constant folding, fusions) on the file; a third of
            the export's time, and what onnxruntime and OpenVINO also do when they load a file.
    """
    import onnx

    from ..outputs import atomic_path
    from .graphs import output_names

    w, h = size
    x = torch.zeros(1, graph.channels, h, w)
    kwargs: dict = {}
    if dynamic:
        dims = torch.export.Dim("h", min=1, max=8192 // dynamic), torch.export.Dim("w", min=1, max=8192 // dynamic)
        kwargs["dynamic_shapes"] = {"x": {2: dynamic * dims[0], 3: dynamic * dims[1]}}
    if deform == "op":
        kwargs["custom_translation_table"] = _deform_translation()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chatter = io.StringIO()  # torch.onnx prints its progress on stdout, which stays free for data
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(graph, (x,), tmp, input_names=["input"],
                              output_names=output_names(graph.kind, graph.outputs),
                              opset_version=OPSET_DEFORM if deform == "op" else OPSET, dynamo=True,
                              external_data=False, optimize=optimize, verbose=False, **kwargs)
        except Exception as e:  # torch.onnx's message is a page of advice: keep its exception summary
            raise RuntimeError(f"torch.onnx cannot export the {graph.kind} graph: {_summary(e)}") from e
        proto = onnx.load(tmp)
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(proto, tmp)
    log.debug("torch.onnx: %s", chatter.getvalue())
    return path


def _summary(e: BaseException) -> str:
    """The first line of torch.onnx's "Exception summary" (the cause), else the message's first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    causes = re.findall(r"^<class '[\w.]+'>: (.+)$", text, flags=re.M)
    return (causes[0] if causes else text.strip().splitlines()[0] if text.strip() else type(e).__name__)[:400]


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    w, h = size
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


def sample_window(graph: nn.Module, size: tuple[int, int], period: int | None = None) -> Tensor:
    """The planes of a real window for ``graph`` at ``size`` ``(W, H)``: ``(1, C, H, W)``.

    The bundled sample's ground-truth HDR frames (``examples/sample/gt``), resized, are photographed
    again as 8-bit gamma-2.2 frames of the pattern :data:`PATTERNS` (``period`` exposures; the
    reference's exposure is the graph's: DeAltHDR's ``short``), linearised back, and joined with the
    DIS flows of :func:`~vs_hdrvid.ops.classical_flow.exposure_flow` where the graph takes flows
    and, for RefineNet, with the true HDR of each frame as its coarse HDR.
    """
    from ..ops.classical_flow import exposure_flow
    from ..ops.exr import read_exr
    from ..resources import data_dir
    from .graphs import layout

    planes = {p.name: p for p in layout(graph.net, graph.kind, getattr(graph, "flows", False))}
    t = planes["ev"].count
    period = period or getattr(graph.net.config, "num_exposures", 2)
    pattern = PATTERNS[period]
    phase = 0 if not hasattr(graph, "short") else (0 if graph.short[t // 2] else 1)
    evs = torch.tensor([pattern[(phase + i - t // 2) % period] for i in range(t)])
    files = sorted((data_dir("sample") / "gt").glob("*.exr"))[:t]
    gt = _resize(torch.stack([torch.from_numpy(np.asarray(read_exr(f), np.float32)).permute(2, 0, 1) for f in files]),
                 size)  # (T, 3, H, W)
    shot = torch.round((gt * torch.exp2(evs).view(-1, 1, 1, 1)).clamp(0, 1).pow(1 / 2.2) * 255) / 255
    lin = shot.pow(2.2) * torch.exp2(-evs).view(-1, 1, 1, 1)
    w, h = size
    parts = {"radiance": lin.reshape(1, -1, h, w), "coarse_hdr": gt.reshape(1, -1, h, w),
             "ev": evs.view(1, t, 1, 1).expand(1, t, h, w)}
    ci, ev_max = t // 2, float(evs.max())

    def flow(a: int, b: int) -> Tensor:
        fw, conf = exposure_flow(lin[a], lin[b], ev_max)
        return torch.cat((torch.from_numpy(fw), torch.from_numpy(conf)[None]))  # (3, H, W)

    nbrs = [i for i in range(t) if i != ci]
    if "flow" in planes or "flow_fwd" in planes:
        parts["flow"] = parts["flow_fwd"] = torch.cat([flow(ci, i) for i in nbrs])[None]
    if "flow_bwd" in planes:
        parts["flow_bwd"] = torch.cat([flow(i, ci) for i in nbrs])[None]
    x = torch.zeros(1, graph.channels, h, w)
    for name, p in planes.items():
        x[:, p.start:p.stop] = parts[name]
    return x


def _ov_run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(os.fspath(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled([x])
    return [np.asarray(result[o]) for o in compiled.outputs]


def _ort_run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})


def check_file(path: str | os.PathLike, graph: nn.Module, model: nn.Module, x: Tensor) -> dict:
    """Run ``path`` by onnxruntime and OpenVINO (when installed) on ``x`` and compare every output
    with ``model``'s own forward on the same window (:meth:`graph.reference`).

    Returns:
        ``{"ort": {"max_abs": ...}, "ov": {...} | {"skipped": why}, "reference_max": ..., "passed": bool}``.
    """
    with torch.no_grad():
        ref = graph.reference(model, x)
    refs = [r.float().numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
    report: dict = {"tolerance": TOLERANCE, "reference_max": float(np.abs(refs[0]).max())}
    for name, run, module in (("ort", _ort_run, "onnxruntime"), ("ov", _ov_run, "openvino")):
        try:
            __import__(module)
        except ModuleNotFoundError:
            report[name] = {"skipped": f"{module} is not installed"}
            continue
        except ImportError as e:  # e.g. openvino beside vapoursynth-mlrt-ov's own OpenVINO libraries
            report[name] = {"skipped": f"{module} does not import here: {' '.join(str(e).split())[:200]}"}
            continue
        try:
            outs = run(Path(path), x.numpy())
        except Exception as e:  # a runtime that cannot run the file: the report says why
            report[name] = {"failed": " ".join(str(e).split())[:300]}
            continue
        report[name] = {"max_abs": max(float(np.abs(o - r).max()) for o, r in zip(outs, refs))}
    ran = [report[k]["max_abs"] for k in ("ort", "ov") if "max_abs" in report[k]]
    report["passed"] = bool(ran) and "max_abs" in report["ort"] and max(ran) <= TOLERANCE
    return report


def variants(model: nn.Module, kind: str) -> list[dict]:
    """The graphs one network needs: one, or for DeAltHDR one per exposure of the reference (its
    encoders are chosen by the window's pattern of short and long frames)."""
    if kind != "dealthdr":
        return [{"suffix": "", "short": None}]
    t = model.config.frames
    return [{"suffix": f".ref-{which}", "short": tuple(i % 2 == (t // 2 + flip) % 2 for i in range(t))}
            for flip, which in ((0, "short"), (1, "long"))]


def check_size(model: nn.Module, kind: str, size: tuple[int, int], dynamic: bool) -> None:
    """Raise :class:`ExportError` for a size the network cannot take."""
    from .graphs import multiple_of

    m = multiple_of(model, kind)
    w, h = size
    if min(w, h) < max(m, MIN_SIDE):
        raise ExportError(f"size {w}x{h} is smaller than {kind}'s smallest frame side {max(m, MIN_SIDE)} "
                          f"(the network works on multiples of {m})")
    if dynamic and kind == "coarse" and model.needs_init_flows:
        raise ExportError("a coarse graph of the blend='merge' design (the shipped weights) has a fixed size: the "
                          "merge's box filter (ops.merge._box_mean) indexes its last row by the frame height, which "
                          "torch.export fixes at the example's; export --size WxH at the size vs-mlrt is given "
                          "(the clip's, or its tilesize)")
    if dynamic and (w % m or h % m):
        raise ExportError(f"a --dynamic {kind} graph takes sides that are multiples of {m}; "
                          f"check it at such a size, not {w}x{h}")


def export_network(name: str, out_dir: str | os.PathLike, size: tuple[int, int] | None = None,
                   dynamic: bool = False, check: bool = True, folder: str | os.PathLike | None = None,
                   deform: str = "grid", s: float = 15.0, log=None) -> dict:
    """Export the shipped network ``name`` into ``out_dir`` and write ``report.json`` there.

    Args:
        name: a weights name (``coarse-2exp``, ``coarse-3exp``, ``refine-2exp``, ``dealthdr-2exp``).
        size: ``(W, H)``; default the bundled sample's 224x128 (any multiple of 16 works for all).
        dynamic: any multiple of the network's size multiple instead of one size.
        check: run each file and compare it with torch (:func:`check_file`).
        folder: the weights folder (default: the shipped weights).
        deform: RefineNet's deformable convolution, ``"grid"`` or ``"op"``.
        s: DeAltHDR's FGMA sensitivity, fixed in its graphs.

    Returns:
        the report (also written as ``report.json``).

    Raises:
        ExportError: unknown name, bad size, or a file that fails its check.
        vs_hdrvid.weights.WeightsError: weights missing or corrupt.
    """
    from .. import weights as weights_mod
    from .graphs import build_graph, layout, multiple_of

    if name not in weights_mod.REGISTRY:
        raise ExportError(f"unknown network {name!r}; known: {', '.join(sorted(weights_mod.REGISTRY))}")
    spec = weights_mod.REGISTRY[name]
    model, entry = weights_mod.load(name, "cpu", Path(folder or weights_mod.WEIGHTS_DIR))
    model = model.float().requires_grad_(False)
    size = size or (224, 128)
    check_size(model, spec.kind, size, dynamic)
    m = multiple_of(model, spec.kind)
    out_dir = Path(out_dir)
    report: dict = {"network": name, "weights_sha256": entry.sha256, "opset": OPSET_DEFORM if deform == "op" else OPSET,
                    "size": "dynamic" if dynamic else f"{size[0]}x{size[1]}", "multiple": m, "files": []}
    for var in variants(model, spec.kind):
        graph = build_graph(model, spec.kind, "hdr", deform, short=var["short"], s=s)
        path = out_dir / f"{name}{var['suffix']}.onnx"
        planes = [{"name": p.name, "first": p.start, "planes": p.count}
                  for p in layout(model, spec.kind, getattr(graph, "flows", False))]
        meta = {"vs_hdrvid.network": name, "vs_hdrvid.layout": json.dumps(planes), "vs_hdrvid.multiple": m}
        if spec.kind == "dealthdr":
            meta |= {"vs_hdrvid.s": s, "vs_hdrvid.short": json.dumps(var["short"])}
        if log:
            log(f"exporting {path.name} ({graph.channels} planes in, {report['size']})")
        export_graph(graph, path, size, m if dynamic else 0, deform if spec.kind == "refine" else "grid", meta)
        hw = ["H", "W"] if dynamic else [size[1], size[0]]
        item = {"file": path.name, "kind": spec.kind, "input": [1, graph.channels, *hw], "output": [1, 3, *hw],
                "layout": planes}
        if spec.kind == "dealthdr":
            item |= {"s": s, "short": list(var["short"])}
        if check:
            item["check"] = check_file(path, graph, model, sample_window(graph, size, spec.exposures))
            item["check"]["window"] = f"examples/sample/gt frames resized to {size[0]}x{size[1]}"
        report["files"].append(item)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    failed = [f["file"] for f in report["files"] if check and not f["check"]["passed"]]
    if failed:
        raise ExportError(f"{', '.join(failed)} differ from torch by more than {TOLERANCE} "
                          f"(see {out_dir / 'report.json'})")
    return report


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size looks like 1280x720, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"a size needs positive sides, got {text!r}")
    return w, h


def add_cli(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..cli import _sensitivity  # reconstruct --s's parser: the same rule and message

    p = sub.add_parser("export-onnx", help="a shipped network as ONNX for onnxruntime, OpenVINO and vs-mlrt",
                       description="Export a network as ONNX (one input of planes, the HDR out) and check it "
                                   "against torch; see docs/onnx.md.")
    p.add_argument("name", help="coarse-2exp, coarse-3exp, refine-2exp or dealthdr-2exp")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for the .onnx files and report.json")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=_size, help="fixed frame size WxH (default 224x128)")
    size.add_argument("--dynamic", action="store_true", help="any frame size that is a multiple of the network's")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="run each file and compare it with torch on a real window (default: on)")
    p.add_argument("--weights", type=Path, help="weights folder (default: the shipped weights/)")
    p.add_argument("--deform", choices=("grid", "op"), default="grid",
                   help="refine: the deformable convolution as GridSample taps (every runtime) or ONNX "
                        "DeformConv (opset 19, onnxruntime only)")
    p.add_argument("--s", type=_sensitivity, default=15.0, metavar="S", help="dealthdr: the FGMA sensitivity")
    return p


def run_cli(args: argparse.Namespace) -> int:
    from ..cli import UserError
    from ..weights import WeightsError

    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise UserError(f"export-onnx needs {e.name}: pip install 'vs-hdrvid[onnx]'") from None
    say = lambda text: print(f"vs-hdrvid: {text}", flush=True)  # noqa: E731
    try:
        report = export_network(args.name, args.output, args.size, args.dynamic, args.check, args.weights,
                                args.deform, args.s, log=say)
    except (ExportError, WeightsError) as e:
        raise UserError(str(e)) from None
    for item in report["files"]:
        c = item.get("check")
        figures = "" if c is None else " ".join(f"{k} {c[k]['max_abs']:.2e}" for k in ("ort", "ov")
                                                 if "max_abs" in c[k])
        say(f"wrote {args.output / item['file']}" + (f" (max abs difference from torch: {figures})" if c else ""))
    return 0
