"""The ``shifted`` preset: Bayer sensor noise, handheld shake, reproducibility and disjoint sources."""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest

from vs_hdrvid.synth.cli import add_cli
from vs_hdrvid.synth.dataset import generate
from vs_hdrvid.synth.degrade import NoiseModel, crf_gamma_inv
from vs_hdrvid.synth.presets import PRESETS, Recipe, get_preset
from vs_hdrvid.synth.sampling import build_scene
from vs_hdrvid.synth.sensor import (SENSOR_RANGES, SensorModel, colour_matrix, demosaic_bilinear, mosaic,
                                    sample_sensor)
from vs_hdrvid.synth.shake import catmull_rom
from vs_hdrvid.synth.spec import SceneSpec, frame_times


def _sensor(**kw) -> SensorModel:
    base = dict(kind="sensor_day", electrons=500.0, read=0.004, row=0.001, col=0.0015, prnu=0.04,
                wb=(2.0, 1.0, 1.7), ccm=0.4, pattern_seed=7)
    return SensorModel(**{**base, **kw})


def test_raw_variance_matches_formula():
    """Flat mosaic patches: Var = y/Q + p^2 y^2 + r^2 + r_row^2 + r_col^2, quadratic (not Eq. A's line)."""
    m = _sensor()
    rng = np.random.default_rng(0)
    levels = np.array([0.02, 0.1, 0.3, 0.6, 0.9])
    var = np.array([np.var(m.sensor_noise(np.full((384, 384), y), rng)) for y in levels])
    assert np.allclose(var, m.raw_variance(levels), rtol=0.03)
    quad, lin, const = np.polyfit(levels, var, 2)
    assert quad == pytest.approx(m.prnu ** 2, rel=0.25) and lin == pytest.approx(1 / m.electrons, rel=0.2)
    lin_fit = np.polyval(np.polyfit(levels, var, 1), levels)        # Eq. A's straight line misses it
    assert np.abs(lin_fit - var).max() > 10 * np.abs(np.polyval([quad, lin, const], levels) - var).max()


def test_fixed_patterns_fixed_and_banding_per_frame():
    m = _sensor(prnu=0.01, row=0.004, col=0.003)
    rng = np.random.default_rng(1)
    y = np.full((256, 256), 0.3)
    a, b = m.sensor_noise(y, rng), m.sensor_noise(y, rng)
    col_a, col_b = a.mean(0) - 0.3, b.mean(0) - 0.3                 # fixed column pattern: the same
    assert np.corrcoef(col_a, col_b)[0, 1] > 0.5
    row_a, row_b = a.mean(1) - a.mean(), b.mean(1) - b.mean()       # row banding: new every frame
    assert abs(np.corrcoef(row_a, row_b)[0, 1]) < 0.3
    white = (m.raw_variance(0.3) - m.row ** 2) / 256                # variance of a row mean without banding
    assert np.var(row_a) > 3 * white


def test_demosaic_exact_on_linear_and_mosaic_roundtrip():
    yy, xx = np.mgrid[0:20, 0:27].astype(np.float64)
    rgb = np.stack([0.01 * xx + 0.1, 0.02 * yy + 0.05, 0.005 * (xx + yy) + 0.2], -1)
    out = demosaic_bilinear(mosaic(rgb))
    assert np.allclose(out[1:-1, 1:-1], rgb[1:-1, 1:-1], atol=1e-12)
    flat = demosaic_bilinear(mosaic(np.full((9, 11, 3), 0.4)))
    assert np.allclose(flat, 0.4, atol=1e-12)
    m = colour_matrix(0.4)
    assert np.allclose(m.sum(1), 1) and np.all(np.linalg.inv(m) > 0)


def test_sensor_pipeline_noise_structure():
    """End to end on grey: per-channel noise levels and cross-channel correlation, both absent from Eq. A."""
    rng = np.random.default_rng(2)
    h = np.full((128, 128, 3), 0.2, np.float32)
    ldr = _sensor(prnu=0.01).apply(h, 0.0, rng)
    assert ldr.dtype == np.uint16
    lin = crf_gamma_inv(ldr / 65535.0)
    assert np.allclose(lin.mean((0, 1)), 0.2, atol=0.01)
    assert np.abs(lin * 1023 - np.round(lin * 1023)).max() < 0.1          # 10-bit linear levels
    r = (lin - lin.mean((0, 1))).reshape(-1, 3)
    std = r.std(0)
    assert std[0] > 1.2 * std[1] and std[2] > 1.1 * std[1]              # white-balance gains
    corr = np.corrcoef(r.T)
    assert abs(corr[0, 1]) > 0.08 and abs(corr[1, 2]) > 0.08
    eq_a = NoiseModel("day", lambda_shot=3e-4, lambda_read=3e-5, linear_bits=10, png_bits=16)
    ra = (crf_gamma_inv(eq_a.apply(h, 0.0, rng) / 65535.0) - 0.2).reshape(-1, 3)
    assert abs(np.corrcoef(ra.T)[0, 1]) < 0.03


def test_sensor_sampling():
    rng = np.random.default_rng(3)
    for kind in ("day", "night"):
        p = SENSOR_RANGES[kind]
        for _ in range(20):
            s = sample_sensor(f"sensor_{kind}", rng)
            assert p["electrons"][0] <= s.electrons <= p["electrons"][1]
            assert p["read"][0] <= s.read <= p["read"][1] and s.row < s.read and s.col < s.read
            assert s.to_dict()["model"] == "poisson-gaussian-bayer"
    with pytest.raises(ValueError):
        sample_sensor("day", rng)


