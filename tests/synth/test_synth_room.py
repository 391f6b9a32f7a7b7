"""The 3D room background: exact flow with parallax, depth occlusion, specs, presets, writing."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vs_hdrvid.ops.warp import flow_warp
from vs_hdrvid.synth.camera import CameraPath
from vs_hdrvid.synth.dataset import generate_scene
from vs_hdrvid.synth.presets import PRESETS
from vs_hdrvid.synth.room import Dolly, Panel, Room
from vs_hdrvid.synth.sampling import build_scene
from vs_hdrvid.synth.scene import Scene
from vs_hdrvid.synth.sources import procedural_texture
from vs_hdrvid.synth.spec import SceneSpec

W, H = 96, 64
HFOV = math.radians(60.0)
F_PX = (W / 2) / math.tan(HFOV / 2)


def _warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward-warp ``(C, H, W)`` with ``(2, H, W)`` flow (sampled at p + flow, border padding)."""
    return flow_warp(torch.from_numpy(np.ascontiguousarray(img))[None].float(),
                     torch.from_numpy(np.ascontiguousarray(flow))[None].float())[0].numpy()


def _tm(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(x, 0) / 0.2)


def _room(vel=(0.2, 0.0, 0.0), yaw_rate=0.0) -> Room:
    """A box 8 m deep, a 0.6 m wide panel 2 m in front of the camera (depth ratio 4)."""
    tex = [procedural_texture("fbm" if s % 3 else "gradient", s, 32) * 0.3 for s in range(7)]   # smooth:
    # bilinear resampling of sharp texture would hide flow errors of a fraction of a pixel
    panel = Panel((0.0, 0.0, 2.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.3, 0.3))
    path = CameraPath((0.0, 0.0, 0.0), rate=(yaw_rate, 0.0, 0.0), hfov0=HFOV)
    return Room((-4.0, -2.0, -2.0), (4.0, 1.5, 8.0), [panel], tex, [4.0] * 6, path,   # ~1 texel/px at 5 m
                Dolly((0.0, 0.0, 0.0), vel), W, H)


def test_room_flow_exact_with_parallax():
    """Warping the t1 render by the flow gives the t0 render; near and far surfaces move differently."""
    sc = Scene(_room(vel=(0.15, 0.03, 0.05), yaw_rate=0.01), [])
    with torch.no_grad():
        a, b = sc.render_tensor(1.0).numpy(), sc.render_tensor(2.0).numpy()
        for src, dst, (flow, occ) in ((b, a, sc.flow(1.0, 2.0)), (a, b, sc.flow(2.0, 1.0))):
            assert flow.shape == (2, H, W) and flow.dtype == np.float32 and occ.dtype == np.uint8
            ok = occ == 0
            assert 0.5 < ok.mean() < 0.99
            err = np.abs(_tm(_warp(src, flow)) - _tm(dst)).mean(0)
            still = np.abs(_tm(src) - _tm(dst)).mean(0)
            assert err[ok].mean() < 0.01 and np.median(err[ok]) < 0.1 * np.median(still[ok])
        fwd, occ = sc.flow(1.0, 2.0)
        resid = np.hypot(*(fwd + _warp(sc.flow(2.0, 1.0)[0], fwd)))[occ == 0]     # fwd and bwd agree
        assert np.median(resid) < 1e-3 and np.mean(resid < 0.1) > 0.99
    flow, occ = sc.flow(0.0, 1.0)                              # at t = 0 the camera is at the origin
    cx, cy = (W - 1) / 2, round((H - 1) / 2)
    edge = 0.3 * F_PX / 2                                      # panel half width in pixels (about 12.5)
    xn, xf = round(cx + edge - 3), round(cx + edge + 4)        # on the panel, on the far wall next to it
    assert occ[cy, xn] == 0 and occ[cy, xf] == 0
    assert np.hypot(*(flow[:, cy, xn] - flow[:, cy, xf])) > 3.0      # parallax across the silhouette
    assert np.abs(np.diff(flow[:, cy, xf:xf + 6], axis=1)).max() < 0.2  # smooth along one surface
    # a pure rotation's flow is no function of depth; the translation's is 1 / depth (8 m / 2 m)
    rot = Scene(_room(vel=(0.0, 0.0, 0.0), yaw_rate=0.01), []).flow(0.0, 1.0)[0]
    ratio = (flow[0, cy, xn] - rot[0, cy, xn]) / (flow[0, cy, xf] - rot[0, cy, xf])
    assert 3.5 < ratio < 4.5, ratio


