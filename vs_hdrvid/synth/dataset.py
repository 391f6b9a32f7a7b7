"""Writing synthetic sequences to disk exactly like a user's footage, plus ground truth.

Layout (a contract other modules read)::

    <root>/<preset>/<scene_id>/
      ldr/00000.png ...   8- or 16-bit RGB PNG, gamma-encoded LDR frames
      exposures.txt       one EV per frame (stops)
      gt/00000.exr ...    linear HDR on the H = f^-1(L) / 2**EV scale (half float, ZIP)
      flow/00000.npz ...  fwd/bwd (2, H, W) float32 flow to t+1 / t-1, occ_fwd/occ_bwd (H, W) uint8
      meta.json
    <root>/<preset>/index.json   the scenes' meta, in order

A flat preset (``sample``) writes one scene directly into ``<root>/<preset>/`` without index.
Each scene is written into a hidden temporary folder and renamed when complete, so a folder with a
``meta.json`` is always whole; complete scenes of the same generator version are skipped.

Reproducibility: the same spec gives byte-identical files (PNG, EXR and npz carry no timestamps;
rendering runs single-threaded on the CPU; every random draw comes from the scene's seed), for any
number of worker processes. Across CPU instruction sets or library versions the vectorised float
kernels (``atan2``, ``sin``) may round differently in the last bit.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from vs_hdrvid.ops.exr import write_exr
from vs_hdrvid.ops.images import write_png
from vs_hdrvid.outputs import atomic_path
from vs_hdrvid.synth.degrade import NoiseModel, sample_dealthdr_noise
from vs_hdrvid.synth.sampling import build_scene, scene_rngs
from vs_hdrvid.synth.sensor import SensorModel, sample_sensor
from vs_hdrvid.synth.shake import HANDHELD
from vs_hdrvid.synth.spec import MOTION, SceneSpec, frame_times

__all__ = ["GENERATOR_VERSION", "generate_scene", "generate", "save_npz", "noise_model", "scene_folders"]

GENERATOR_VERSION = "synth-1"


@contextmanager
def _torch_threads(n: int):
    """Run with ``n`` torch threads (one thread is faster on shared cores and deterministic)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` with fixed zip timestamps (byte-identical files), written atomically."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            b = io.BytesIO()
            np.lib.format.write_array(b, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, b.getvalue())
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())


def noise_model(spec: SceneSpec, rng: np.random.Generator) -> NoiseModel | SensorModel:
    """The scene's degradation: Chen et al. Gaussian (``clean``), DeAltHDR Eq. A/B (``day``/``night``)
    or the Bayer sensor model (``sensor_day``/``sensor_night``, :mod:`vs_hdrvid.synth.sensor`)."""
    if spec.degradation.startswith("sensor_"):
        return sample_sensor(spec.degradation, rng)
    if spec.degradation == "clean":
        s = spec.noise_sigma
        sigma = float(rng.uniform(*s)) if isinstance(s, tuple) else float(s)
        return NoiseModel("clean", sigma=sigma, png_bits=8, max_ev=max(spec.exposures))
    shot, read = sample_dealthdr_noise(spec.degradation, rng)
    return NoiseModel(spec.degradation, lambda_shot=shot, lambda_read=read, linear_bits=10, png_bits=16,
                      max_ev=max(spec.exposures))


def _json(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=False) + "\n"


def generate_scene(spec: SceneSpec, out_dir: str | os.PathLike, preset: str = "custom",
                   sources: str | os.PathLike | None = None) -> dict:
    """Render, degrade and write one scene to ``out_dir`` (replaced atomically); return its meta."""
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.part"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "ldr").mkdir(parents=True)
    (tmp / "gt").mkdir()
    with _torch_threads(1), torch.no_grad():
        scene, info = build_scene(spec, sources)
        model = noise_model(spec, scene_rngs(spec.seed)["noise"])
        noise_rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1]))
        evs = [spec.exposures[i % len(spec.exposures)] for i in range(spec.frames)]
        for i, ev in enumerate(evs):
            gt = scene.render(float(i))
            times = frame_times(spec, i)
            integ = gt if times == [float(i)] else scene.render_mean(times)
            write_png(tmp / "ldr" / f"{i:05d}.png", model.apply(integ, ev, noise_rng), compression=9)
            write_exr(tmp / "gt" / f"{i:05d}.exr", gt)
        if spec.write_flow:
            (tmp / "flow").mkdir()
            for i in range(spec.frames):
                arrays = {}
                if i + 1 < spec.frames:
                    arrays["fwd"], arrays["occ_fwd"] = scene.flow(float(i), float(i + 1))
                if i > 0:
                    arrays["bwd"], arrays["occ_bwd"] = scene.flow(float(i), float(i - 1))
                save_npz(tmp / "flow" / f"{i:05d}.npz", **arrays)
    (tmp / "exposures.txt").write_text("".join(f"{ev}\n" for ev in evs))
    meta = {
        "preset": preset, "scene": out_dir.name, "seed": spec.seed, "source": spec.source,
        "width": spec.width, "height": spec.height, "frames": spec.frames,
        "exposures": list(spec.exposures), "exposure_count": len(spec.exposures), "crf": "gamma2.2",
        "bit_depth": spec.bit_depth, "degradation": spec.degradation, "noise": model.to_dict(),
        "motion": spec.motion, "subframes": spec.subframes, "generator_version": GENERATOR_VERSION,
        "flow": spec.write_flow, "flow_exact": info["flow_exact"],
        "timing": ("frame i shows t = i; with subframes S > 1 a long frame is the mean of sub-frames "
                   "t = 2k + 2j/S, j = 1..S-1, and its gt is t = 2k + 1 (DeAltHDR 4.1)"),
        "source_kind": info["source_kind"], "key": info["key"], "background_gain": info["gain"],
        "textures": info["textures"], "scene_description": scene.describe(), "spec": spec.to_dict(),
    }
    if spec.trajectory != "smooth":           # absent: the smooth path of the training recipes
        meta["trajectory"] = {"kind": spec.trajectory, "model": "damped oscillator + impulsive jerks, "
                              "Catmull-Rom between knots (vs_hdrvid.synth.shake)", "params": HANDHELD,
                              "rms_fraction_of_width": MOTION[spec.motion]["handheld"],
                              "knots": "scene_description.camera.jitter (yaw, pitch, roll; radians)"}
    if spec.geometry != "panorama":           # absent: the panorama/plate background of older presets
        meta["geometry"] = spec.geometry
    (tmp / "meta.json").write_text(_json(meta))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return meta


def _done(out_dir: Path, spec: SceneSpec) -> dict | None:
    """The meta of a complete scene written from the same spec and generator version, else None."""
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    same = meta.get("generator_version") == GENERATOR_VERSION and meta.get("spec") == spec.to_dict()
    return meta if same else None


def _job(args) -> dict:
    spec_dict, out_dir, preset, sources = args
    return generate_scene(SceneSpec.from_dict(spec_dict), out_dir, preset, sources)


def generate(preset, root: str | os.PathLike = "data/synth", scenes: int | None = None, workers: int = 1,
             progress: bool = True, panoramas: str | os.PathLike | None = "data/panoramas",
             overwrite: bool = False) -> list[dict]:
    """Synthesise every scene of ``preset`` under ``<root>/<preset>/`` and write ``index.json``.

    Args:
        preset: a preset name (``train``, ``val``, ``test``, ``shifted``, ``micro``, ``sample``,
            ``train3d``, ``test3d``) or a
            :class:`~vs_hdrvid.synth.presets.Preset`.
        root: output root.
        scenes: generate only the first ``scenes`` scenes of the preset's plan (or more, for
            presets whose plan repeats its recipes).
        workers: processes (each scene is independent; results are identical for any count).
        progress: a tqdm bar on stderr.
        panoramas: folder with the named panoramas (or any EXR/HDR sources, see ``presets``).
        overwrite: regenerate complete scenes too.

    Returns:
        the scenes' meta dicts, in plan order.
    """
    from vs_hdrvid.synth.presets import get_preset

    p = get_preset(preset) if isinstance(preset, str) else preset
    specs = p.plan(scenes=scenes, panoramas=panoramas)
    base = Path(root) / p.name
    base.mkdir(parents=True, exist_ok=True)
    outs = [base if p.flat else base / s.scene_id for s in specs]
    src = None if panoramas is None else str(panoramas)
    metas: list[dict | None] = [None if overwrite else _done(o, s) for o, s in zip(outs, specs)]
    todo = [i for i, m in enumerate(metas) if m is None]
    from tqdm import tqdm

    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=f"synth {p.name}", unit="scene",
               file=sys.stderr, disable=not progress)
    jobs = {i: (specs[i].to_dict(), str(outs[i]), p.name, src) for i in todo}
    if workers <= 1 or len(todo) <= 1:
        for i in todo:
            metas[i] = _job(jobs[i])
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
            futs = {ex.submit(_job, jobs[i]): i for i in todo}
            for fut in as_completed(futs):
                metas[futs[fut]] = fut.result()
                bar.update(1)
    bar.close()
    if not p.flat:
        for m, o in zip(metas, outs):
            m["path"] = o.name
        with atomic_path(base / "index.json") as tmp:
            Path(tmp).write_text(_json(metas))
    return metas


def scene_folders(base: str | os.PathLike) -> list[Path]:
    """The scene folders of a preset folder (those holding a ``meta.json``), in the order its
    ``index.json`` lists them, then any it does not list, sorted by name.

    The one reader of the index :func:`generate` writes: a list of the scenes' meta, each naming
    its folder as ``path`` (or a ``{"scenes": [...]}`` object, or plain folder names).
    """
    base = Path(base)
    found = sorted(p for p in base.iterdir() if (p / "meta.json").is_file()) if base.is_dir() else []
    index = base / "index.json"
    if not found or not index.is_file():
        return found
    data = json.loads(index.read_text())
    entries = data.get("scenes", []) if isinstance(data, dict) else data
    names = [e if isinstance(e, str) else e.get("path", e.get("scene")) for e in entries]
    by_name = {p.name: p for p in found}
    ordered = [by_name.pop(n) for n in names if n in by_name]
    return ordered + sorted(by_name.values())