def _spec(**kw) -> SceneSpec:
    return SceneSpec("t", 11, "proc:7", 64, 48, 4, (-2.0, 1.0), "sensor_day", "large", 64,
                     **{"trajectory": "handheld", **kw})


def test_handheld_path_is_nonlinear_and_blurs_differently():
    sc, _ = build_scene(_spec())
    smooth_sc, _ = build_scene(_spec(trajectory="smooth"))
    path, smooth = sc.background.path, smooth_sc.background.path
    assert dataclasses.replace(path, jitter=(), jitter_t0=0.0, jitter_dt=0.0) == smooth   # same smooth part
    n = len(path.jitter) // 3
    knots = path.jitter[:n]
    assert catmull_rom(knots, path.jitter_t0, path.jitter_dt, path.jitter_t0 + 5 * path.jitter_dt) == \
        pytest.approx(knots[5])
    assert abs(np.mean(knots)) < 1e-12

    f = path.focal(0.0, 64)
    ts = np.array(frame_times(_spec(), 1))
    basis = np.stack([np.ones_like(ts), ts], 1)

    def bend(p) -> float:
        """RMS distance (px) of the exposure's path from its best straight constant-speed line."""
        a = np.array([p.angles(t)[:2] for t in ts]) * f
        r = a - basis @ np.linalg.lstsq(basis, a, rcond=None)[0]
        return float(np.sqrt((r ** 2).sum(1).mean()))

    assert bend(path) > 0.3 and bend(path) > 3 * bend(smooth)
    sub = list(ts[::4])
    long_shake, long_smooth = sc.render_mean(sub), smooth_sc.render_mean(sub)
    diff = np.abs(long_shake - long_smooth).mean() / np.abs(long_smooth).mean()
    assert diff > 0.01
    flow, occ = sc.flow(1.0, 2.0)                                         # the jitter is in the exact flow
    flow_s, _ = smooth_sc.flow(1.0, 2.0)
    assert np.abs(flow - flow_s)[:, occ == 0].mean() > 0.05


def test_shifted_preset_definition():
    p = get_preset("shifted")
    specs = p.plan()
    assert len(specs) == 8 and all((s.width, s.height, s.frames) == (256, 256, 24) for s in specs)
    assert all(s.exposures == (-2.0, 1.0) and s.subframes == 64 and s.trajectory == "handheld" for s in specs)
    combos = [(s.source, s.degradation) for s in specs]
    assert {c: combos.count(c) for c in combos} == {(a, b): 2 for a in ("forest", "night")
                                                    for b in ("sensor_day", "sensor_night")}
    assert {s.motion for s in specs} == {"small", "medium", "large"}
    assert all(s.key[1] <= 0.1 for s in specs if s.degradation == "sensor_night")
    train = PRESETS["train"].plan()
    train_names = {s.source for s in train} | {t for s in train for t in s.texture_sources}
    assert not train_names & ({s.source for s in specs} | set(specs[0].texture_sources))
    lo, hi = specs[0].texture_seeds
    for other in PRESETS.values():
        if other.name != "shifted":
            olo, ohi = other.texture_seeds
            assert ohi <= lo or hi <= olo, other.name
    seeds = [s.seed for q in PRESETS.values() for s in q.plan(scenes=8)]
    assert len(seeds) == len(set(seeds))
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_cli(sub)
    assert parser.parse_args(["synth", "--preset", "shifted"]).preset == "shifted"


def test_shifted_reproducible_layout(tmp_path):
    """A miniature of the preset (procedural sources) twice: byte-identical, meta records the shift."""
    tiny = PRESETS["shifted"].replace(
        width=40, height=32, frames=4, scenes=2, panoramas=("proc:301", "proc:302"), write_flow=False,
        recipes=tuple(Recipe(r.exposures, r.degradation, 8, r.extra) for r in PRESETS["shifted"].recipes))
    a = generate(tiny, root=tmp_path / "a", progress=False, panoramas=None)
    generate(tiny, root=tmp_path / "b", progress=False, panoramas=None)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 1 + 2 * (2 + 2 * 4)
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    for m in a:
        d = tmp_path / "a" / "shifted" / m["path"]
        assert (d / "exposures.txt").read_text().split() == ["-2.0", "1.0"] * 2
        meta = json.loads((d / "meta.json").read_text())
        assert meta["degradation"] in ("sensor_day", "sensor_night") and meta["bit_depth"] == 16
        assert meta["noise"]["model"] == "poisson-gaussian-bayer" and meta["noise"]["electrons_full_scale"] > 0
        assert meta["trajectory"]["kind"] == "handheld" and meta["scene_description"]["camera"]["jitter"]
        assert SceneSpec.from_dict(meta["spec"]).trajectory == "handheld"


def test_smooth_records_unchanged():
    """Older presets' specs and camera records carry no trajectory/jitter keys (their data stays valid)."""
    spec = PRESETS["test"].plan()[0]
    assert "trajectory" not in spec.to_dict() and SceneSpec.from_dict(spec.to_dict()) == spec
    sc, _ = build_scene(dataclasses.replace(spec, source="proc:1", texture_sources=(), width=32, height=24))
    assert "jitter" not in sc.describe()["camera"]
    with pytest.raises(ValueError, match="trajectory"):
        dataclasses.replace(spec, trajectory="wobbly")