@pytest.mark.parametrize("motion", ["small", "large"])
def test_room_scene_flow_warps(motion):
    """A sampled room with layers and a lamp on top (sharp textures: looser bounds)."""
    spec = SceneSpec("t", 11, "proc:5", 128, 96, 6, (-1.5, 1.5), motion=motion, geometry="room", layers=(1, 2),
                     texture_sources=("proc:6",))
    with torch.no_grad():
        sc, info = build_scene(spec)
        a, b = sc.render_tensor(2.0).numpy(), sc.render_tensor(3.0).numpy()
        flow, occ = sc.flow(2.0, 3.0)
    tm = lambda x: np.log1p(np.maximum(x, 0) / info["key"])  # noqa: E731
    ok = occ == 0
    err, still = np.abs(tm(_warp(b, flow)) - tm(a)).mean(0), np.abs(tm(b) - tm(a)).mean(0)
    assert 0.7 < ok.mean() < 0.99 and err[ok].mean() < 0.02
    assert np.median(err[ok]) < 0.15 * np.median(still[ok])


def test_room_occlusion_behind_panel():
    """A camera moving right: the panel slides left over the far wall, hiding what lay left of it."""
    sc = Scene(_room(vel=(0.2, 0.0, 0.0)), [])
    flow, occ = sc.flow(0.0, 1.0)
    cx, cy = (W - 1) / 2, round((H - 1) / 2)
    edge, shift = 0.3 * F_PX / 2, 0.2 * F_PX * (1 / 2 - 1 / 8)   # panel over wall: about 6 px per frame
    assert math.isclose(flow[0, cy, round(cx)], -0.2 * F_PX / 2, rel_tol=0.02)   # the panel's centre
    assert occ[cy, round(cx - edge - 3)] == 1                  # wall just left of the panel: covered at t1
    assert occ[cy, round(cx + edge + 3)] == 0                  # right of it: uncovered, visible
    assert occ[cy, round(cx)] == 0 and occ[cy, 5] == 0
    assert occ[cy, round(cx - edge)] == 1                      # the silhouette pixel is mixed
    assert occ[cy, round(cx - edge - shift + 1):round(cx - edge)].all()     # the whole covered strip
    _, occ_b = sc.flow(1.0, 0.0)                               # backwards: the right strip was hidden
    assert occ_b[cy, round(cx - 0.2 * F_PX / 2 + edge + 2)] == 1


def test_room_spec_roundtrip_and_validation():
    spec = SceneSpec("r", 3, "proc:4", 64, 48, 4, (-2.0, 1.0), degradation="day", subframes=8, geometry="room")
    d = spec.to_dict()
    assert d["geometry"] == "room" and SceneSpec.from_dict(json.loads(json.dumps(d))) == spec
    assert "geometry" not in SceneSpec("p", 3, "proc:4", 64, 48, 4, (-1.0, 1.0)).to_dict()
    with pytest.raises(ValueError, match="geometry"):
        SceneSpec("r", 3, "proc:4", 64, 48, 4, (-1.0, 1.0), geometry="cave")


