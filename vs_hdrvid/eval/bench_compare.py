"""``vs-hdrvid bench --compare REV``: the weight-free chain of revision REV and of this tree, side by side.

REV's ``vs_hdrvid`` package is extracted from this checkout's git history (``git archive``) into a
temporary folder. Each measurement runs ``_chain_worker.py`` in a fresh process, alternately with
REV's package and with the package in use, so both are timed the same way, in the same minutes, on
the same (shared, noisy) machine; the ratio of the two medians is what one bench run reports.
"""
from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import vs_hdrvid

__all__ = ["compare_chains", "extract_revision"]

WORKER = Path(__file__).with_name("_chain_worker.py")


def extract_revision(rev: str, into: Path) -> Path:
    """Write revision ``rev``'s ``vs_hdrvid`` package under ``into``; the folder to put on ``sys.path``.

    Raises:
        ValueError: the package in use is not in a git checkout, or ``rev`` is not a revision of it.
    """
    repo = Path(vs_hdrvid.__file__).resolve().parents[1]
    try:
        tar = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", rev, "vs_hdrvid"],
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        err = getattr(e, "stderr", b"") or b""
        raise ValueError(f"cannot take vs_hdrvid at {rev!r} from {repo} (a git checkout is needed): "
                         f"{err.decode(errors='replace').strip() or e}") from None
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return into


def _run(root: Path, width: int, height: int, evs: list[float], frames: int) -> dict:
    """One worker run: ``{"fps", "cpu_ms_per_frame"}`` of the chain with ``vs_hdrvid`` from ``root``."""
    proc = subprocess.run([sys.executable, str(WORKER), str(root), str(width), str(height),
                           ",".join(str(e) for e in evs), str(frames)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the chain from {root} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_chains(rev: str, sizes: list[tuple[int, int]], patterns: list[list[float]], frames: int,
                   repeats: int = 2) -> dict:
    """Frames/s (and CPU ms per frame, all threads) of ``linearize -> align -> merge -> tonemap pq``
    with ``vs_hdrvid`` at ``rev`` ("before") and as it is ("after"), ``repeats`` alternating runs each.

    Returns:
        ``{"revision", "repeats", "sizes": {"WxH": {"N-exposure": {"before": {"fps": [...],
        "cpu_ms_per_frame": [...], "cores_used": [...]}, "after": {...}, "fps_ratio", "cpu_ratio"}}}}``;
        the ratios are of the medians (after / before for frames/s, before / after for CPU time: above
        1 is faster). On a shared machine the frame rate follows the cores other jobs leave free;
        the CPU time per frame is the work, and ``cores_used`` says how many cores the run had.
    """
    current = Path(vs_hdrvid.__file__).resolve().parents[1]
    out: dict = {"revision": rev, "repeats": repeats, "frames": frames, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="vs-hdrvid-bench-") as tmp:
        before = extract_revision(rev, Path(tmp))
        for w, h in sizes:
            per_size = out["sizes"][f"{w}x{h}"] = {}
            for evs in patterns:
                runs: dict[str, dict[str, list[float]]] = {k: {"fps": [], "cpu_ms_per_frame": [], "cores_used": []}
                                                           for k in ("before", "after")}
                for _ in range(repeats):
                    for name, root in (("before", before), ("after", current)):
                        r = _run(root, w, h, evs, frames)
                        for key in runs[name]:
                            runs[name][key].append(r[key])
                med = {k: {m: statistics.median(v[m]) for m in v} for k, v in runs.items()}
                per_size[f"{len(evs)}-exposure"] = {
                    **runs, "fps_ratio": med["after"]["fps"] / med["before"]["fps"],
                    "cpu_ratio": med["before"]["cpu_ms_per_frame"] / med["after"]["cpu_ms_per_frame"]}
    return out
