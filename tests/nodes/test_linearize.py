"""linearize: radiometry, input formats, exposure props, pattern detection, argument checks."""
import logging

import numpy as np
import pytest
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid.nodes import io as io_mod
from vs_hdrvid.nodes.linearize import check_exposures
from vs_hdrvid.ops.exr import write_exr as write_exr_file

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


@pytest.mark.parametrize("fmt,width", [(vs.RGB48, 64), (vs.RGB24, 32), (vs.RGB30, 96), (vs.RGB48, 37)])
@pytest.mark.parametrize("props", [{}, {"_Range": 0}, {"_Range": 1}], ids=["untagged", "limited", "full"])
@pytest.mark.parametrize("crf", ["gamma", "table"])
def test_integer_rgb_by_code_tables_equals_float_path(tmp_path, fmt, width, props, crf):
    """Integer RGB on CPU goes through per-code tables (issue 14); converted to RGBS first, the same
    frames go through the float path. The same values, bit for bit where the float path's own
    result depends only on the value: where its vectorised loop covers the whole band (a band of
    a multiple of 32 values); the last values of other bands go through its scalar loop, whose
    libm curves differ by up to one rounding."""
    from vs_hdrvid.ops.crf import CRF

    rng = np.random.default_rng(3)
    bits = core.get_video_format(fmt).bits_per_sample
    codes = [rng.integers(0, 2 ** bits, (9, width, 3)) for _ in range(4)]
    blank = core.std.BlankClip(format=fmt, width=width, height=9, length=4)

    def fill(n, f):
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), codes[n][..., p].astype(np.asarray(out[p]).dtype))
        out.props.update(props)
        return out

    clip = core.std.ModifyFrame(blank, blank, fill)
    if crf == "table":
        x = np.linspace(0, 1, 256)
        response = CRF(np.stack([x ** 2.0, x ** 2.2, x ** 2.4]))
        crf_arg = str(tmp_path / "crf.json")
        response.save(crf_arg)
    else:
        crf_arg = "gamma"
    by_table = hv.linearize(clip, exposures=[-1.5, 1.5], crf=crf_arg, device="cpu")
    by_float = hv.linearize(core.resize.Point(clip, format=vs.RGBS), exposures=[-1.5, 1.5], crf=crf_arg, device="cpu")
    for n in range(4):
        a, b = planes(by_table.get_frame(n)), planes(by_float.get_frame(n))
        if 9 * width * 3 % 32 == 0:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=2.5e-7, atol=0)
        assert by_table.get_frame(n).props["HdrExposureEV"] == [-1.5, 1.5][n % 2]


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


def test_contradicting_exposures_are_reported(tmp_path):
    seq = make_sequence(tmp_path, [-1.5, 1.5], 8)
    src = hv.read_images(seq.pattern)
    assert check_exposures(src, [-1.5, 1.5]) is None
    for wrong in ([-2.0, 0.0, 2.0], [1.5, -1.5]):  # another period; the phase is wrong
        assert "contradict" in check_exposures(src, wrong)


# ---------------------------------------------------------------------- graph building (issue 15)
def counting(arrays, props=None):
    """A clip of ``arrays`` that records which frames were rendered."""
    seen = []
    clip = clip_from_arrays(arrays, props)

    def count(n, f):
        seen.append(n)
        return f

    return core.std.ModifyFrame(clip, clip, count), seen


def test_building_renders_no_frame_issue15():
    """linearize with exposures, and every node on top of it, build without rendering a frame."""
    rng = np.random.default_rng(3)
    src, seen = counting([rng.random((48, 64, 3)).astype(np.float32) for _ in range(8)])
    lin = hv.linearize(src, exposures=[-1.5, 1.5], device="cpu")
    assert seen == []  # the contradiction check decoded 24 frames here
    hdr = hv.refine(hv.coarse(lin, device="cpu"), lin, device="cpu")
    hv.tonemap(hdr, "mulaw", device="cpu")
    hv.tonemap(hv.merge(lin, device="cpu"), "pq", device="cpu")
    hv.align(lin, device="cpu")
    assert seen == []  # coarse/refine read frame 0 for the pattern; mulaw rendered both networks
    assert hv.coarse(lin[1:], device="cpu").num_frames == 7  # a derived clip: read from its frame 0
    assert seen


