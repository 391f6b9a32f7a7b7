"""linearize: radiometry, input formats, exposure props, pattern detection, argument checks."""
import logging

import numpy as np
import pytest
import vapoursynth as vs

import vs_hdrvid as hv

from conftest import clip_from_arrays, make_sequence, planes

core = vs.core


# ----------------------------------------------------------------------------------- radiometry
@pytest.mark.parametrize("evs", [[-1.5, 1.5], [-2.0, 0.0, 2.0]])
def test_round_trip_16bit_recovers_radiance(tmp_path, evs):
    seq = make_sequence(tmp_path, evs, 6, size=(48, 64), bit_depth=16)
    src = hv.read_images(seq.pattern)
    assert src.format.id == vs.RGB48
    lin = hv.linearize(src, exposures=evs, device="cpu")
    assert lin.format.id == vs.RGBS
    for n in range(6):
        h = planes(lin.get_frame(n))
        ldr = seq.ldr[n]
        ok = (ldr > 0.05) & (ldr < 0.95)
        assert ok.mean() > 0.5
        # 16-bit quantisation: |dH/H| <= 2.2 * 0.5/65535 / L <= 3.4e-4 for L > 0.05
        np.testing.assert_allclose(h[ok], seq.gt[n][ok], rtol=1e-3, atol=0)
        clipped = ldr >= 1.0
        np.testing.assert_allclose(h[clipped], 2.0 ** -seq.evs[n], rtol=1e-5)


def test_round_trip_8bit_within_quantisation(tmp_path):
    seq = make_sequence(tmp_path, [-1.5, 1.5], 4, size=(48, 64), bit_depth=8)
    lin = hv.linearize(hv.read_images(seq.pattern), exposures=[-1.5, 1.5], device="cpu")
    for n in range(4):
        h, ldr = planes(lin.get_frame(n)), seq.ldr[n]
        ok = (ldr > 0.1) & (ldr < 0.95)
        rel = np.abs(h[ok] / seq.gt[n][ok] - 1)
        assert rel.max() < 2.2 * 0.5 / 255 / 0.1 * 1.05


@pytest.mark.parametrize("fmt,qmax", [(vs.RGB24, 255), (vs.RGB48, 65535)])
def test_integer_rgb_is_normalised(fmt, qmax):
    rng = np.random.default_rng(1)
    codes = [rng.integers(0, qmax + 1, (8, 12, 3)) for _ in range(2)]
    clip = clip_from_arrays(codes, fmt=fmt)
    lin = hv.linearize(clip, exposures=[0.0, 1.0], device="cpu")
    for n in range(2):
        want = (codes[n] / qmax) ** 2.2 / 2.0 ** n
        np.testing.assert_allclose(planes(lin.get_frame(n)), want, rtol=1e-5, atol=1e-7)


def test_gamma_parameter_is_used():
    codes = [np.full((4, 4, 3), 128)] * 2
    lin = hv.linearize(clip_from_arrays(codes, fmt=vs.RGB24), exposures=[0.0, 1.0], gamma=2.4, device="cpu")
    np.testing.assert_allclose(planes(lin.get_frame(0)), (128 / 255) ** 2.4, rtol=1e-5)


def test_yuv444p16_input_converts_with_its_matrix():
    rng = np.random.default_rng(2)
    rgb = [np.clip(rng.random((16, 24, 3)), 0.05, 0.95).astype(np.float32) for _ in range(2)]
    src = clip_from_arrays(rgb)
    yuv = core.resize.Bicubic(src, format=vs.YUV444P16, matrix_s="709")
    assert yuv.get_frame(0).props["_Matrix"] == 1
    lin_yuv = hv.linearize(yuv, exposures=[-1.0, 1.0], device="cpu")
    for n in range(2):
        want = rgb[n].astype(np.float64) ** 2.2 / 2.0 ** [-1.0, 1.0][n]
        np.testing.assert_allclose(planes(lin_yuv.get_frame(n)), want, rtol=2e-3, atol=1e-4)


def test_yuv_matrix_matters():
    """Tagged 601 YUV must be converted with 601, not the 709 a plain default would use."""
    rgb = [np.tile(np.array([0.8, 0.2, 0.1], np.float32), (16, 24, 1))] * 2
    yuv = core.resize.Bicubic(clip_from_arrays(rgb), format=vs.YUV444P16, matrix_s="170m")
    lin = hv.linearize(yuv, exposures=[0.0, 1.0], device="cpu")
    np.testing.assert_allclose(planes(lin.get_frame(0))[4, 4], np.array([0.8, 0.2, 0.1]) ** 2.2, rtol=3e-3)


@pytest.mark.parametrize("evs", [[-1.5, 1.5], [-2.0, 0.0, 2.0]])
def test_exposure_props_on_every_frame(evs):
    clip = core.std.BlankClip(format=vs.RGB24, width=16, height=8, length=7, color=[100, 100, 100])
    lin = hv.linearize(clip, exposures=evs, device="cpu")
    for n in range(7):
        p = lin.get_frame(n).props
        assert p["HdrExposureEV"] == evs[n % len(evs)]
        assert p["HdrExposureIndex"] == n % len(evs)
        assert p["HdrExposureCount"] == len(evs)
        assert list(p["HdrExposurePattern"]) == evs
        assert p["_Transfer"] == 8


