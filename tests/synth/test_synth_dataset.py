"""On-disk synthesis: layout, bit-for-bit determinism, physical consistency, stored flow."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vs_hdrvid.ops.exr import read_exr
from vs_hdrvid.ops.images import read_image
from vs_hdrvid.synth.cli import add_cli, run_cli
from vs_hdrvid.synth.dataset import generate
from vs_hdrvid.synth.degrade import crf_gamma, crf_gamma_inv, expose
from vs_hdrvid.synth.sampling import build_scene
from vs_hdrvid.synth.spec import SceneSpec, frame_times


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate("micro", root=root, progress=False, panoramas=None)
    return root / "micro"


def _scenes(base: Path) -> list[tuple[Path, dict]]:
    index = json.loads((base / "index.json").read_text())
    return [(base / m["path"], m) for m in index]


def _warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward-warp ``(H, W, 3)`` with ``(2, H, W)`` flow (grid_sample at p + flow)."""
    h, w = img.shape[:2]
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    g = np.stack([2 * (xs + flow[0]) / (w - 1) - 1, 2 * (ys + flow[1]) / (h - 1) - 1], -1)
    out = F.grid_sample(torch.from_numpy(img).permute(2, 0, 1)[None], torch.from_numpy(g[None]).float(),
                        align_corners=True, padding_mode="border")
    return out[0].permute(1, 2, 0).numpy()


def test_layout(micro):
    scenes = _scenes(micro)
    assert len(scenes) == 2
    for d, meta in scenes:
        n = meta["frames"]
        for key in ("preset", "scene", "seed", "source", "width", "height", "frames", "exposures",
                    "exposure_count", "crf", "bit_depth", "degradation", "noise", "motion", "subframes",
                    "generator_version"):
            assert key in meta
        assert meta == {**json.loads((d / "meta.json").read_text()), "path": d.name}
        evs = [float(x) for x in (d / "exposures.txt").read_text().split()]
        assert evs == [meta["exposures"][i % meta["exposure_count"]] for i in range(n)]
        for i in range(n):
            ldr = read_image(d / "ldr" / f"{i:05d}.png")
            assert ldr.shape == (meta["height"], meta["width"], 3)
            assert ldr.dtype == (np.uint8 if meta["bit_depth"] == 8 else np.uint16)
            assert read_exr(d / "gt" / f"{i:05d}.exr").shape == ldr.shape
            fl = np.load(d / "flow" / f"{i:05d}.npz")
            want = ({"fwd", "occ_fwd"} if i < n - 1 else set()) | ({"bwd", "occ_bwd"} if i > 0 else set())
            assert set(fl.files) == want
            for k in want:
                shape = (2, meta["height"], meta["width"]) if k in ("fwd", "bwd") else ldr.shape[:2]
                assert fl[k].shape == shape
                assert fl[k].dtype == (np.float32 if k in ("fwd", "bwd") else np.uint8)


def test_deterministic_bit_identical(micro, tmp_path):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(["synth", "--preset", "micro", "--root", str(tmp_path), "--panoramas",
                              str(tmp_path / "none")])
    assert run_cli(args) == 0
    a = sorted(p.relative_to(micro) for p in micro.rglob("*") if p.is_file())
    b = sorted(p.relative_to(tmp_path / "micro") for p in (tmp_path / "micro").rglob("*") if p.is_file())
    assert a == b and len(a) > 40
    for rel in a:
        assert (micro / rel).read_bytes() == (tmp_path / "micro" / rel).read_bytes(), rel


def _residual_check(meta: dict, x: np.ndarray, ldr: np.ndarray, ev: float) -> None:
    """Stored LDR vs clean exposure ``x``: residual variance matches noise + quantisation."""
    noise = meta["noise"]
    qmax = 2 ** meta["bit_depth"] - 1
    lin = crf_gamma_inv(ldr.astype(np.float64) / qmax)
    if noise["model"] == "gaussian":
        var = (noise["sigma"] ** 2 if ev < noise["applies_below_ev"] else 0.0)
        step = 2.2 * np.clip(crf_gamma(x), 1e-3, 1) ** 1.2 / qmax      # 8-bit gamma step in linear
        if var == 0.0:                                                  # exact up to rounding
            assert np.abs(ldr / qmax - crf_gamma(x)).max() <= 0.5 / qmax + 1e-3
            return
    else:
        var = noise["lambda_read"] + noise["lambda_shot"] * x
        step = np.full_like(x, 1 / (2 ** noise["linear_bits"] - 1))
    expected = var + step ** 2 / 12
    sel = (x > 0.05) & (x < 0.9)
    assert sel.sum() > 500
    r = lin - x
    assert abs(r[sel].mean()) < 3 * np.sqrt(expected[sel].mean() / sel.sum()) + 2e-4
    ratio = (r[sel] ** 2).mean() / expected[sel].mean()
    assert 0.7 < ratio < 1.4, ratio


def test_physical_consistency(micro):
    kinds = set()
    for d, meta in _scenes(micro):
        kinds.add(meta["degradation"])
        spec = SceneSpec.from_dict(meta["spec"])
        scene, _ = build_scene(spec)
        xs, ldrs, evs = [], [], []
        for i in range(meta["frames"]):
            ev = float((d / "exposures.txt").read_text().split()[i])
            times = frame_times(spec, i)
            if len(times) == 1:      # instantaneous: the stored ground truth is what was exposed
                h = read_exr(d / "gt" / f"{i:05d}.exr").astype(np.float64)
            else:                    # long DeAltHDR frame: mean of its sub-frames
                h = scene.render_mean(times).astype(np.float64)
                gt = read_exr(d / "gt" / f"{i:05d}.exr")
                assert np.allclose(gt, scene.render(float(i)), rtol=1e-3, atol=1e-4)
            xs.append(expose(h, ev))
            ldrs.append(read_image(d / "ldr" / f"{i:05d}.png"))
            evs.append(ev)
        for ev in set(evs):
            idx = [i for i, e in enumerate(evs) if e == ev]
            _residual_check(meta, np.stack([xs[i] for i in idx]), np.stack([ldrs[i] for i in idx]), ev)
    assert kinds == {"clean", "day"}


def test_stored_flow_warps(micro):
    for d, meta in _scenes(micro):
        key = meta["key"]
        for i in range(meta["frames"] - 1):
            a = read_exr(d / "gt" / f"{i:05d}.exr")
            b = read_exr(d / "gt" / f"{i + 1:05d}.exr")
            f = np.load(d / "flow" / f"{i:05d}.npz")
            g = np.load(d / "flow" / f"{i + 1:05d}.npz")
            tm = lambda x: np.log1p(np.maximum(x, 0) / key)             # noqa: E731
            for src, dst, flow, occ in ((b, a, f["fwd"], f["occ_fwd"]), (a, b, g["bwd"], g["occ_bwd"])):
                ok = occ == 0
                assert ok.mean() > 0.4
                err = np.abs(tm(_warp(src, flow)) - tm(dst)).mean(-1)
                still = np.abs(tm(src) - tm(dst)).mean(-1)
                assert err[ok].mean() < 0.06
                assert np.median(err[ok]) < 0.2 * np.median(still[ok])