def test_yuv_input_builds_without_rendering_issue15():
    """The YUV matrix and range come from each frame's props when it is rendered, not from frame 0
    at build time; untagged frames get the size-based guess."""
    rgb = [np.tile(np.array([0.8, 0.2, 0.1], np.float32), (16, 24, 1))] * 4
    src, seen = counting(rgb)
    yuv = core.resize.Bicubic(src, format=vs.YUV444P16, matrix_s="170m")
    lin = hv.linearize(yuv, exposures=[0.0, 1.0], device="cpu")
    untagged = hv.linearize(core.std.RemoveFrameProps(yuv, "_Matrix"), exposures=[0.0, 1.0], device="cpu")
    assert seen == []
    want = np.array([0.8, 0.2, 0.1]) ** 2.2
    np.testing.assert_allclose(planes(lin.get_frame(0))[4, 4], want, rtol=3e-3)
    np.testing.assert_allclose(planes(untagged.get_frame(0))[4, 4], want, rtol=3e-3)  # 170m guessed


def test_exposures_txt_pattern_builds_without_rendering_issue15(tmp_path, monkeypatch):
    seq = make_sequence(tmp_path, [-2.0, 0.0, 2.0], 6, with_exposures_txt=True)
    src = hv.read_images(seq.pattern)
    decoded = []
    read = io_mod._read_image
    monkeypatch.setattr(io_mod, "_read_image", lambda p: decoded.append(p) or read(p))
    lin = hv.linearize(src, device="cpu")
    assert decoded == []
    assert list(lin.get_frame(0).props["HdrExposurePattern"]) == [-2.0, 0.0, 2.0]


# ------------------------------------------------------------------------ linear input (issue 15)
def write_exr_sequence(folder, arrays):
    for n, x in enumerate(arrays):
        write_exr_file(folder / f"{n:05d}.exr", x, half=False)
    return str(folder / "%05d.exr")


def test_linear_exr_input_matches_png_path_issue15(tmp_path):
    """The same exposures as 16-bit PNG (gamma 2.2) and as linear EXR give the same radiance."""
    evs = [-1.5, 1.5]
    seq = make_sequence(tmp_path, evs, 8, size=(48, 64), bit_depth=16)
    exr = write_exr_sequence(tmp_path / "exr", [ldr.astype(np.float32) ** 2.2 for ldr in seq.ldr])
    from_png = hv.linearize(hv.read_images(seq.pattern), exposures=evs, device="cpu")
    from_exr = hv.linearize(hv.read_exr(exr), exposures=evs, device="cpu")
    for n in range(8):
        np.testing.assert_allclose(planes(from_exr.get_frame(n)), planes(from_png.get_frame(n)), rtol=2e-5,
                                   atol=1e-9)
    found = hv.detect_exposures(hv.read_exr(exr))
    np.testing.assert_allclose(found.exposures, evs, atol=0.15)  # was -3.43/+3.43: gamma applied twice


def test_linear_exr_radiance_above_one_is_kept_issue15(tmp_path):
    evs = [-1.0, 2.0]
    rng = np.random.default_rng(4)
    scene = [np.exp(rng.normal(0, 1.5, (16, 24, 3))).astype(np.float32) for _ in range(4)]
    recorded = [h * np.float32(2.0 ** evs[n % 2]) for n, h in enumerate(scene)]
    assert max(float(r.max()) for r in recorded) > 10
    lin = hv.linearize(hv.read_exr(write_exr_sequence(tmp_path, recorded)), exposures=evs, device="cpu")
    for n in range(4):
        np.testing.assert_allclose(planes(lin.get_frame(n)), scene[n], rtol=1e-6)


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
