"""Evaluation harness: run methods through the real command line and score them against ground truth.

For every scene of a synthetic preset and every method, ``vs-hdrvid reconstruct`` runs in-process
into an EXR folder; the outputs are scored per frame (PSNR-mu, PSNR-L, SSIM-mu) and per scene
(ColorVideoVDP JOD, temporal warping error with the ground-truth flows), then averaged per exposure
of the reference frame (low/high or low/mid/high) and overall, split by scene group, as in Chen et
al. (ICCV 2021) Tables 2-3 and DeAltHDR Table 2.

Convention: frame ranges are half open ``[A, B)``; metric definitions are those of
:mod:`vs_hdrvid.ops.metrics` and :mod:`vs_hdrvid.eval.cvvdp`.
"""
from __future__ import annotations

import math
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from vs_hdrvid.eval.report import write_crops, write_json, write_markdown
from vs_hdrvid.eval.scenes import Scene, list_scenes, load_scene, read_bwd_flows, read_gt, read_ldr
from vs_hdrvid.ops.exr import read_exr
from vs_hdrvid.ops.metrics import psnr_l, psnr_mu, ssim_mu, temporal_warping_error

__all__ = ["METHODS", "FRAME_METRICS", "method_argv", "cli_runner", "parse_frames", "aggregate", "evaluate"]

#: Method spec -> ``vs-hdrvid reconstruct`` arguments. The one table of method names.
METHODS: dict[str, tuple[str, ...]] = {
    "reference": ("--method", "reference"),
    "merge": ("--method", "merge"),
    "merge+dis": ("--method", "merge", "--flow", "dis"),
    "merge+farneback": ("--method", "merge", "--flow", "farneback"),
    "merge+dis+fuse": ("--method", "merge", "--flow", "dis", "--temporal-fuse"),
    "coarse": ("--method", "coarse"),
    "refine": ("--method", "refine"),
    "dealthdr": ("--method", "dealthdr"),
}
#: ``dealthdr@s<S>`` runs DeAltHDR at sensitivity ``S`` (a number or ``inf``), e.g. ``dealthdr@s0``;
#: ``@fp32`` after a network method runs its exact float32 path, e.g. ``coarse@fp32``; ``@compile``
#: its ``torch.compile`` path (``@nocompile`` the eager one), whatever the clip's length.
_SENSITIVITY = re.compile(r"s(inf|\d+(?:\.\d*)?)")
NETWORKS = ("coarse", "refine", "dealthdr")

#: Per-frame metrics, in report order.
FRAME_METRICS: tuple[str, ...] = ("psnr_mu", "psnr_l", "ssim_mu")

Runner = Callable[[list[str]], int]


def method_argv(method: str) -> list[str]:
    """Command-line arguments of a method spec; raises ``ValueError`` for unknown specs."""
    base, *mods = method.split("@")
    if base not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}, dealthdr@s<S>, <network>@fp32, "
                         "<network>@compile")
    argv = list(METHODS[base])
    for mod in mods:
        at = _SENSITIVITY.fullmatch(mod)
        if at and base == "dealthdr":
            argv += ["--s", at.group(1)]
        elif mod == "fp32" and base in NETWORKS:
            argv.append("--fp32")
        elif mod in ("compile", "nocompile") and base in NETWORKS:
            argv.append("--compile" if mod == "compile" else "--no-compile")
        else:
            raise ValueError(f"unknown modifier @{mod} in {method!r}: dealthdr takes @s<S>, the networks "
                             f"({', '.join(NETWORKS)}) @fp32, @compile and @nocompile")
    return argv


def cli_runner(argv: list[str]) -> int:
    """Run ``vs-hdrvid`` in-process (``vs_hdrvid.cli.main``) and return its exit status."""
    from vs_hdrvid.cli import main

    try:
        return int(main(argv) or 0)
    except SystemExit as e:  # argparse errors
        return e.code if isinstance(e.code, int) else 1


