"""Reading synthetic evaluation scenes: LDR inputs, exposures, ground-truth HDR and flows.

Layout (written by ``vs-hdrvid synth``)::

    <root>/<preset>/<scene_id>/
      ldr/00000.png ...   8/16-bit gamma-encoded LDR frames
      exposures.txt       one EV per line, line i = frame i
      gt/00000.exr ...    ground-truth linear HDR on the H = f^-1(L) / 2**EV scale
      flow/00000.npz ...  fwd/bwd (2, H, W) flows t->t+1 / t->t-1, occ_fwd/occ_bwd (H, W) uint8
      meta.json           preset, scene, width, height, frames, exposures, exposure_count,
                          degradation, motion, ...
    <root>/<preset>/index.json

Convention: frames are read as ``(T, 3, H, W)`` float32 tensors; flows as ``(T-1, 2, H, W)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vs_hdrvid.ops.exr import read_exr
from vs_hdrvid.ops.images import read_image
from vs_hdrvid.synth.dataset import scene_folders

__all__ = ["Scene", "exposure_labels", "list_scenes", "load_scene", "read_ldr", "read_gt", "read_bwd_flows"]


def exposure_labels(pattern: list[float]) -> dict[float, str]:
    """Name each EV of a pattern by its rank: low/high (2 exposures), low/mid/high (3), ``ev<k>`` else."""
    ranked = sorted(set(float(e) for e in pattern))
    names = {1: ["single"], 2: ["low", "high"], 3: ["low", "mid", "high"]}.get(
        len(ranked), [f"ev{k}" for k in range(len(ranked))])
    return dict(zip(ranked, names))


@dataclass
class Scene:
    """One evaluation scene: paths, per-frame exposures and its grouping attributes."""

    path: Path
    scene_id: str
    exposures: list[float]  # per frame, from exposures.txt
    pattern: list[float]  # the repeating EV pattern starting at frame 0
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.exposures)

    @property
    def h_sat(self) -> float:
        """Saturation radiance ``1 / 2**min(EV)`` of the pattern."""
        return 1.0 / 2.0 ** min(self.pattern)

    @property
    def labels(self) -> list[str]:
        """Exposure label (low/mid/high) of every frame."""
        names = exposure_labels(self.pattern)
        return [names[float(e)] for e in self.exposures]

    @property
    def groups(self) -> list[str]:
        """Scene groups this scene belongs to, e.g. ``["all", "2-exp", "clean", "motion small"]``."""
        out = ["all", f"{len(self.pattern)}-exp"]
        if self.meta.get("degradation"):
            out.append(str(self.meta["degradation"]))
        if self.meta.get("motion"):
            out.append(f"motion {self.meta['motion']}")
        return out

    def ldr_pattern(self) -> str:
        """printf-style pattern of the LDR inputs, as the command line takes it."""
        return str(self.path / "ldr" / "%05d.png")


def list_scenes(root: str | Path, preset: str) -> list[str]:
    """Scene ids of a preset, in ``index.json`` order (:func:`~vs_hdrvid.synth.dataset.scene_folders`)."""
    base = Path(root) / preset
    if not base.is_dir():
        raise FileNotFoundError(f"no dataset at {base}: run `vs-hdrvid synth --preset {preset}` first")
    return [p.name for p in scene_folders(base)]


def load_scene(root: str | Path, preset: str, scene_id: str) -> Scene:
    """Read ``meta.json`` and ``exposures.txt`` of one scene.

    Raises:
        FileNotFoundError: the scene or its exposures are missing.
        ValueError: ``exposures.txt`` disagrees with the pattern in ``meta.json``.
    """
    path = Path(root) / preset / scene_id
    meta_file, exp_file = path / "meta.json", path / "exposures.txt"
    if not meta_file.is_file() or not exp_file.is_file():
        raise FileNotFoundError(f"scene {path} lacks meta.json or exposures.txt")
    meta = json.loads(meta_file.read_text())
    exposures = [float(x) for x in exp_file.read_text().split()]
    count = int(meta.get("exposure_count") or len(meta.get("exposures", [])) or 2)
    pattern = exposures[:count]  # the command line's --exposures starts at frame 0
    if len(pattern) < count or any(exposures[i] != pattern[i % len(pattern)] for i in range(len(exposures))):
        raise ValueError(f"{exp_file}: per-frame EVs do not repeat the pattern {pattern} from frame 0")
    return Scene(path=path, scene_id=scene_id, exposures=exposures, pattern=pattern, meta=meta)


def read_ldr(scene: Scene, index: int) -> np.ndarray:
    """LDR frame ``index`` as ``(H, W, 3)`` float32 in ``[0, 1]`` (display encoded)."""
    f = scene.path / "ldr" / f"{index:05d}.png"
    try:
        img = read_image(f)
    except OSError as e:
        raise FileNotFoundError(str(e)) from None
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    return img.astype(np.float32) / scale


def read_gt(scene: Scene, indices: list[int]) -> Tensor:
    """Ground-truth HDR frames as ``(T, 3, H, W)`` float32."""
    return torch.stack([torch.from_numpy(read_exr(scene.path / "gt" / f"{i:05d}.exr")).permute(2, 0, 1)
                        for i in indices])


def read_bwd_flows(scene: Scene, indices: list[int]) -> tuple[Tensor, Tensor] | None:
    """Ground-truth backward flows and occlusions for consecutive frames ``indices[1:]``.

    Returns:
        ``(flows (T-1, 2, H, W), occ (T-1, H, W) uint8)``; ``None`` when any file or key is missing.
    """
    flows, occs = [], []
    for i in indices[1:]:
        f = scene.path / "flow" / f"{i:05d}.npz"
        if not f.is_file():
            return None
        with np.load(f) as z:
            if "bwd" not in z:
                return None
            flows.append(torch.from_numpy(np.asarray(z["bwd"], dtype=np.float32)))
            occ = z["occ_bwd"] if "occ_bwd" in z else np.zeros(z["bwd"].shape[1:], np.uint8)
            occs.append(torch.from_numpy(np.asarray(occ, dtype=np.uint8)))
    if not flows:
        return None
    return torch.stack(flows), torch.stack(occs)
