"""The table of a set of training runs (a size sweep, an ablation), from their run folders.

Each row is one run: its network's parameters, the steps it made, its throughput and the
validation at its last step and at its best (``val_psnr_mu``), with the start (step 0) beside it.
It reads ``log.jsonl`` and ``ckpt.pt`` only, so it works on runs that shipped nothing.

Example::

    python -m vs_hdrvid.train.sweep_table runs/dealthdr-sweep-* runs/dealthdr-nolin-tiny
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["run_row", "markdown", "main"]

#: (column title, validation key): the PSNRs the DeAltHDR stage validates.
COLUMNS = (("val PSNR-mu s=15", "val_psnr_mu"), ("s=0", "val_psnr_mu_s0"), ("s=inf", "val_psnr_mu_sinf"),
           ("PSNR-L", "val_psnr_l"))


def run_row(run_dir: str | Path) -> dict:
    """One run's figures: ``name``, ``parameters``, ``steps``, ``minutes``, ``steps_per_s``,
    ``start`` (the validation at step 0), ``last`` and ``best`` (by ``val_psnr_mu``)."""
    import torch

    from vs_hdrvid import weights as W

    run_dir = Path(run_dir)
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    vals = [r["val"] for r in records if "val" in r]
    steps = [r for r in records if "loss" in r]
    if not vals or not steps:
        raise ValueError(f"{run_dir}: no validation or no training step in log.jsonl")
    ckpt = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=False)
    params = sum(sum(p.numel() for p in W.build_network(name, cfg).parameters())
                 for name, cfg in ckpt["net_configs"].items() if name in ckpt["nets"])
    start = next((v for v in vals if v["step"] == 0), None)
    return {"name": run_dir.name, "parameters": params, "steps": max(steps[-1]["step"], vals[-1]["step"]),
            "minutes": steps[-1]["wall_s"] / 60, "steps_per_s": steps[-1]["steps_per_s"], "start": start,
            "last": vals[-1], "best": max(vals, key=lambda v: v["val_psnr_mu"])}


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (last validation; best step and PSNR-mu; start)."""
    head = ["run", "parameters", "steps", "min", "steps/s", *(c for c, _ in COLUMNS), "best (step)", "start"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        last, best, start = r["last"], r["best"], r["start"]
        cells = [r["name"], f"{r['parameters'] / 1e6:.2f} M", str(r["steps"]), f"{r['minutes']:.1f}",
                 f"{r['steps_per_s']:.2f}", *(f"{last[k]:.2f}" if k in last else "-" for _, k in COLUMNS),
                 f"{best['val_psnr_mu']:.2f} ({best['step']})",
                 f"{start['val_psnr_mu']:.2f}" if start else "-"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    dirs = sys.argv[1:] if argv is None else argv
    if not dirs:
        print("usage: python -m vs_hdrvid.train.sweep_table RUN_DIR...", file=sys.stderr)
        return 2
    print(markdown([run_row(d) for d in dirs]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
