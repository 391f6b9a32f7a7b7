"""Presets and splits, strict configs, sources (fetch, RGBE, user folders), PNG codec, CLI errors."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from vs_hdrvid.ops.exr import write_exr
from vs_hdrvid.synth import sources
from vs_hdrvid.synth.cli import add_cli, run_cli
from vs_hdrvid.synth.dataset import generate
from vs_hdrvid.synth.presets import PRESETS, SPLIT_PANORAMAS, get_preset
from vs_hdrvid.synth.sampling import build_scene
from vs_hdrvid.synth.sources import BLENDER_PANORAMAS, fetch_panoramas, find_sources, read_hdr_image
from vs_hdrvid.synth.spec import SceneSpec


def _used(preset: str) -> tuple[set, range]:
    specs = PRESETS[preset].plan()
    names = {s.source for s in specs} | {t for s in specs for t in s.texture_sources}
    lo, hi = specs[0].texture_seeds
    assert all(s.texture_seeds == (lo, hi) for s in specs)
    return names, range(lo, hi)


def test_splits_disjoint():
    used = {p: _used(p) for p in ("train", "val", "test")}
    for a in used:
        for b in used:
            if a < b:
                assert not used[a][0] & used[b][0], (a, b)
                ra, rb = used[a][1], used[b][1]
                assert ra.stop <= rb.start or rb.stop <= ra.start
    assert set().union(*SPLIT_PANORAMAS.values()) == set(BLENDER_PANORAMAS)
    assert used["test"][0] == {"forest", "night"} and used["val"][0] == {"sunset"}


def test_test_preset_covers_the_protocol():
    specs = PRESETS["test"].plan()
    assert 12 <= len(specs) <= 18 and all(s.width <= 960 and s.height <= 540 for s in specs)
    combos = {(len(s.exposures), s.degradation, s.motion) for s in specs}
    for motion in ("small", "medium", "large"):
        assert {(2, "clean", motion), (3, "clean", motion), (2, "day", motion), (2, "night", motion)} <= combos
    assert {s.exposures for s in specs if s.degradation != "clean"} == {(-2.0, 1.0)}
    assert len({s.scene_id for s in specs}) == len(specs)
    seeds = [s.seed for p in PRESETS.values() for s in p.plan(scenes=3)]
    assert len(seeds) == len(set(seeds))
    assert len(PRESETS["train"].plan(scenes=7)) == 7


def test_configs_reject_unknown_keys():
    spec = PRESETS["micro"].plan()[0]
    assert SceneSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(TypeError, match="unknown keys"):
        SceneSpec.from_dict({**spec.to_dict(), "subframe": 8})
    with pytest.raises(TypeError):
        PRESETS["micro"].replace(scene=3)
    with pytest.raises(ValueError):
        SceneSpec("x", 0, "proc:1", 32, 32, 4, (1.0, -2.0), degradation="day", subframes=8)
    with pytest.raises(KeyError, match="unknown preset"):
        get_preset("tset")


def test_fetch_idempotent_and_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get is not available"):
        fetch_panoramas(tmp_path / "p")
    for n in BLENDER_PANORAMAS:
        (tmp_path / "p").mkdir(exist_ok=True)
        (tmp_path / "p" / f"{n}.exr").write_bytes(b"x")
    assert [p.name for p in fetch_panoramas(tmp_path / "p")] == [f"{n}.exr" for n in BLENDER_PANORAMAS]


def test_rgbe_reader(tmp_path):
    rgbe = np.array([[[128, 64, 32, 129], [0, 0, 0, 0]]], np.uint8)         # 1x2 flat scanline
    (tmp_path / "a.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 1 +X 2\n" + rgbe.tobytes())
    img = read_hdr_image(tmp_path / "a.hdr")
    assert img.shape == (1, 2, 3)
    assert np.allclose(img[0, 0], [128 / 128, 64 / 128, 32 / 128]) and np.all(img[0, 1] == 0)


def test_user_sources_plate_and_sequence(tmp_path):
    """A folder of the user's own HDR images replaces the named panoramas (plates and sequences)."""
    rng = np.random.default_rng(0)
    write_exr(tmp_path / "plate.exr", rng.uniform(0.01, 5, (60, 90, 3)).astype(np.float32))
    (tmp_path / "seq").mkdir()
    for i in range(4):
        write_exr(tmp_path / "seq" / f"{i:05d}.exr", np.full((40, 60, 3), 0.1 * (i + 1), np.float32))
    found = find_sources(tmp_path)
    assert {k: v.kind for k, v in found.items()} == {"plate": "plate", "seq": "sequence"}
    preset = PRESETS["micro"].replace(name="user", panoramas=("forest",), scenes=2)
    specs = preset.plan(panoramas=tmp_path)
    assert {s.source for s in specs} == {str(tmp_path / "plate.exr"), str(tmp_path / "seq")}
    for s in specs:
        sc, info = build_scene(s)
        assert info["source_kind"] in ("plate", "sequence")
        assert np.isfinite(sc.render(1.0)).all()
        flow, occ = sc.flow(1.0, 2.0)
        assert np.isfinite(flow).all() and occ.mean() < 0.9
    with pytest.raises(FileNotFoundError, match="fetch-panoramas"):
        PRESETS["test"].plan(panoramas=tmp_path / "empty")
    (tmp_path / "forest.exr").write_bytes((tmp_path / "plate.exr").read_bytes())
    with pytest.raises(FileNotFoundError, match="night"):
        PRESETS["test"].plan(panoramas=tmp_path)


def test_flat_preset_and_skip(tmp_path):
    preset = PRESETS["sample"].replace(panoramas=("proc:3",), width=48, height=32, frames=4)
    metas = generate(preset, root=tmp_path, progress=False, panoramas=None)
    d = tmp_path / "sample"
    assert sorted(p.name for p in d.iterdir()) == ["exposures.txt", "gt", "ldr", "meta.json"]
    assert json.loads((d / "meta.json").read_text()) == metas[0] and metas[0]["flow"] is False
    stamp = (d / "meta.json").stat().st_mtime_ns
    generate(preset, root=tmp_path, progress=False, panoramas=None)         # complete: skipped
    assert (d / "meta.json").stat().st_mtime_ns == stamp


def test_cli_errors(capsys):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    assert run_cli(parser.parse_args(["synth"])) == 2
    args = parser.parse_args(["synth", "--preset", "test", "--panoramas", "/nonexistent/dir"])
    assert run_cli(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vs-hdrvid synth:") and "fetch-panoramas" in err[-1]


def test_package_exports():
    import vs_hdrvid.synth as synth
    import vs_hdrvid.synth.dataset  # noqa: F401  (a submodule import must not shadow the function)

    for name in synth.__all__:
        assert getattr(synth, name) is not None
    assert callable(synth.generate) and callable(synth.fetch_panoramas)