def parse_frames(frames: str | Sequence[int] | None, num_frames: int) -> tuple[int, int]:
    """Half-open frame range ``[A, B)`` from ``"A:B"`` (either side may be empty) or ``(A, B)``."""
    if frames is None:
        return 0, num_frames
    if isinstance(frames, str):
        a, sep, b = frames.partition(":")
        if not sep:
            raise ValueError(f"frames must look like A:B, got {frames!r}")
        lo, hi = int(a) if a else 0, int(b) if b else num_frames
    else:
        lo, hi = (int(v) for v in frames)
    lo, hi = max(lo, 0), min(hi, num_frames)
    if hi - lo < 1:
        raise ValueError(f"empty frame range {frames!r} for a scene of {num_frames} frames")
    return lo, hi


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[eval] {msg}", file=sys.stderr, flush=True)


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def _load_outputs(folder: Path, indices: list[int]) -> Tensor:
    """Read the method's EXRs, named by source frame number or numbered from 0."""
    for names in (indices, range(len(indices))):
        files = [folder / f"{i:05d}.exr" for i in names]
        if all(f.is_file() for f in files):
            return torch.stack([torch.from_numpy(read_exr(f)).permute(2, 0, 1) for f in files])
    found = len(list(folder.glob("*.exr"))) if folder.is_dir() else 0
    raise FileNotFoundError(f"{folder}: expected {len(indices)} EXR frames, found {found}")


def _frame_metrics(pred: Tensor, gt: Tensor, h_sat: float, chunk: int = 8) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in FRAME_METRICS}
    with torch.no_grad():
        for s in range(0, pred.shape[0], chunk):
            p, g = pred[s:s + chunk], gt[s:s + chunk]  # (b, 3, H, W)
            out["psnr_mu"] += psnr_mu(p, g, h_sat).tolist()
            out["psnr_l"] += psnr_l(p, g, h_sat).tolist()
            out["ssim_mu"] += ssim_mu(p, g, h_sat).tolist()
    return out


def _crop_frames(scene: Scene, lo: int, hi: int) -> list[int]:
    """One frame per exposure label (low first), the one nearest the middle of ``[lo, hi)``."""
    mid = (lo + hi - 1) / 2
    picks: dict[str, int] = {}
    for i in sorted(range(lo, hi), key=lambda i: abs(i - mid)):
        picks.setdefault(scene.labels[i], i)
    order = {e: k for k, e in enumerate(sorted(set(scene.pattern)))}
    return sorted(picks.values(), key=lambda i: order[scene.exposures[i]])


def _run_method(scene: Scene, method: str, out_folder: Path, lo: int, hi: int, runner: Runner,
                device: str, weights: str | None = None) -> tuple[float, str | None]:
    if out_folder.exists():
        shutil.rmtree(out_folder)  # never score stale frames
    out_folder.mkdir(parents=True)
    argv = ["reconstruct", scene.ldr_pattern(), "-o", str(out_folder / "%05d.exr"),
            "--exposures=" + ",".join(f"{e:g}" for e in scene.pattern), *method_argv(method),
            "--device", device, "--quiet"]  # the harness shows its own progress
    if weights:
        argv += ["--weights", str(weights)]
    if (lo, hi) != (0, scene.num_frames):
        argv += ["--frames", f"{lo}:{hi}"]
    t0 = time.perf_counter()
    try:
        rc = runner(argv)
        error = None if rc == 0 else f"exit status {rc}: vs-hdrvid {' '.join(argv)}"
    except Exception as e:  # a crashing method is a result to report, not the end of the run
        error = f"{type(e).__name__}: {e}"
    return time.perf_counter() - t0, error


