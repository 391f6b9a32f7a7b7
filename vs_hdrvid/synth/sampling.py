"""Random scene construction from a :class:`SceneSpec`: camera path, exposure key, layers, room.

Foreground layers are cut from other sources of the same split (panorama crops) or procedural
textures, move with their own affine and (for about a third) non-rigid motion, and include emissive
light sources 10x to 1000x brighter than the scene key, so sequences have local motion, occlusions,
disocclusions and highlights beyond every exposure's saturation.

A ``room`` scene (:mod:`vs_hdrvid.synth.room`) replaces the panorama by a textured box, 1.5-2.5 m
from the nearest of one or two panels to a far wall 3.5-5.5 times as far, textured like the layers
(crops of the split's panoramas or procedural textures). The camera keeps half the rotation speed of
:data:`MOTION` and translates at a speed that moves the nearest panel by ``MOTION[motion]["cam"]``
times the width per frame (times ``U(0.6, 1.4)``), so the far wall moves 3.5-5.5 times less from
the translation than the nearest panel: parallax.
"""
from __future__ import annotations

import dataclasses
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vs_hdrvid.ops.color import LUMA_COEFFS
from vs_hdrvid.synth.camera import Background, CameraPath, rotation_matrix
from vs_hdrvid.synth.layers import Layer, LayerMotion, lamp_texture
from vs_hdrvid.synth.room import Dolly, Panel, Room
from vs_hdrvid.synth.scene import Scene
from vs_hdrvid.synth.shake import HANDHELD, handheld_knots
from vs_hdrvid.synth.sources import TEXTURE_FAMILIES, procedural_texture, resolve_source
from vs_hdrvid.synth.spec import MOTION, SceneSpec

__all__ = ["build_scene", "scene_rngs"]