def test_panorama_presets_unchanged():
    """The presets before the 3D ones plan exactly what they planned before rooms existed."""
    first = PRESETS["test"].plan()[0].to_dict()
    assert first == {
        "scene_id": "0000_forest_ev-1.5+1.5_clean_small", "seed": 300009, "source": "forest", "width": 480,
        "height": 270, "frames": 10, "exposures": [-1.5, 1.5], "degradation": "clean", "motion": "small",
        "subframes": 1, "texture_sources": ["forest", "night"], "texture_seeds": [2000000, 3000000],
        "layers": [2, 3], "emissive": 1, "noise_sigma": 0.001, "key": [0.08, 0.3], "hfov": [45.0, 65.0],
        "write_flow": True}
    for name in ("train", "val", "test", "shifted", "micro", "sample"):
        assert all("geometry" not in s.to_dict() for s in PRESETS[name].plan(scenes=10)), name
    sc, _ = build_scene(SceneSpec("p", 1, "proc:3", 32, 24, 3, (-1.0, 1.0)))
    assert set(sc.describe()) == {"camera", "layers"} and sc.describe()["camera"]["projection"] == "equirect"


def test_3d_presets_are_rooms_and_held_out():
    train3d, test3d = PRESETS["train3d"].plan(), PRESETS["test3d"].plan()
    assert len(train3d) == 60 and all((s.width, s.height) == (256, 256) for s in train3d)
    assert all(s.geometry == "room" and s.layers == (1, 2) for s in train3d + test3d)
    assert {(len(s.exposures), s.degradation, s.motion) for s in test3d} == {
        (n, d, m) for n, d in ((2, "clean"), (3, "clean"), (2, "day"), (2, "night"))
        for m in ("small", "medium", "large")}
    names = lambda specs: {s.source for s in specs} | {t for s in specs for t in s.texture_sources}  # noqa: E731
    train = PRESETS["train"].plan()
    assert names(train3d) == names(train) and not names(test3d) & names(train)
    assert names(test3d) == {"forest", "night"} and train3d[0].texture_seeds == train[0].texture_seeds
    lo, hi = test3d[0].texture_seeds
    for other in PRESETS.values():
        if other.name != "test3d":
            olo, ohi = other.texture_seeds
            assert ohi <= lo or hi <= olo, other.name
    seeds = [s.seed for p in PRESETS.values() for s in p.plan(scenes=15)]
    assert len(seeds) == len(set(seeds))


def test_room_scene_generates(tmp_path):
    """A tiny DeAltHDR room (sub-frame motion blur) through the dataset writer: same layout, flow."""
    spec = SceneSpec("room", 21, "proc:7", 48, 32, 4, (-2.0, 1.0), degradation="day", subframes=6,
                     motion="large", geometry="room", layers=(1, 1), texture_sources=("proc:7",))
    meta = generate_scene(spec, tmp_path / "room", preset="tiny")
    d = tmp_path / "room"
    assert sorted(p.name for p in d.iterdir()) == ["exposures.txt", "flow", "gt", "ldr", "meta.json"]
    assert len(list((d / "ldr").iterdir())) == 4 and len(list((d / "gt").iterdir())) == 4
    assert meta["geometry"] == "room" and meta["flow_exact"] and SceneSpec.from_dict(meta["spec"]) == spec
    desc = meta["scene_description"]
    assert desc["camera"]["geometry"] == "room" and len(desc["room"]["panels"]) in (1, 2)
    assert len(desc["layers"]) == 2                                   # one layer and the lamp
    with np.load(d / "flow" / "00001.npz") as z:
        assert set(z.files) == {"fwd", "occ_fwd", "bwd", "occ_bwd"} and z["fwd"].shape == (2, 32, 48)
        assert 0.0 < z["occ_fwd"].mean() < 0.6 and np.abs(z["fwd"]).max() > 0.5
    sc, _ = build_scene(spec)
    long = sc.render_mean([1.0 + k / 3 for k in range(1, 6)])
    assert np.abs(long - sc.render(3.0)).mean() > 1e-3 * np.abs(long).mean()   # the room moves within