def aggregate(scene_results: dict[str, dict], methods: list[str]) -> dict[str, dict]:
    """Average scene results per scene group, method and exposure label.

    Frame metrics are averaged over all frames of the group with the given label (``"all"``: every
    frame); JOD and TWE are averaged over scenes; seconds per frame is total time over total frames.
    Failed runs are left out and counted.

    Args:
        scene_results: ``results["scenes"]`` as :func:`evaluate` builds it.
        methods: method specs, in report order.

    Returns:
        ``{group: {"scenes": [...], "labels": [...], "gt_twe": float|None,
        "methods": {method: {"psnr_mu": {label: mean, "all": mean}, ..., "jod", "twe",
        "seconds_per_frame", "frames", "failed"}}}}``.
    """
    label_order = ["low", "mid", "high"]
    groups: dict[str, dict] = {}
    for sid, sr in scene_results.items():
        for g in sr["groups"]:
            groups.setdefault(g, {"scenes": []})["scenes"].append(sid)
    out: dict[str, dict] = {}
    for g, info in groups.items():
        sids = info["scenes"]
        labels = sorted({lab for s in sids for lab in scene_results[s]["labels"]},
                        key=lambda x: (label_order.index(x) if x in label_order else 9, x))
        entry = {"scenes": sids, "labels": labels,
                 "gt_twe": _mean([scene_results[s].get("gt_twe") for s in sids]), "methods": {}}
        for m in methods:
            runs = [scene_results[s]["methods"].get(m) for s in sids]
            ok = [r for r in runs if r is not None and r["status"] == "ok"]
            frames = [f for r in ok for f in r["frames"]]
            rec: dict = {"frames": len(frames), "failed": len(runs) - len(ok)}
            for k in FRAME_METRICS:
                rec[k] = {lab: _mean([f[k] for f in frames if f["exposure"] == lab]) for lab in labels}
                rec[k]["all"] = _mean([f[k] for f in frames])
            rec["jod"] = _mean([r.get("jod") for r in ok])
            rec["twe"] = _mean([r.get("twe") for r in ok])
            secs = sum(r["seconds"] for r in ok)
            rec["seconds_per_frame"] = secs / len(frames) if frames else None
            entry["methods"][m] = rec
        out[g] = entry
    return out