def scene_rngs(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators for each part of a scene (adding a draw in one never shifts another)."""
    names = ("camera", "layers", "noise", "misc", "room")
    return {n: np.random.default_rng(s) for n, s in zip(names, np.random.SeedSequence(seed).spawn(len(names)))}


@lru_cache(maxsize=16)
def _load(name: str, folder: str | None) -> tuple:
    src = resolve_source(name, folder)
    return src, tuple(src.load())


def _camera_path(spec: SceneSpec, rng: np.random.Generator, projection: str) -> CameraPath:
    m = MOTION[spec.motion]
    hfov = math.radians(rng.uniform(*spec.hfov))
    f = (spec.width / 2) / math.tan(hfov / 2)
    speed = m["cam"] * spec.width / f * rng.uniform(0.6, 1.4)          # rad / frame
    heading = rng.uniform(0, 2 * math.pi)
    rate = (speed * math.cos(heading), 0.4 * speed * math.sin(heading), m["roll"] * rng.uniform(-1, 1))
    acc = tuple(float(v) for v in rng.uniform(-0.1, 0.1, 3) * np.array(rate))
    if projection == "equirect":
        angle0 = (rng.uniform(-math.pi, math.pi), rng.uniform(-0.35, 0.2), rng.uniform(-0.05, 0.05))
    else:
        angle0 = (rng.uniform(-0.1, 0.1), rng.uniform(-0.05, 0.05), rng.uniform(-0.03, 0.03))
    amp = m["shake"] * spec.width / f * rng.uniform(0.5, 1.0, 6)
    path = CameraPath(angle0=tuple(float(a) for a in angle0), rate=tuple(float(r) for r in rate), acc=acc,
                      hfov0=hfov, zoom_rate=float(m["zoom"] * rng.uniform(-1, 1)),
                      shake_amp=tuple(float(a) for a in amp),
                      shake_freq=tuple(float(v) for v in rng.uniform(0.08, 0.35, 6)),
                      shake_phase=tuple(float(v) for v in rng.uniform(0, 2 * math.pi, 6)))
    if spec.trajectory == "handheld":                      # drawn last: the smooth part stays the same
        path = dataclasses.replace(path, **_handheld(spec, rng, f))
    return path


def _handheld(spec: SceneSpec, rng: np.random.Generator, f: float) -> dict:
    """Handheld jitter knots for :class:`CameraPath` (RMS ``MOTION[motion]["handheld"]`` of the width).

    Yaw and pitch RMS are ``handheld * width / f`` radians times ``U(axis_scale)`` each; roll's RMS
    moves the image corner by ``roll_ratio`` times the yaw RMS displacement.
    """
    rms_px = MOTION[spec.motion]["handheld"] * spec.width
    s = rng.uniform(*HANDHELD["axis_scale"], 2)
    corner = 0.5 * math.hypot(spec.width, spec.height)
    rms = (rms_px * s[0] / f, rms_px * s[1] / f, HANDHELD["roll_ratio"] * rms_px * s[0] / corner)
    t0 = -1.0
    knots, dt, _ = handheld_knots(rng, t0, spec.frames + 1.0, tuple(float(r) for r in rms))
    return {"jitter": tuple(float(v) for v in knots.ravel()), "jitter_t0": t0, "jitter_dt": dt}


def _geo_mean(img: np.ndarray) -> float:
    lum = img @ np.asarray(LUMA_COEFFS["709"], np.float32)
    return float(np.exp(np.mean(np.log(np.maximum(lum, 1e-4)))))


def _pano_crop(pano: np.ndarray, rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    hp, wp = pano.shape[:2]
    cw = int(rng.integers(wp // 16, wp // 5))
    x0 = int(rng.integers(0, wp - cw))
    y0 = int(rng.integers(int(0.15 * hp), max(int(0.85 * hp) - cw, int(0.15 * hp) + 1)))
    crop = torch.from_numpy(np.ascontiguousarray(pano[y0:y0 + cw, x0:x0 + cw])).permute(2, 0, 1)[None]
    tex = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return tex[0].permute(1, 2, 0).numpy(), f"@{x0},{y0},{cw}"


def _texture(spec: SceneSpec, rng: np.random.Generator, folder: str | None, key: float, size: int):
    """A layer texture (radiance around the key) and its provenance name."""
    if spec.texture_sources and rng.random() < 0.5:
        name = spec.texture_sources[int(rng.integers(len(spec.texture_sources)))]
        _, frames = _load(name, folder)
        tex, where = _pano_crop(frames[0], rng, size)
        gain = key * math.exp(rng.uniform(-0.7, 1.0)) / max(_geo_mean(tex), 1e-6)
        return np.minimum(tex * gain, 6e4).astype(np.float32), f"pano:{Path(name).stem}{where}"
    family = TEXTURE_FAMILIES[int(rng.integers(len(TEXTURE_FAMILIES)))]
    seed = int(rng.integers(*spec.texture_seeds))
    tex = procedural_texture(family, seed, size)
    return tex * np.float32(key * math.exp(rng.uniform(0.3, 1.6))), f"proc:{family}:{seed}"


def _layer_motion(spec: SceneSpec, rng: np.random.Generator, radius: float, nonrigid: bool) -> LayerMotion:
    m = MOTION[spec.motion]
    w, h, t_mid = spec.width, spec.height, (spec.frames - 1) / 2
    speed = m["layer"] * w * rng.uniform(0.5, 1.5)
    ang = rng.uniform(0, 2 * math.pi)
    vel = np.array([speed * math.cos(ang), speed * math.sin(ang)])
    mid = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h])
    acc = rng.uniform(-0.15, 0.15, 2) * speed
    b0 = mid - vel * t_mid - 0.5 * acc * t_mid ** 2
    warp = {}
    if nonrigid:
        amp = radius * rng.uniform(0.02, 0.06)
        kk = rng.uniform(1.5, 4.0, 2) / radius
        ka = rng.uniform(0, 2 * math.pi, 2)
        warp = {"warp_amp": float(amp),
                "warp_k": (float(kk[0] * math.cos(ka[0])), float(kk[0] * math.sin(ka[0])),
                           float(kk[1] * math.cos(ka[1])), float(kk[1] * math.sin(ka[1]))),
                "warp_w": tuple(float(v) for v in m["warp"] * rng.uniform(0.5, 1.5, 2)),
                "warp_phase": tuple(float(v) for v in rng.uniform(0, 2 * math.pi, 2))}
    return LayerMotion(b0=(float(b0[0]), float(b0[1])), vel=(float(vel[0]), float(vel[1])),
                       acc=(float(acc[0]), float(acc[1])), theta0=float(rng.uniform(0, 2 * math.pi)),
                       omega=float(m["layer_rot"] * rng.uniform(-1, 1)),
                       scale=tuple(float(s) for s in np.exp(rng.uniform(-0.2, 0.2, 2))),
                       zoom_rate=float(m["layer_zoom"] * rng.uniform(-1, 1)), **warp)


def _shape(rng: np.random.Generator) -> tuple[str, tuple[float, ...]]:
    kind = ("ellipse", "blob", "polygon")[int(rng.integers(3))]
    if kind == "blob":
        return kind, tuple(float(v) for pair in zip(rng.uniform(0, 0.12, 3), rng.uniform(0, 2 * math.pi, 3))
                           for v in pair)
    if kind == "polygon":
        return kind, (float(rng.integers(3, 8)), float(rng.uniform(0, 2 * math.pi)))
    return kind, ()


def _key_gain(make, spec: SceneSpec, key: float) -> float:
    """The gain that brings the geometric mean of a background at ``t = 0`` to ``key``, measured on
    ``make(width, height)`` built at a quarter of the scene's size."""
    probe = make(max(spec.width // 4, 16), max(spec.height // 4, 16))
    return key / max(_geo_mean(probe.render(0.0).permute(1, 2, 0).numpy()), 1e-8)


def _pow2(n: float) -> int:
    return int(min(512, 2 ** math.ceil(math.log2(max(n, 32)))))


def _room(spec: SceneSpec, rng: dict[str, np.random.Generator], folder: str | None,
          key: float) -> tuple[Room, list[str]]:
    """A random :class:`Room` around the camera's mid-sequence position (see the module doc)."""
    path = _camera_path(spec, rng["camera"], "plane")
    path = dataclasses.replace(path, rate=tuple(0.5 * r for r in path.rate), acc=tuple(0.5 * a for a in path.acc))
    rr, w, h = rng["room"], spec.width, spec.height
    f, t_mid = path.focal(0.0, w), (spec.frames - 1) / 2
    near = rr.uniform(1.5, 2.5)
    far = near * rr.uniform(3.5, 5.5)
    side, height = far * rr.uniform(0.7, 1.2), rr.uniform(2.8, 4.0)
    x_off, cam_h, back = side * rr.uniform(-0.15, 0.15), rr.uniform(1.2, 1.7), rr.uniform(1.5, 3.0)
    lo, hi = np.array([x_off - side / 2, cam_h - height, -back]), np.array([x_off + side / 2, cam_h, far])
    r_mid = rotation_matrix(*path.angles(t_mid))
    panels, clear = [], float(min(-lo.max(), hi.min()))
    for k in range(int(rr.integers(1, 3))):
        z = near if k == 0 else rr.uniform(1.4 * near, 0.6 * far)
        px, py = rr.uniform(0.2, 0.8) * w, rr.uniform(0.25, 0.75) * h
        centre = r_mid.T @ np.array([(px - (w - 1) / 2) / f, (py - (h - 1) / 2) / f, 1.0]) * z
        half_w = z * (w / 2) / f * rr.uniform(0.15, 0.35)
        half = (half_w, half_w * rr.uniform(0.6, 1.5))
        yaw, roll = rr.uniform(-0.6, 0.6), rr.uniform(-0.25, 0.25)
        u0, v0 = np.array([math.cos(yaw), 0.0, -math.sin(yaw)]), np.array([0.0, 1.0, 0.0])
        u, v = math.cos(roll) * u0 + math.sin(roll) * v0, -math.sin(roll) * u0 + math.cos(roll) * v0
        panels.append(Panel(tuple(float(c) for c in centre), tuple(float(c) for c in u),
                            tuple(float(c) for c in v), (float(half[0]), float(half[1]))))
        clear = min(clear, float(np.linalg.norm(centre)) - math.hypot(*half))
    speed = MOTION[spec.motion]["cam"] * w * rr.uniform(0.6, 1.4) * near / f           # m / frame
    heading = rr.uniform(0, 2 * math.pi)
    vel_cam = np.array([math.cos(heading), 0.4 * math.sin(heading), rr.uniform(-0.4, 0.4)])
    vel = r_mid.T @ vel_cam * (speed / np.linalg.norm(vel_cam))
    acc = rr.uniform(-0.1, 0.1, 3) * vel
    travel = float(np.linalg.norm(vel) * t_mid + 0.5 * np.linalg.norm(acc) * t_mid ** 2)
    scale = min(1.0, 0.6 * clear / max(travel, 1e-9))     # never reach a wall or a panel
    vel, acc = vel * scale, acc * scale
    dolly = Dolly(tuple(float(c) for c in -vel * t_mid - 0.5 * acc * t_mid ** 2),
                  tuple(float(c) for c in vel), tuple(float(c) for c in acc))
    tex_spec = spec if spec.texture_sources else dataclasses.replace(spec, texture_sources=(spec.source,))
    textures, names, tiles = [], [], []
    mid = (lo + hi) / 2
    for j in range(6):                                    # faces x-, x+, ceiling, floor, back, front
        centre = mid.copy()
        centre[j // 2] = (lo, hi)[j % 2][j // 2]
        tiles.append(float(256 * np.linalg.norm(centre) / f))       # a texel per pixel at the face centre
        tex, name = _texture(tex_spec, rr, folder, key, 256)
        textures.append(tex)
        names.append(name)
    for p in panels:
        tex, name = _texture(tex_spec, rr, folder, key, _pow2(2.5 * p.half[0] * f / np.linalg.norm(p.centre)))
        textures.append(tex)
        names.append(name)
    args = (tuple(lo), tuple(hi), panels, textures, tiles, path, dolly)
    gain = _key_gain(lambda pw, ph: Room(*args, pw, ph), spec, key)
    return Room(*args, w, h, gain=gain, names=tuple(names)), names


def build_scene(spec: SceneSpec, folder: str | None = None) -> tuple[Scene, dict]:
    """Construct the scene of ``spec`` (sources looked up in ``folder``) and describe the choices.

    Returns:
        the :class:`Scene` and ``{"key", "gain", "source_kind", "flow_exact", "textures"}`` for
        ``meta.json``; ``flow_exact`` is False for EXR sequences, whose own content motion the
        flow (camera and layers only) does not describe.
    """
    rng = scene_rngs(spec.seed)
    src, frames = _load(spec.source, None if folder is None else str(folder))
    key = math.exp(rng["misc"].uniform(math.log(spec.key[0]), math.log(spec.key[1])))
    if spec.geometry == "room":
        bg, room_textures = _room(spec, rng, None if folder is None else str(folder), key)
        bg_gain = bg.gain
    else:
        projection = "equirect" if src.kind == "pano" else "plane"
        path = _camera_path(spec, rng["camera"], projection)
        offset = float(rng["misc"].uniform(0, max(len(frames) - spec.frames, 0))) if len(frames) > 1 else 0.0
        bg_gain = _key_gain(lambda pw, ph: Background(list(frames[:1]), projection, path, pw, ph), spec, key)
        bg = Background(list(frames), projection, path, spec.width, spec.height, gain=bg_gain, seq_offset=offset)
        room_textures = []

    lr = rng["layers"]
    n_layers = int(lr.integers(spec.layers[0], spec.layers[1] + 1))
    base = min(spec.width, spec.height)
    layers = []
    for i in range(n_layers + spec.emissive):
        emissive = i >= n_layers
        if emissive:
            radius = max(base * lr.uniform(0.03, 0.07), 2.5)
            color = np.array([1.0, lr.uniform(0.6, 1.0), lr.uniform(0.3, 1.0)])[lr.permutation(3)]
            tex, name = lamp_texture(color), "lamp"
            gain = key * 10 ** lr.uniform(1, 3)
            shape, params = "ellipse", ()
        else:
            radius = base * lr.uniform(0.12, 0.3)
            size = _pow2(2.5 * radius)
            tex, name = _texture(spec, lr, None if folder is None else str(folder), key, size)
            gain = 1.0
            shape, params = _shape(lr)
        motion = _layer_motion(spec, lr, radius, nonrigid=(not emissive) and lr.random() < 0.35)
        layers.append(Layer(radius=float(radius), shape=shape, motion=motion, texture=tex, gain=float(gain),
                            shape_params=params, emissive=emissive, name=name))
    flow_exact = src.kind != "sequence" or spec.geometry == "room"     # a room's textures are still
    info = {"key": key, "gain": bg_gain, "source_kind": src.kind, "flow_exact": flow_exact,
            "textures": sorted({layer.name for layer in layers if layer.name != "lamp"} | set(room_textures))}
    return Scene(bg, layers), info

