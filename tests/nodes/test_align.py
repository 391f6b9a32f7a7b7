"""align (similarity props between frames 3 stops apart), its estimates against similarity_between
pair by pair, and ExposureWindow's composition of them."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid.bridge import NodeRunner, window_index
from vs_hdrvid.devices import resolve_device
from vs_hdrvid.nodes._window import ExposureWindow
from vs_hdrvid.ops.alignment import similarity_between

from conftest import clip_from_arrays, make_sequence, planes, step_matrix


def corner_rms(m_est: np.ndarray, m_true: np.ndarray, h: int, w: int) -> float:
    c = np.array([[0.0, w - 1, 0, w - 1], [0, 0, h - 1, h - 1], [1, 1, 1, 1]])
    return float(np.sqrt(np.mean(np.sum((np.asarray(m_est) @ c - np.asarray(m_true) @ c) ** 2, 0))))


def sim_prop(frame: vs.VideoFrame) -> np.ndarray:
    return np.array(frame.props["HdrSimilarityPrev"], np.float64).reshape(2, 3)


# ------------------------------------------------------------------------------------- accuracy
def test_similarity_540p_three_stops_apart(tmp_path):
    motions = [(4.0, -3.0, 0.8, 1.015), (-5.0, 2.5, -1.0, 0.982)]
    seq = make_sequence(tmp_path, [-1.5, 1.5], 3, size=(540, 960), motion=motions)
    lin = hv.linearize(hv.read_images(seq.pattern), exposures=[-1.5, 1.5], device="cpu")
    al = hv.align(lin, device="cpu")
    for n in (1, 2):
        f = al.get_frame(n)
        err = corner_rms(sim_prop(f), seq.transforms[n], 540, 960)
        assert err <= 0.25, (n, err)
        assert f.props["HdrSimilarityConfidence"] > 0.5


def test_align_props_and_passthrough(tmp_path):
    seq = make_sequence(tmp_path, [-2.0, 0.0, 2.0], 4, size=(64, 96), motion=(2.0, -1.0, 0.0, 1.0))
    lin = hv.linearize(hv.read_images(seq.pattern), exposures=[-2, 0, 2], device="cpu")
    al = hv.align(lin, device="cpu")
    assert al.format.id == vs.RGBS and al.num_frames == 4
    f0 = al.get_frame(0)
    assert list(f0.props["HdrSimilarityPrev"]) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert f0.props["HdrSimilarityConfidence"] == 0.0
    for n in range(4):
        f = al.get_frame(n)
        np.testing.assert_array_equal(planes(f), planes(lin.get_frame(n)))  # pixels untouched
        assert f.props["HdrExposureEV"] == [-2, 0, 2][n % 3]
        if n:
            assert corner_rms(sim_prop(f), seq.transforms[n], 64, 96) < 0.5


def test_align_warp_registers_onto_previous(tmp_path):
    seq = make_sequence(tmp_path, [-1.0, 1.0], 2, size=(64, 96), motion=(3.0, 2.0, 0.0, 1.0))
    lin = hv.linearize(hv.read_images(seq.pattern), exposures=[-1, 1], device="cpu")
    warped = hv.align(lin, warp=True, device="cpu").get_frame(1)
    prev, cur = seq.gt[0], planes(lin.get_frame(1))
    inner = (slice(8, -8), slice(8, -8))
    ok = (seq.ldr[0] < 0.9).all(-1) & (seq.ldr[1] < 0.9).all(-1)
    err_warped = np.abs(np.log((planes(warped) + 1e-3) / (prev + 1e-3)))[inner][ok[inner]].mean()
    err_raw = np.abs(np.log((cur + 1e-3) / (prev + 1e-3)))[inner][ok[inner]].mean()
    assert err_warped < 0.3 * err_raw


def test_align_rejects_bad_input():
    rgb24 = vs.core.std.BlankClip(format=vs.RGB24, width=32, height=32, length=4)
    with pytest.raises(vs.Error, match="hdrvid.align"):
        hv.align(rgb24)
    lin = hv.linearize(vs.core.std.BlankClip(format=vs.RGBS, width=32, height=32, length=4, color=[0.2] * 3),
                       exposures=[-1, 1], device="cpu")
    with pytest.raises(vs.Error, match="warp"):
        hv.align(lin, warp="yes")
    with pytest.raises(vs.Error, match="hdrvid.align"):
        hv.align(lin, device="cuda:7" if not resolve_device("auto").type == "cuda" else "nonsense")


# ------------------------------------------------------------------------ window composition
def random_similarities(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    mats = [np.array([[1.0, 0, 0], [0, 1.0, 0]])]
    for _ in range(n - 1):
        mats.append(step_matrix((rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-2, 2),
                                 rng.uniform(0.97, 1.03)), w, h))
    return mats


def chain(mats: list[np.ndarray], m: int, n: int) -> np.ndarray:
    """True transform mapping frame m onto frame n from per-frame 'n-1 -> n' matrices."""
    acc = np.eye(3)
    for i in range(min(m, n) + 1, max(m, n) + 1):
        acc = np.vstack([mats[i], [0, 0, 1]]) @ acc
    return (acc if m <= n else np.linalg.inv(acc))[:2]


@pytest.mark.parametrize("evs,radius", [([-1.5, 1.5], 1), ([-1.5, 1.5], 2), ([-2.0, 0.0, 2.0], 1),
                                        ([-2.0, 0.0, 2.0], 2)])
def test_exposure_window_composes_similarities(evs, radius):
    num, h, w, period = 8, 16, 24, len(evs)
    mats = random_similarities(num, h, w, seed=radius + period)
    props = [{"HdrExposureEV": evs[k % period], "HdrExposureIndex": k % period, "HdrExposureCount": period,
              "HdrExposurePattern": evs, "HdrSimilarityPrev": mats[k].flatten().tolist()}
             for k in range(num)]
    clip = clip_from_arrays([np.full((h, w, 3), k, np.float32) for k in range(num)], props)
    offsets = list(range(-radius, radius + 1))
    window = ExposureWindow(clip, offsets, period, "test")
    runner = NodeRunner("test", resolve_device("cpu"))
    for n in range(num):
        got = window.gather(n, [c.get_frame(n) for c in window.clips], runner)
        for i, o in enumerate(offsets):
            m = window_index(n, o, num, period)
            assert got.sources[i] == m
            assert float(got.frames[i].mean()) == m
            assert float(got.ev[i]) == evs[(n + o) % period]
            np.testing.assert_allclose(got.to_ref[i].numpy(), chain(mats, m, n), atol=2e-4, rtol=0,
                                       err_msg=f"n={n} offset={o} source={m}")
        assert got.props["HdrExposureIndex"] == n % period


def test_exposure_window_identity_without_props():
    clip = clip_from_arrays([np.full((8, 8, 3), k, np.float32) for k in range(5)],
                            [{"HdrExposureEV": (-1.0, 1.0)[k % 2]} for k in range(5)])
    window = ExposureWindow(clip, [-1, 0, 1], 2, "test")
    got = window.gather(0, [c.get_frame(0) for c in window.clips], NodeRunner("t", resolve_device("cpu")))
    for i in range(3):
        np.testing.assert_array_equal(got.to_ref[i].numpy(), [[1, 0, 0], [0, 1, 0]])


def test_exposure_window_too_short():
    clip = clip_from_arrays([np.zeros((8, 8, 3), np.float32)] * 2)
    with pytest.raises(vs.Error, match="hdrvid.test"):
        ExposureWindow(clip, [-1, 0, 1], 3, "test")
    assert math.isfinite(ExposureWindow(clip, [-1, 0, 1], 2, "test").reach)


def test_align_clip_shorter_than_pattern_raises_vs_error():
    src = vs.core.std.BlankClip(format=vs.RGBS, width=16, height=16, length=2, color=[0.2] * 3)
    lin = hv.linearize(src, exposures=[-2, 0, 2], device="cpu")
    with pytest.raises(vs.Error, match="hdrvid.align"):
        hv.align(lin)


def test_node_equals_pairwise_estimates():
    """The node reuses each frame's pooled luminance (at factor 2 here) for its next pair: the
    same transforms as estimating every pair from scratch, for a 3-exposure pattern (a different
    clip level per pair)."""
    rng = np.random.default_rng(0)
    base = np.exp2(rng.normal(-2, 1.5, (96, 520)).astype(np.float32))
    base = F.avg_pool2d(torch.from_numpy(base)[None, None], 5, 1, 2).numpy()[0, 0]
    evs = [-2.0, 0.0, 2.0]
    arrays = [np.clip(np.roll(base, n, 1)[..., None] * [1.0, 0.9, 0.8] * 2 ** evs[n % 3], 0, 1).astype(np.float32)
              / 2 ** evs[n % 3] for n in range(5)]
    props = [{"HdrExposureEV": evs[n % 3], "HdrExposureIndex": n % 3, "HdrExposureCount": 3,
              "HdrExposurePattern": evs} for n in range(5)]
    out = hv.align(clip_from_arrays(arrays, props), device="cpu")
    for n in range(1, 5):
        t = lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy())[None]  # noqa: E731
        m, conf = similarity_between(t(arrays[n - 1]), t(arrays[n]), evs[(n - 1) % 3], evs[n % 3])
        p = out.get_frame(n).props
        np.testing.assert_allclose(p["HdrSimilarityPrev"], m[0].flatten().tolist(), rtol=0, atol=1e-5)
        assert p["HdrSimilarityConfidence"] == pytest.approx(float(conf[0]), abs=1e-6)