def evaluate(root: str | Path, preset: str, methods: list[str], out_dir: str | Path,
             scenes: int | Sequence[str] | None = None, frames: str | Sequence[int] | None = None,
             cvvdp: bool = True, progress: bool = True, *, runner: Runner | None = None,
             device: str = "auto", keep_outputs: bool = True, crop_rows: int = 3,
             cvvdp_max_side: int | None = None, weights: str | None = None) -> dict:
    """Run every method on every scene through the command line and score the outputs.

    Args:
        root: dataset root (``<root>/<preset>/<scene_id>/...``).
        preset: dataset preset, e.g. ``"test"``.
        methods: method specs, keys of :data:`METHODS` (``"merge+dis"`` -> ``--method merge --flow dis``).
        out_dir: where ``results.json``, ``results.md``, ``crops.png`` and ``outputs/`` go.
        scenes: ``None`` = all scenes, an int = the first N, or a list of scene ids.
        frames: half-open frame range ``"A:B"`` or ``(A, B)`` per scene; ``None`` = all frames.
        cvvdp: compute ColorVideoVDP JOD per scene (needs the ``cvvdp`` package).
        progress: print progress lines to stderr.
        runner: callable taking ``vs-hdrvid`` argv and returning an exit status; default
            :func:`cli_runner` (the real command line, in-process).
        device: ``--device`` passed to every run.
        keep_outputs: keep the EXR outputs under ``out_dir/outputs/<scene>/<method>/``.
        crop_rows: frames shown in ``crops.png`` (one per exposure, scene after scene).
        cvvdp_max_side: downscale for JOD (speed); ``None`` = full resolution.
        weights: ``--weights`` folder for the network methods (``None``: the shipped weights).

    Returns:
        the results dictionary also written to ``results.json``.

    Raises:
        ValueError: an unknown method spec or an empty frame range.
        FileNotFoundError: no dataset at ``root/preset``.
    """
    for m in methods:
        method_argv(m)  # fail before any work on a typo
    runner = runner or cli_runner
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = list_scenes(root, preset)
    if isinstance(scenes, int):
        ids = ids[:scenes]
    elif scenes is not None:
        missing = [s for s in scenes if s not in ids]
        if missing:
            raise FileNotFoundError(f"scenes not found in {Path(root) / preset}: {missing}")
        ids = list(scenes)
    if cvvdp:
        from vs_hdrvid.eval.cvvdp import DEFAULT_PEAK_NITS, jod
    results: dict = {
        "root": str(root), "preset": preset, "methods": list(methods),
        "method_args": {m: method_argv(m) for m in methods}, "frames": frames, "device": device, "weights": weights,
        "cvvdp": {"display": "standard_hdr_pq", "peak_nits": DEFAULT_PEAK_NITS,
                  "max_side": cvvdp_max_side} if cvvdp else None,
        "outputs": str(out_dir / "outputs") if keep_outputs else None,
        "scenes": {}, "failures": [],
    }
    crops: list[dict] = []
    for n, sid in enumerate(ids):
        scene = load_scene(root, preset, sid)
        lo, hi = parse_frames(frames, scene.num_frames)
        idx = list(range(lo, hi))
        gt = read_gt(scene, idx)  # (T, 3, H, W)
        flows = read_bwd_flows(scene, idx) if len(idx) > 1 else None
        gt_twe = temporal_warping_error(gt, *flows, scene.h_sat).item() if flows else None
        sres = {"groups": scene.groups, "pattern": scene.pattern, "h_sat": scene.h_sat,
                "frame_range": [lo, hi], "labels": sorted(set(scene.labels[i] for i in idx)),
                "meta": {k: scene.meta.get(k) for k in ("degradation", "motion", "width", "height", "fps")},
                "gt_twe": gt_twe, "methods": {}}
        results["scenes"][sid] = sres
        want = _crop_frames(scene, lo, hi)[: max(crop_rows - len(crops), 0)]
        rows = [{"scene": sid, "frame": i, "label": scene.labels[i], "h_sat": scene.h_sat,
                 "gt": gt[i - lo], "outputs": {},
                 "ldr": [(j, scene.exposures[j], read_ldr(scene, j))
                         for j in (i - 1, i, i + 1) if 0 <= j < scene.num_frames]}
                for i in want]
        crops += rows
        _log(progress, f"scene {n + 1}/{len(ids)} {sid}: frames {lo}:{hi}, EV {scene.pattern}")
        for m in methods:
            folder = out_dir / "outputs" / sid / m.replace("/", "_")
            secs, error = _run_method(scene, m, folder, lo, hi, runner, device, weights)
            rec: dict = {"status": "ok", "seconds": secs, "seconds_per_frame": secs / len(idx)}
            try:
                if error is not None:
                    raise RuntimeError(error)
                pred = _load_outputs(folder, idx)
                if pred.shape != gt.shape:
                    raise ValueError(f"output frames {tuple(pred.shape)} differ from ground truth {tuple(gt.shape)}")
            except (OSError, RuntimeError, ValueError) as e:
                rec.update(status="failed", error=str(e))
                results["failures"].append({"scene": sid, "method": m, "error": str(e)})
                sres["methods"][m] = rec
                _log(progress, f"  {m}: FAILED ({e})")
                continue
            fm = _frame_metrics(pred, gt, scene.h_sat)
            rec["frames"] = [{"frame": i, "ev": scene.exposures[i], "exposure": scene.labels[i],
                              **{k: fm[k][j] for k in FRAME_METRICS}} for j, i in enumerate(idx)]
            rec["twe"] = temporal_warping_error(pred, *flows, scene.h_sat).item() if flows else None
            if cvvdp:
                rec["jod"] = jod(pred, gt, scene.h_sat, fps=float(scene.meta.get("fps") or 30),
                                 peak_nits=DEFAULT_PEAK_NITS, max_side=cvvdp_max_side)
            for row in rows:
                row["outputs"][m] = pred[row["frame"] - lo]
            sres["methods"][m] = rec
            if not keep_outputs:
                shutil.rmtree(folder, ignore_errors=True)
            summary = ", ".join(f"{k} {sum(fm[k]) / len(fm[k]):.3f}" for k in FRAME_METRICS)
            extra = f", JOD {rec['jod']:.3f}" if cvvdp else ""
            _log(progress, f"  {m}: {secs:.1f} s ({rec['seconds_per_frame']:.3f} s/frame), {summary}{extra}")
    if not keep_outputs:
        shutil.rmtree(out_dir / "outputs", ignore_errors=True)
    results["groups"] = aggregate(results["scenes"], list(methods))
    write_json(results, out_dir / "results.json")
    write_markdown(results, out_dir / "results.md")
    if crops:
        write_crops(crops, list(methods), out_dir / "crops.png")
    _log(progress, f"wrote {out_dir / 'results.json'}, results.md, crops.png")
    return results
