"""Analytic ground-truth flow, occlusion, sub-frame motion blur and geometric augmentation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vs_hdrvid.synth.augment import Augment
from vs_hdrvid.synth.camera import Background, CameraPath
from vs_hdrvid.synth.layers import Layer, LayerMotion
from vs_hdrvid.synth.sampling import build_scene
from vs_hdrvid.synth.scene import Scene
from vs_hdrvid.synth.sources import procedural_panorama, procedural_texture
from vs_hdrvid.synth.spec import SceneSpec, frame_times


def _warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward-warp channel-first ``(C, H, W)`` with ``(2, H, W)`` flow (grid_sample at p + flow)."""
    c, h, w = img.shape
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    g = np.stack([2 * (xs + flow[0]) / (w - 1) - 1, 2 * (ys + flow[1]) / (h - 1) - 1], -1)
    out = F.grid_sample(torch.from_numpy(np.ascontiguousarray(img))[None].float(),
                        torch.from_numpy(g[None]).float(), align_corners=True, padding_mode="border")
    return out[0].numpy()


def _tm(x: np.ndarray, key: float) -> np.ndarray:
    return np.log1p(np.maximum(x, 0) / key)


@pytest.fixture(scope="module", params=["small", "large"])
def scene(request):
    spec = SceneSpec("t", 11, "proc:5", 128, 96, 6, (-1.5, 1.5), motion=request.param, layers=(2, 3),
                     texture_sources=("proc:6",))
    with torch.no_grad():
        sc, info = build_scene(spec)
    return sc, info["key"]


def test_flow_warp_reproduces_frame(scene):
    sc, key = scene
    a, b = sc.render(2.0).transpose(2, 0, 1), sc.render(3.0).transpose(2, 0, 1)
    for src, dst, (flow, occ) in ((b, a, sc.flow(2.0, 3.0)), (a, b, sc.flow(3.0, 2.0))):
        assert flow.shape == (2, 96, 128) and flow.dtype == np.float32 and occ.dtype == np.uint8
        ok = occ == 0
        err = np.abs(_tm(_warp(src, flow), key) - _tm(dst, key)).mean(0)
        still = np.abs(_tm(src, key) - _tm(dst, key)).mean(0)
        assert err[ok].mean() < 0.03                 # bilinear resampling of sharp edges dominates this
        assert np.median(err[ok]) < 0.1 * np.median(still[ok])


def test_flow_cycle_consistent(scene):
    """fwd(p) + bwd(p + fwd(p)) = 0 wherever p is visible in both frames."""
    sc, _ = scene
    fwd, occ = sc.flow(1.0, 2.0)
    bwd, _ = sc.flow(2.0, 1.0)
    ok = occ == 0
    back = _warp(bwd, fwd)
    resid = np.hypot(*(fwd + back))
    # bilinear sampling of bwd across a layer edge mixes two motions: judge the bulk
    assert np.median(resid[ok]) < 0.02
    assert np.mean(resid[ok] < 0.1) > 0.95


def test_occlusion_marks_covered_points():
    """A layer sliding over a static background occludes exactly the pixels it newly covers."""
    pano = procedural_panorama(3, 256)
    bg = Background([pano], "equirect", CameraPath((0.0, 0.0, 0.0)), 96, 64)
    tex = procedural_texture("checker", 1, 64)
    layer = Layer(radius=12.0, shape="ellipse", texture=tex,
                  motion=LayerMotion(b0=(30.0, 32.0), vel=(8.0, 0.0)))
    sc = Scene(bg, [layer])
    flow, occ = sc.flow(0.0, 1.0)
    assert np.abs(flow[:, 32, 80]).max() < 1e-6                    # static background far away
    assert np.allclose(flow[:, 32, 30], [8.0, 0.0], atol=1e-6)      # the layer's centre moves by v
    assert occ[32, 45] == 1                                         # covered at t = 1 by the layer
    assert occ[32, 30] == 0 and occ[32, 80] == 0
    assert occ[32, 12] == 0                                         # background uncovered later: visible
    _, occ_b = sc.flow(1.0, 0.0)
    assert occ_b[32, 21] == 1                                       # disoccluded: hidden at t = 0


def test_flow_out_of_view_is_occluded():
    bg = Background([procedural_panorama(3, 256)], "equirect", CameraPath((0.0, 0.0, 0.0), rate=(0.05, 0, 0)),
                    96, 64)
    flow, occ = Scene(bg, []).flow(0.0, 1.0)
    x1 = np.arange(96)[None] + flow[0]
    assert np.all(occ[(x1 < 0) | (x1 > 95)] == 1)
    assert occ.mean() < 0.3 and np.abs(flow[0]).mean() > 2


def test_long_exposure_is_mean_of_subframes():
    spec = SceneSpec("t", 3, "proc:5", 48, 32, 4, (-2.0, 1.0), degradation="day", motion="large", subframes=64)
    times = frame_times(spec, 3)
    assert len(times) == 63 and math.isclose(np.mean(times), 3.0) and frame_times(spec, 2) == [2.0]
    sc, _ = build_scene(spec)
    sub = times[::9]                                                 # a few for speed
    mean = sc.render_mean(sub)
    ref = np.mean(np.stack([sc.render(t).astype(np.float64) for t in sub]), axis=0)
    assert np.allclose(mean, ref, rtol=1e-6, atol=1e-7)
    assert np.abs(mean - sc.render(3.0)).mean() > 1e-3 * np.abs(ref).mean()  # motion blurs


@pytest.mark.parametrize("aug", [Augment(h, v, k, (2, 0, 1)) for h in (False, True) for v in (False, True)
                                 for k in (0, 1, 3)][::2])
def test_augment_keeps_flow_valid(scene, aug):
    sc, key = scene
    a, b = sc.render(2.0).transpose(2, 0, 1), sc.render(3.0).transpose(2, 0, 1)
    flow, occ = sc.flow(2.0, 3.0)
    a2, b2, f2, o2 = aug.image(a), aug.image(b), aug.flow(flow), aug.mask(occ)
    tb = torch.from_numpy(b)
    assert torch.equal(aug.image(tb), torch.from_numpy(b2))                # numpy and torch agree
    ok = o2 == 0
    err = np.abs(_tm(_warp(b2, f2), key) - _tm(a2, key)).mean(0)
    assert err[ok].mean() < 0.03
