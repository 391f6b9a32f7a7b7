"""Training and validation windows read from the synthetic data layout.

Layout (written by ``vs-hdrvid synth``)::

    <root>/<preset>/<scene_id>/ldr/00000.png  exposures.txt  gt/00000.exr  flow/00000.npz  meta.json
    <root>/<preset>/index.json

A sample is the LDR window around a reference frame ``t`` with its exposures and ground truth:

=========  ======================  ======================================================
kind       LDR window (2 / 3 exp)  ground truth
=========  ======================  ======================================================
``flow``   3 / 5 frames            HDR of ``t`` and the flows ``t -> neighbour`` (time order)
``coarse`` 3 / 5 frames            HDR of ``t``
``refine`` 5 / 7 frames            HDR of ``t-1, t, t+1`` (the coarse outputs of those three)
``dealthdr`` 5 frames (2 exp.)     HDR of ``t`` and the flows ``t -> neighbour``; degraded
                                   (DeAltHDR ``day``/``night``) scenes only by default
=========  ======================  ======================================================

Training samples follow Chen et al. (ICCV 2021) section 5.1: random square patches, flips,
90-degree rotations and channel permutation applied to every frame and flow of the window (flow
vectors are transformed, see :class:`vs_hdrvid.synth.augment.Augment`), per-channel tone
perturbation of the reference LDR, and Gaussian noise (sigma 1e-3) in the linear domain of the
lower exposures when the scene was rendered without noise. Sample ``i`` is drawn from
``numpy.random.default_rng([seed, i])`` alone, so a resumed run sees exactly the samples an
uninterrupted one would. Decoded scenes are cached in memory (LDR as integers, HDR as float16).

The ground-truth flows of the data are ``t -> t+1`` (``fwd``) and ``t -> t-1`` (``bwd``): the flow
from ``t`` to a neighbour that backward-warps the neighbour onto ``t``, the convention of
:class:`~vs_hdrvid.models.coarsenet.CoarseNet`. The ``t -> t+-2`` flows of three-exposure windows
are composed from two one-frame steps, ``f02 = f01 + warp(f12, f01)``, and marked invalid where
the first step is occluded.

Convention: tensors are ``(T, 3, P, P)`` frames, ``(K, 2, P, P)`` flows, EVs ``(T,)``.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vs_hdrvid.ops.classical_flow import exposure_flow, exposure_flow_pair
from vs_hdrvid.ops.exr import read_exr
from vs_hdrvid.ops.images import read_image
from vs_hdrvid.ops.warp import flow_warp
from vs_hdrvid.synth.augment import Augment, perturb_tone, sample_augment

__all__ = ["SceneArrays", "WindowDataset", "window_length", "list_scene_dirs", "GAMMA",
           "prepare_classical_flows", "window_classical_flows", "window_radiance"]

GAMMA = 2.2
KINDS = ("flow", "coarse", "refine", "dealthdr")
_WITH_FLOWS = ("flow", "dealthdr")
CLASSICAL_FLOW = ("dis", "medium")  # what the `coarse` node's classical_flow clips use
_CLASSICAL_CACHE = "classical_flow_dis_medium_v1.npz"


def window_length(kind: str, exposures: int) -> int:
    """LDR frames a sample of ``kind`` needs: ``2n-1`` (flow, coarse) or ``2n+1`` (refine, dealthdr)."""
    if kind not in KINDS:
        raise ValueError(f"window kind must be one of {KINDS}, got {kind!r}")
    return 2 * exposures + 1 if kind in ("refine", "dealthdr") else 2 * exposures - 1


def list_scene_dirs(root: str | Path, preset: str) -> list[Path]:
    """Scene folders of a preset in ``index.json`` order (:func:`~vs_hdrvid.synth.dataset.scene_folders`).

    Raises:
        FileNotFoundError: no scenes under ``<root>/<preset>``.
    """
    from vs_hdrvid.synth.dataset import scene_folders

    found = scene_folders(Path(root) / preset)
    if not found:
        raise FileNotFoundError(f"no scenes under {Path(root) / preset}; run `vs-hdrvid synth --preset {preset} "
                                f"--root {root}`")
    return found


def _compose(f01: np.ndarray, f12: np.ndarray) -> np.ndarray:
    """Flow ``0 -> 2`` from ``0 -> 1`` and ``1 -> 2``: ``f01 + f12(x + f01(x))``, ``(2, H, W)``."""
    a = torch.from_numpy(f01)[None]
    b = torch.from_numpy(f12)[None]
    return (a + flow_warp(b, a)).numpy()[0]


class SceneArrays:
    """One decoded scene: LDR ``(T, 3, H, W)`` integers, HDR ``(T, 3, H, W)`` float16, flows.

    Args:
        path: the scene folder.
        flows: also read the flow files (``fwd``/``bwd`` and occlusions).
    """

    def __init__(self, path: Path, flows: bool = False) -> None:
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.evs = np.array([float(x) for x in (self.path / "exposures.txt").read_text().split()], np.float32)
        n = len(self.evs)
        self.pattern = [float(e) for e in self.meta.get("exposures", self.evs[: self.meta["exposure_count"]])]
        self.ldr = np.stack([read_image(self.path / "ldr" / f"{i:05d}.png").transpose(2, 0, 1) for i in range(n)])
        self.scale = float(np.iinfo(self.ldr.dtype).max)
        self.gt = np.stack([read_exr(self.path / "gt" / f"{i:05d}.exr").transpose(2, 0, 1) for i in range(n)])
        self.gt = self.gt.astype(np.float16)
        self.fwd = self.bwd = self.occ_fwd = self.occ_bwd = None
        if flows:
            h, w = self.ldr.shape[-2:]
            self.fwd, self.bwd = np.zeros((2, n, 2, h, w), np.float32)
            self.occ_fwd, self.occ_bwd = np.ones((2, n, h, w), np.uint8)
            for i in range(n):
                with np.load(self.path / "flow" / f"{i:05d}.npz") as z:
                    for key, arr in (("fwd", self.fwd), ("bwd", self.bwd)):
                        if key in z:
                            arr[i] = z[key]
                    for key, arr in (("occ_fwd", self.occ_fwd), ("occ_bwd", self.occ_bwd)):
                        if key in z:
                            arr[i] = z[key]

    @property
    def num_frames(self) -> int:
        return len(self.evs)

    def classical_flows(self, reach: int) -> tuple[np.ndarray, np.ndarray]:
        """The classical (DIS) flows ``t -> t+d`` for ``0 < |d| <= reach`` and their confidence,
        as the ``coarse`` node gets them from ``classical_flow`` clips
        (:func:`vs_hdrvid.ops.classical_flow.exposure_flow` on the linearised frames).

        Computed once and cached in the scene folder; a pair whose neighbour lies outside the
        scene is zero flow with zero confidence.

        Returns:
            ``(T, 2*reach, 2, H, W)`` float32 flows and ``(T, 2*reach, 1, H, W)`` float16
            confidences, offsets in the order ``-reach..-1, 1..reach``.
        """
        path = self.path / _CLASSICAL_CACHE
        key = f"reach{reach}"
        cached: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as z:
                cached = dict(z)
        if f"{key}_flows" not in cached:
            offsets = [d for d in range(-reach, reach + 1) if d]
            n, (h, w) = self.num_frames, self.ldr.shape[-2:]
            flows = np.zeros((n, len(offsets), 2, h, w), np.float32)
            conf = np.zeros((n, len(offsets), 1, h, w), np.float16)
            lin = window_radiance(self.ldr.astype(np.float32) / self.scale, self.evs)
            for t in range(n):
                for k, d in enumerate(offsets):
                    if 0 <= t + d < n:
                        fw, c = exposure_flow(lin[t], lin[t + d], float(max(self.evs[t], self.evs[t + d])),
                                              *CLASSICAL_FLOW)
                        flows[t, k], conf[t, k, 0] = fw, c
            cached.update({f"{key}_flows": flows, f"{key}_conf": conf})
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.part.npz")  # writers never share a name
            np.savez(tmp, **cached)
            tmp.replace(path)
        return cached[f"{key}_flows"], cached[f"{key}_conf"]

    @property
    def exposure_count(self) -> int:
        return int(self.meta["exposure_count"])

    @property
    def clean(self) -> bool:
        """No sensor noise was rendered into the LDR frames (Gaussian, heteroscedastic or Bayer sensor model)."""
        noise = self.meta.get("noise") or {}
        keys = ("sigma", "lambda_shot", "lambda_read", "electrons_full_scale", "read_std")
        return not any(float(noise.get(k, 0) or 0) > 0 for k in keys)

    def flows_from(self, t: int, offsets: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """GT flows ``t -> t+d`` for each offset ``d`` (``|d| <= 2``) and their validity.

        Returns:
            ``(K, 2, H, W)`` float32 flows and ``(K, 1, H, W)`` float32 masks (1 = usable: not
            occluded in the first step; a flow that leads behind an occluder is no target to learn).
        """
        flows, valid = [], []
        for d in offsets:
            step, occ = (self.fwd, self.occ_fwd) if d > 0 else (self.bwd, self.occ_bwd)
            s = 1 if d > 0 else -1
            f = step[t]
            if abs(d) == 2:
                f = _compose(step[t], step[t + s])
            elif abs(d) != 1:
                raise ValueError(f"flows_from: offsets up to 2 frames, got {d}")
            v = (occ[t] == 0).astype(np.float32)  # where the point of t is seen at t+-1
            flows.append(f)
            valid.append(v[None])
        return np.stack(flows).astype(np.float32), np.stack(valid)


def window_classical_flows(ldrs: np.ndarray, evs: np.ndarray, center: int) -> tuple[np.ndarray, np.ndarray]:
    """The classical flows of a gamma-LDR window as :meth:`SceneArrays.classical_flows` computes
    them: from the centre to each other frame and back, in window order (for footage without a cache).

    Shape: ``ldrs (T, 3, H, W)`` in [0, 1], ``evs (T,)`` -> two ``(T-1, 2, H, W)`` float32.
    """
    lin = window_radiance(ldrs, evs)
    fwd, bwd = [], []
    for i in range(len(evs)):
        if i != center:
            fw, bw = exposure_flow_pair(lin[center], lin[i], float(max(evs[center], evs[i])), *CLASSICAL_FLOW)
            fwd.append(fw)
            bwd.append(bw)
    return np.stack(fwd), np.stack(bwd)


def window_radiance(ldrs: np.ndarray, evs: np.ndarray) -> Tensor:
    """Gamma-LDR frames in [0, 1] as radiance ``H = L**2.2 / 2**EV``, what the classical flows see.

    Shape: ``(T, 3, H, W)``, ``(T,)`` -> ``(T, 3, H, W)`` float32 tensor.
    """
    lin = torch.from_numpy(np.ascontiguousarray(ldrs, np.float32)).clamp(0, 1).pow(GAMMA)
    return lin * torch.from_numpy(np.exp2(-np.asarray(evs, np.float32))).view(-1, 1, 1, 1)


def _has_classical_flows(path: Path, reach: int) -> bool:
    cache = path / _CLASSICAL_CACHE
    if not cache.is_file():
        return False
    try:
        with np.load(cache) as z:
            return f"reach{reach}_flows" in z.files
    except (OSError, ValueError):
        return False


def _classical_flows_of(args: tuple[Path, int]) -> None:
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    SceneArrays(args[0]).classical_flows(args[1])


def prepare_classical_flows(dirs: list[Path], reach: int, workers: int = 1) -> int:
    """Compute the missing classical-flow caches of scene folders, ``workers`` processes at once.

    Returns:
        how many scenes were computed.
    """
    todo = [Path(d) for d in dirs if not _has_classical_flows(Path(d), reach)]
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(min(workers, len(todo))) as pool:
            list(pool.map(_classical_flows_of, [(d, reach) for d in todo]))
    else:
        for d in todo:
            SceneArrays(d).classical_flows(reach)
    return len(todo)


@dataclass(frozen=True)
class WindowItem:
    scene: int
    t: int  # reference frame


class WindowDataset(Dataset):
    """Windows of one kind over every scene with ``exposures`` alternating exposures.

    Args:
        root, preset: where the synthetic data lies.
        kind: ``"flow"``, ``"coarse"`` or ``"refine"`` (see the module docstring).
        exposures: 2 or 3.
        patch: side of the square crops.
        train: random windows, crops and augmentation per sample index; otherwise item ``i`` is
            a fixed crop (see ``val_windows``), unaugmented.
        seed: base seed of the per-sample generators (training) or of the fixed crops.
        ref_window: for validation, references are those valid for this window length (pass the
            refine window so coarse and refine stages are scored on the same crops).
        val_windows: fixed crops per scene for validation (evenly spaced references).
        tone, noise: tone perturbation of the reference, and noise on clean data (training only).
        noise_sigma: sigma of that noise in the linear domain.
        degradations: keep only scenes of these recipes (``clean``, ``day``, ``night``); None
            keeps all, except for ``dealthdr`` windows whose default is ``("day", "night")``.
        classical_flow: also give the classical flows of each coarse window of the sample
            (:meth:`SceneArrays.classical_flows`) as ``init_flows (R, K, 2, P, P)`` and
            ``init_conf (R, K, 1, P, P)``, R = 1 (3 for ``refine``: the windows of ``t-1, t, t+1``),
            K = ``2 * (exposures - 1)`` in time order. ``dealthdr`` windows get the flows from the
            reference to its four neighbours (K = 4) and, as ``init_bwd (1, 4, 2, P, P)``, those
            from each neighbour back to the reference.

    A training sample ``i`` (any non-negative integer) is a dict of tensors: ``ldrs (T, 3, P, P)``
    in [0, 1], ``evs (T,)``, ``gt (G, 3, P, P)`` (G = 1, or 3 for refine), ``h_sat ()`` and for
    ``flow`` also ``flows (K, 2, P, P)`` and ``flow_valid (K, 1, P, P)``.
    """

    def __init__(self, root: str | Path, preset: str, kind: str, exposures: int, patch: int = 128,
                 train: bool = True, seed: int = 0, ref_window: int | None = None, val_windows: int = 4,
                 tone: bool = True, noise: bool = True, noise_sigma: float = 1e-3,
                 degradations: tuple[str, ...] | None = None, classical_flow: bool = False) -> None:
        self.kind, self.exposures, self.patch, self.train, self.seed = kind, exposures, patch, train, seed
        self.classical_flow = classical_flow
        self.tone, self.noise, self.noise_sigma = tone, noise, noise_sigma
        self.length = window_length(kind, exposures)
        self.radius = self.length // 2
        #: the offsets the classical flows reach (:meth:`SceneArrays.classical_flows`)
        self.flow_reach = self.radius if kind == "dealthdr" else exposures - 1
        if degradations is None and kind == "dealthdr":
            degradations = ("day", "night")
        self.dirs = []
        for d in list_scene_dirs(root, preset):
            meta = json.loads((d / "meta.json").read_text())
            if int(meta["exposure_count"]) == exposures and (kind not in _WITH_FLOWS or meta.get("flow", True)) \
                    and (degradations is None or meta.get("degradation", "clean") in degradations):
                self.dirs.append(d)
        if not self.dirs:
            which = f" {'/'.join(degradations)}" if degradations else ""
            raise FileNotFoundError(f"no {exposures}-exposure{which} scenes under {Path(root) / preset}")
        self.metas = [json.loads((d / "meta.json").read_text()) for d in self.dirs]
        self._cache: dict[int, SceneArrays] = {}
        r = max(self.radius, (ref_window or self.length) // 2)
        self.items = [WindowItem(s, t) for s, m in enumerate(self.metas) for t in range(r, int(m["frames"]) - r)]
        if not self.items:
            raise ValueError(f"scenes under {Path(root) / preset} are too short for {self.length}-frame windows")
        for m in self.metas:
            if min(m["width"], m["height"]) < patch:
                raise ValueError(f"patch {patch} is larger than scene {m['scene']} ({m['width']}x{m['height']})")
        self.fixed: list[tuple[WindowItem, int, int]] = []
        if not train:
            rng = np.random.default_rng(seed)
            for s, m in enumerate(self.metas):
                refs = [it for it in self.items if it.scene == s]
                pick = np.linspace(0, len(refs) - 1, min(val_windows, len(refs))).round().astype(int)
                for k in pick:
                    y = int(rng.integers(0, m["height"] - patch + 1))
                    x = int(rng.integers(0, m["width"] - patch + 1))
                    self.fixed.append((refs[k], y, x))

    def scene(self, s: int) -> SceneArrays:
        """Scene ``s``, decoded once and cached."""
        if s not in self._cache:
            scene = SceneArrays(self.dirs[s], flows=self.kind in _WITH_FLOWS)
            if self.classical_flow:
                scene.classical_flows(self.flow_reach)  # computed (or read) once, up front
            self._cache[s] = scene
        return self._cache[s]

    def preload(self) -> None:
        """Decode every scene now."""
        for s in range(len(self.dirs)):
            self.scene(s)

    def __len__(self) -> int:
        return len(self.fixed) if not self.train else len(self.items)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not self.train:
            item, y, x = self.fixed[i]
            return self._sample(item, y, x, None, None)
        rng = np.random.default_rng([self.seed, int(i)])
        item = self.items[int(rng.integers(len(self.items)))]
        m = self.metas[item.scene]
        y = int(rng.integers(0, m["height"] - self.patch + 1))
        x = int(rng.integers(0, m["width"] - self.patch + 1))
        return self._sample(item, y, x, sample_augment(rng), rng)

    def _sample(self, item: WindowItem, y: int, x: int, aug: Augment | None,
                rng: np.random.Generator | None) -> dict[str, Tensor]:
        sc, p, r = self.scene(item.scene), self.patch, self.radius
        frames = slice(item.t - r, item.t + r + 1)
        crop = (slice(y, y + p), slice(x, x + p))
        ldrs = sc.ldr[frames][..., crop[0], crop[1]].astype(np.float32) / sc.scale  # (T, 3, P, P)
        evs = sc.evs[frames].copy()
        g = 1 if self.kind == "refine" else 0
        gt = sc.gt[item.t - g: item.t + g + 1][..., crop[0], crop[1]].astype(np.float32)  # (G, 3, P, P)
        out: dict[str, np.ndarray] = {}
        if self.kind in _WITH_FLOWS:
            offsets = [d for d in range(-r, r + 1) if d]
            flows, valid = sc.flows_from(item.t, offsets)
            out["flows"], out["flow_valid"] = flows[..., crop[0], crop[1]], valid[..., crop[0], crop[1]]
        if self.classical_flow:
            g_refs = 1 if self.kind == "refine" else 0
            cf, cc = sc.classical_flows(self.flow_reach)
            refs = slice(item.t - g_refs, item.t + g_refs + 1)
            out["init_flows"] = cf[refs][..., crop[0], crop[1]]  # (R, K, 2, P, P)
            out["init_conf"] = cc[refs][..., crop[0], crop[1]].astype(np.float32)
            if self.kind == "dealthdr":  # neighbour t+d -> t is offset -d of frame t+d
                k = 2 * self.flow_reach
                back = [cf[item.t + d, k - 1 - j] for j, d in enumerate(o for o in range(-r, r + 1) if o)]
                out["init_bwd"] = np.stack(back)[None][..., crop[0], crop[1]]  # (1, K, 2, P, P)
        if rng is not None:
            if self.noise and sc.clean:
                ldrs = self._add_noise(ldrs, evs, rng)
            if self.tone:
                ldrs[r] = perturb_tone(ldrs[r], rng)
        if aug is not None:
            ldrs, gt = aug.image(ldrs), aug.image(gt)
            if "flows" in out:
                out["flows"], out["flow_valid"] = aug.flow(out["flows"]), aug.mask(out["flow_valid"][:, 0])[:, None]
            if "init_flows" in out:
                out["init_flows"], out["init_conf"] = aug.flow(out["init_flows"]), aug.mask(out["init_conf"])
            if "init_bwd" in out:
                out["init_bwd"] = aug.flow(out["init_bwd"])
        h_sat = 2.0 ** -min(sc.pattern)
        res = {"ldrs": ldrs, "evs": evs, "gt": gt, **out}
        sample = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in res.items()}
        sample["h_sat"] = torch.tensor(h_sat, dtype=torch.float32)
        return sample

    def _add_noise(self, ldrs: np.ndarray, evs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gaussian noise in the linear domain of every frame below the window's highest exposure."""
        out = ldrs.copy()
        for k in np.flatnonzero(evs < evs.max()):
            lin = np.clip(ldrs[k], 0, 1) ** GAMMA + rng.standard_normal(ldrs[k].shape).astype(np.float32) * self.noise_sigma
            out[k] = np.clip(lin, 0, 1) ** (1 / GAMMA)
        return out

    def describe(self) -> dict:
        """Provenance of the data: preset, generator version, preset seed and what was used."""
        from vs_hdrvid.synth.presets import PRESETS

        m0 = self.metas[0]
        preset = m0.get("preset")
        return {"preset": preset, "generator_version": m0.get("generator_version"),
                "seed": PRESETS[preset].seed if preset in PRESETS else None,
                "scenes": len(self.dirs), "windows": len(self.items), "exposures": self.exposures}
