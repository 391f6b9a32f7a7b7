"""Evaluation reports: ``results.json``, Markdown tables per scene group and a crop comparison figure.

Convention: the Markdown tables follow Chen et al. (ICCV 2021) Table 3: rows are methods, columns
a metric per exposure of the reference frame (low/mid/high) and over all frames; JOD and TWE are
per scene, averaged over the group's scenes.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from vs_hdrvid.outputs import atomic_path
from vs_hdrvid.ops.metrics import mu_law_normalised

__all__ = ["write_json", "write_markdown", "write_crops", "write_figures", "GROUP_ORDER"]

#: Order of the scene groups in the report.
GROUP_ORDER = ("all", "2-exp", "3-exp", "clean", "day", "night", "motion small", "motion medium",
               "motion large")

_METRIC_NAMES = {"psnr_mu": "PSNR-μ", "psnr_l": "PSNR-L", "ssim_mu": "SSIM-μ"}


def _sanitise(x):
    """JSON-safe copy: non-finite floats become ``null``, tuples lists, paths strings."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _sanitise(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_sanitise(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def write_figures(res: dict, path: Path) -> None:
    """A benchmark's ``--json``: ``res`` as indented JSON at ``path`` (folders made), said on stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    print(f"wrote {path}", file=sys.stderr)


def write_json(results: dict, path: str | Path) -> None:
    """Write ``results`` as JSON (non-finite numbers, e.g. the PSNR of identical frames, as ``null``)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(_sanitise(results), indent=1))


def _fmt(x: float | None, digits: int, scale: float = 1.0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "inf"
    return f"{x * scale:.{digits}f}"


def _group_key(name: str) -> tuple[int, str]:
    return (GROUP_ORDER.index(name) if name in GROUP_ORDER else len(GROUP_ORDER), name)


def _table(group: dict, methods: list[str]) -> list[str]:
    labels = group["labels"] + ["all"]
    head = [f"{_METRIC_NAMES[k]} {lab}" for k in _METRIC_NAMES for lab in labels]
    head += ["JOD", "TWE×10³", "s/frame"]
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for m in methods:
        r = group["methods"][m]
        cells = [_fmt(r[k].get(lab), 4 if k == "ssim_mu" else 2) for k in _METRIC_NAMES for lab in labels]
        cells += [_fmt(r["jod"], 3), _fmt(r["twe"], 3, 1e3), _fmt(r["seconds_per_frame"], 3)]
        name = m + (f" ({r['failed']} failed)" if r["failed"] else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    gt = ["–"] * (len(head) - 2) + [_fmt(group["gt_twe"], 3, 1e3), "–"]
    lines.append("| ground truth | " + " | ".join(gt) + " |")
    return lines


def write_markdown(results: dict, path: str | Path) -> None:
    """Write one Markdown table per scene group (rows = methods) to ``path``."""
    methods = results["methods"]
    out = [f"# Evaluation: preset `{results['preset']}`", "",
           f"{len(results['scenes'])} scenes; methods: {', '.join(methods)}.", "",
           "PSNR-μ / SSIM-μ on μ-law (μ=5000) of clip(H/H_sat, 0, 1), H_sat = 1/2^min(EV); "
           "PSNR-L on clip(H/H_sat, 0, 1); columns low/mid/high average frames by the exposure of "
           "the reference frame, `all` every frame. JOD: ColorVideoVDP per scene"
           + (f" ({results['cvvdp']['display']}, H_sat at {results['cvvdp']['peak_nits']:g} cd/m²)"
              if results.get("cvvdp") else " (not computed)")
           + ". TWE: mean masked squared μ-law difference to the previous output frame warped with "
             "the ground-truth flow (×10³; the ground-truth row is the floor). s/frame: wall time "
             "of the whole command over output frames.", ""]
    for name in sorted(results["groups"], key=_group_key):
        g = results["groups"][name]
        out += [f"## {name} ({len(g['scenes'])} scenes)", "", *_table(g, methods), ""]
    if results.get("failures"):
        out += ["## Failures", ""] + [f"- {f['scene']} / {f['method']}: {f['error']}"
                                      for f in results["failures"]] + [""]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(out))


def _crop_box(row: dict, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` square where the methods' mu-law errors are largest."""
    gt = row["gt"]
    h, w = gt.shape[-2:]
    if not row["outputs"]:
        return (h - size) // 2, (w - size) // 2
    ref = mu_law_normalised(gt, row["h_sat"])
    err = sum((mu_law_normalised(o, row["h_sat"]) - ref).abs().mean(0) for o in row["outputs"].values())
    box = torch.nn.functional.avg_pool2d(err[None, None], size, stride=1)[0, 0]  # (h-size+1, w-size+1)
    k = int(torch.argmax(box))
    return k // box.shape[1], k % box.shape[1]


def write_crops(rows: list[dict], methods: list[str], path: str | Path, size: int = 160) -> None:
    """Figure of same-position crops: LDR inputs, each method and the ground truth, per row.

    HDR images are tonemapped with the metrics' mu-law of ``clip(H / H_sat, 0, 1)``; LDR inputs are
    shown as stored (display encoded). The crop of each row is where the methods' errors are largest.

    Args:
        rows: dicts with ``scene``, ``frame``, ``label``, ``h_sat``, ``gt`` (3, H, W),
            ``outputs`` {method: (3, H, W)} and ``ldr`` [(index, EV, (H, W, 3) array)].
        methods: column order of the methods (missing outputs are left blank).
        path: PNG to write.
        size: crop side in pixels (clamped to the frame).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_ldr = max(len(r["ldr"]) for r in rows)
    cols = n_ldr + len(methods) + 1
    fig = Figure(figsize=(1.9 * cols, 2.0 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, row in enumerate(rows):
        h, w = row["gt"].shape[-2:]
        s = min(size, h, w)
        y, x = _crop_box(row, s)

        def show(ax, img, title):
            ax.imshow(np.clip(img[y:y + s, x:x + s], 0, 1), interpolation="nearest")
            ax.set_title(title, fontsize=7)

        def tonemap(t):
            return mu_law_normalised(t, row["h_sat"]).permute(1, 2, 0).numpy()

        for c, (j, ev, img) in enumerate(row["ldr"]):
            show(axes[r][c], img, f"LDR {j} (EV {ev:+g})")
        for c, m in enumerate(methods):
            if m in row["outputs"]:
                show(axes[r][n_ldr + c], tonemap(row["outputs"][m]), m)
        show(axes[r][-1], tonemap(row["gt"]), "ground truth")
        axes[r][0].set_ylabel(f"{row['scene']}\nframe {row['frame']} ({row['label']})", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
