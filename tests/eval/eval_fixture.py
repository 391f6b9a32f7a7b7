"""A tiny synthetic dataset in the `vs-hdrvid synth` layout, and a fake `vs-hdrvid` runner."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from vs_hdrvid.ops.exr import read_exr, write_exr

H, W = 48, 64
#: normalised offset added by the fake "reference" method per exposure label -> PSNR-L 40/30/20 dB
OFFSETS = {"low": 0.01, "mid": 10 ** -1.5, "high": 0.1}


def make_scene(root: Path, preset: str, scene_id: str, pattern: list[float], frames: int = 6,
               degradation: str = "clean", motion: str = "small", seed: int = 0) -> Path:
    """Content moving right by 1 px per frame; normalised radiance in [0.02, 0.8]."""
    d = Path(root) / preset / scene_id
    for sub in ("ldr", "gt", "flow"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    h_sat = 1.0 / 2.0 ** min(pattern)
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((H, W, 3)).astype(np.float32), (0, 0), 1.5)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    base = ((0.02 + 0.78 * tex) * h_sat).astype(np.float32)
    exposures = [pattern[t % len(pattern)] for t in range(frames)]
    for t, ev in enumerate(exposures):
        gt = np.roll(base, t, axis=1)
        write_exr(d / "gt" / f"{t:05d}.exr", gt)
        ldr = np.clip(gt * 2.0**ev, 0, 1) ** (1 / 2.2)
        cv2.imwrite(str(d / "ldr" / f"{t:05d}.png"), np.round(ldr[..., ::-1] * 255).astype(np.uint8))
        flow = {}
        if t > 0:
            flow["bwd"] = np.stack([np.full((H, W), -1.0), np.zeros((H, W))]).astype(np.float32)
            flow["occ_bwd"] = np.zeros((H, W), np.uint8)
            flow["occ_bwd"][:, 0] = 1
        if t < frames - 1:
            flow["fwd"] = np.stack([np.full((H, W), 1.0), np.zeros((H, W))]).astype(np.float32)
            flow["occ_fwd"] = np.zeros((H, W), np.uint8)
            flow["occ_fwd"][:, -1] = 1
        np.savez(d / "flow" / f"{t:05d}.npz", **flow)
    (d / "exposures.txt").write_text("".join(f"{e}\n" for e in exposures))
    meta = {"preset": preset, "scene": scene_id, "width": W, "height": H, "frames": frames,
            "exposures": pattern, "exposure_count": len(pattern), "degradation": degradation,
            "motion": motion, "fps": 30}
    (d / "meta.json").write_text(json.dumps(meta))
    index = Path(root) / preset / "index.json"
    ids = json.loads(index.read_text())["scenes"] if index.is_file() else []
    index.write_text(json.dumps({"scenes": ids + [scene_id]}))
    return d


def _arg(argv: list[str], name: str, default=None):
    for k, a in enumerate(argv):
        if a == name:
            return argv[k + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


class FakeRunner:
    """Stands in for `vs-hdrvid reconstruct`: writes outputs with known errors and records argv.

    reference: ground truth + OFFSETS[label] * H_sat; merge: exact ground truth; merge --flow dis:
    exits with status 3. With --frames A:B outputs are numbered from 0, otherwise by source frame.
    """

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> int:
        self.calls.append(list(argv))
        scene = Path(argv[1]).parent.parent
        out = argv[argv.index("-o") + 1]
        pattern = [float(e) for e in _arg(argv, "--exposures").split(",")]
        method, flow = _arg(argv, "--method"), _arg(argv, "--flow", "none")
        if flow == "dis":
            return 3
        labels = {e: n for e, n in zip(sorted(pattern), ["low", "high"] if len(pattern) == 2
                                       else ["low", "mid", "high"])}
        h_sat = 1.0 / 2.0 ** min(pattern)
        n = len((scene / "exposures.txt").read_text().split())
        rng = _arg(argv, "--frames")
        lo, hi = (int(v) for v in rng.split(":")) if rng else (0, n)
        for k, t in enumerate(range(lo, hi)):
            gt = read_exr(scene / "gt" / f"{t:05d}.exr")
            if method == "reference":
                gt = gt + OFFSETS[labels[pattern[t % len(pattern)]]] * h_sat
            write_exr(out % (k if rng else t), gt, half=False)
        return 0