def test_exposures_from_exposures_txt(tmp_path):
    seq = make_sequence(tmp_path, [-2.0, 0.0, 2.0], 6, with_exposures_txt=True)
    src = hv.read_images(seq.pattern)
    assert src.get_frame(4).props["HdrExposureEV"] == 0.0
    lin = hv.linearize(src, device="cpu")
    assert list(lin.get_frame(0).props["HdrExposurePattern"]) == [-2.0, 0.0, 2.0]
    h = planes(lin.get_frame(2))
    ok = (seq.ldr[2] > 0.1) & (seq.ldr[2] < 0.9)
    np.testing.assert_allclose(h[ok], seq.gt[2][ok], rtol=0.06)


def test_nan_pixels_raise_at_frame_time():
    arrays = [np.full((8, 8, 3), 0.5, np.float32) for _ in range(4)]
    arrays[2][3, 3, 1] = np.nan
    lin = hv.linearize(clip_from_arrays(arrays), exposures=[-1, 1], device="cpu")
    lin.get_frame(1)
    with pytest.raises(vs.Error, match="NaN"):
        lin.get_frame(2)


# ---------------------------------------------------------------------------------- detection
@pytest.mark.parametrize("evs", [[-1.5, 1.5], [-2.0, 0.0, 2.0]])
def test_detects_pattern_with_motion(tmp_path, evs, caplog):
    seq = make_sequence(tmp_path, evs, 12, size=(72, 128), motion=(2.0, 1.0, 0.3, 1.0), moving_object=True)
    src = hv.read_images(seq.pattern)
    found = hv.detect_exposures(src)
    assert len(found.exposures) == len(evs)
    np.testing.assert_allclose(np.diff(found.exposures), np.diff(evs), atol=0.15)
    np.testing.assert_allclose(found.exposures, evs, atol=0.15)  # centred on 0, phase from frame 0
    with caplog.at_level(logging.INFO, logger="vs_hdrvid"):
        lin = hv.linearize(src, device="cpu")
    pattern = list(lin.get_frame(0).props["HdrExposurePattern"])
    np.testing.assert_allclose(pattern, evs, atol=0.15)
    assert any("detected" in r.getMessage() for r in caplog.records)


def test_constant_exposure_raises(tmp_path):
    seq = make_sequence(tmp_path, [0.0], 8, motion=(1.0, 0.0, 0.0, 1.0))
    with pytest.raises(vs.Error, match="hdrvid.linearize"):
        hv.linearize(hv.read_images(seq.pattern), device="cpu")


def test_contradicting_exposures_warn(tmp_path, caplog):
    seq = make_sequence(tmp_path, [-1.5, 1.5], 8)
    src = hv.read_images(seq.pattern)
    with caplog.at_level(logging.WARNING, logger="vs_hdrvid"):
        hv.linearize(src, exposures=[-1.5, 1.5], device="cpu")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with caplog.at_level(logging.WARNING, logger="vs_hdrvid"):
        hv.linearize(src, exposures=[-2.0, 0.0, 2.0], device="cpu")
        hv.linearize(src, exposures=[1.5, -1.5], device="cpu")  # the phase is wrong
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "vs_hdrvid"]
    assert len(warnings) == 2 and all("contradict" in r.getMessage() for r in warnings)


# ----------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("exposures,match", [
    ([float("nan"), 1.0], "finite"), ([float("inf"), 0.0], "finite"), ([-7.0, 7.0], "span"),
    ([1.0, 1.0], "differ"), ([0, 1, 2, 3], "2 or 3"), (["a", "b"], "numbers"),
])
def test_bad_exposures_raise(exposures, match):
    clip = core.std.BlankClip(format=vs.RGB24, width=16, height=8, length=4)
    with pytest.raises(vs.Error, match=match):
        hv.linearize(clip, exposures=exposures)


def test_variable_format_and_bad_args_raise(tmp_path):
    a = core.std.BlankClip(format=vs.RGB24, width=16, height=8, length=2)
    b = core.std.BlankClip(format=vs.RGB24, width=32, height=8, length=2)
    variable = core.std.Splice([a, b], mismatch=True)
    with pytest.raises(vs.Error, match="variable"):
        hv.linearize(variable, exposures=[-1, 1])
    with pytest.raises(vs.Error, match="gamma"):
        hv.linearize(a, exposures=[-1, 1], gamma=9.0)
    with pytest.raises(vs.Error, match="crf"):
        hv.linearize(a, exposures=[-1, 1], crf=str(tmp_path / "missing.json"))
    with pytest.raises(vs.Error, match="hdrvid.linearize"):
        hv.linearize(a, exposures=[-1, 1], device="bogus")
    with pytest.raises(vs.Error, match="expected a video clip"):
        hv.linearize("not a clip", exposures=[-1, 1])
