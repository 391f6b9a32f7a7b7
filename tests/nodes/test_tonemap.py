"""tonemap node: PQ/HLG signalling and code values, mu-law, SDR, argument checks; an HDR10 file."""
import subprocess

import numpy as np
import pytest
import torch
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid.encode import encode_hdr10, ffmpeg_exe
from vs_hdrvid.ops.tonemap import mulaw

from conftest import clip_from_arrays, planes

EVS = [-1.5, 1.5]
PROPS = {"HdrExposurePattern": EVS, "HdrExposureEV": -1.5, "HdrExposureIndex": 0, "HdrExposureCount": 2}


def st2084(nits):
    """SMPTE ST 2084 inverse EOTF, written out from the standard."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = (np.asarray(nits, np.float64) / 10000) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def test_st2084_helper_matches_published_values():
    np.testing.assert_allclose(st2084([100, 1000, 10000]), [0.508078, 0.751827, 1.0], atol=2e-6)


def stripes(values, h: int = 8, w: int = 12, frames: int = 3) -> vs.VideoNode:
    """Grey radiance ``values[i]`` in horizontal stripe ``i`` of every frame."""
    arr = np.concatenate([np.full((h, w, 3), v, np.float32) for v in values])
    return clip_from_arrays([arr] * frames, [PROPS] * frames)


def stripe_means(frame: vs.VideoFrame, k: int, h: int = 8, plane: int = 0) -> list[float]:
    p = np.asarray(frame[plane]).astype(np.float64)
    return [float(p[i * h + 2:(i + 1) * h - 2].mean()) for i in range(k)]


# ------------------------------------------------------------------------------- PQ / HLG props
@pytest.mark.parametrize("op,transfer", [("pq", 16), ("hlg", 18)])
@pytest.mark.parametrize("output,fmt,matrix", [("yuv", vs.YUV420P10, 9), ("rgb", vs.RGB48, 0)])
def test_hdr_props(op, transfer, output, fmt, matrix):
    out = hv.tonemap(stripes([0.05, 0.2]), op, peak_nits=1000, output=output, device="cpu")
    assert out.format.id == fmt
    p = out.get_frame(1).props
    assert p["_Transfer"] == transfer and p["_Primaries"] == 9 and p["_Matrix"] == matrix
    if output == "yuv":
        assert p["_Range"] == 0
    np.testing.assert_allclose(p["MasteringDisplayPrimariesX"], [0.708, 0.170, 0.131])
    np.testing.assert_allclose(p["MasteringDisplayPrimariesY"], [0.292, 0.797, 0.046])
    assert p["MasteringDisplayWhitePointX"] == pytest.approx(0.3127)
    assert p["MasteringDisplayWhitePointY"] == pytest.approx(0.3290)
    assert p["MasteringDisplayMaxLuminance"] == 1000
    assert 0 < p["MasteringDisplayMinLuminance"] <= 0.01
    assert p["ContentLightLevelMax"] == 1000 and "ContentLightLevelAverage" in p


# --------------------------------------------------------------------------------- code values
def test_pq_key_maps_to_reference_white():
    """key=K: radiance K is shown at white_nits (the docstring's contract); 2K and K/4 scale
    linearly as long as they stay below the roll-off knee (0.75 * peak)."""
    k, white = 0.1, 203.0
    out = hv.tonemap(stripes([k / 4, k, 2 * k]), "pq", peak_nits=1000, white_nits=white, key=k,
                     output="rgb", device="cpu")
    got = np.array(stripe_means(out.get_frame(0), 3)) / 65535
    want = st2084([white / 4, white, 2 * white])
    np.testing.assert_allclose(got, want, atol=2 / 65535)


def test_pq_yuv_code_values():
    k, white = 0.1, 203.0
    out = hv.tonemap(stripes([k, 2 * k]), "pq", key=k, white_nits=white, device="cpu")
    f = out.get_frame(0)
    y = np.array(stripe_means(f, 2))
    np.testing.assert_allclose(y, 64 + 876 * st2084([white, 2 * white]), atol=1.0)
    u = np.asarray(f[1]).astype(np.float64)
    assert np.abs(u - 512).max() <= 1  # grey stays grey


def test_pq_auto_key_puts_log_average_at_18_percent():
    out = hv.tonemap(stripes([0.3, 0.3]), "pq", white_nits=203.0, smooth=1, output="rgb", device="cpu")
    got = np.array(stripe_means(out.get_frame(1), 2)) / 65535
    np.testing.assert_allclose(got, st2084([0.18 * 203.0] * 2), atol=3 / 65535)


def test_pq_highlights_roll_off_below_peak():
    out = hv.tonemap(stripes([0.1, 100.0]), "pq", peak_nits=1000, key=0.1, output="rgb", device="cpu")
    top = stripe_means(out.get_frame(0), 2)[1] / 65535
    assert st2084(750) < top <= st2084(1000) + 1e-4


def test_hlg_reference_white_at_75_percent():
    """BT.2408: reference white (203 cd/m2) on a 1000 cd/m2 HLG display is signal 0.75."""
    out = hv.tonemap(stripes([0.1]), "hlg", peak_nits=1000, key=0.1, white_nits=203.0, output="rgb",
                     device="cpu")
    assert stripe_means(out.get_frame(0), 1)[0] / 65535 == pytest.approx(0.75, abs=0.01)


# ----------------------------------------------------------------------------- mu-law and SDR
def test_mulaw_equals_ops_mulaw():
    rng = np.random.default_rng(0)
    arrays = [np.exp(rng.normal(-1, 1.5, (8, 12, 3))).astype(np.float32) for _ in range(2)]
    out = hv.tonemap(clip_from_arrays(arrays, [PROPS] * 2), "mulaw", device="cpu")
    assert out.format.id == vs.RGBS
    h_sat = 2.0 ** 1.5
    for n in range(2):
        want = mulaw(torch.from_numpy(arrays[n] / h_sat).clamp(0, 1), 5000.0).numpy()
        np.testing.assert_allclose(planes(out.get_frame(n)), want, rtol=1e-5, atol=1e-6)


def test_sdr_gives_rgb24():
    out = hv.tonemap(stripes([0.01, 0.1, 10.0]), "sdr", device="cpu")
    assert out.format.id == vs.RGB24
    f = out.get_frame(0)
    means = stripe_means(f, 3)
    assert means[0] < means[1] < means[2] <= 255
    assert f.props["_Transfer"] == 1


# -------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs,match", [
    ({"op": "aces"}, "op must be"), ({"peak_nits": 50}, "peak_nits"), ({"peak_nits": 20000}, "peak_nits"),
    ({"peak_nits": float("nan")}, "peak_nits"), ({"smooth": -1}, "smooth"), ({"smooth": 1.5}, "smooth"),
    ({"smooth": 500}, "smooth"), ({"white_nits": 2000}, "white_nits"), ({"key": 0.0}, "key"),
    ({"output": "xyz"}, "output"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(vs.Error, match=match):
        hv.tonemap(stripes([0.1]), **kwargs)


def test_bad_clips_raise():
    with pytest.raises(vs.Error, match="linear RGBS"):
        hv.tonemap(vs.core.std.BlankClip(format=vs.RGB24, width=8, height=8), "pq")
    no_props = hv.tonemap(vs.core.std.BlankClip(format=vs.RGBS, width=8, height=8), "mulaw")
    with pytest.raises(vs.Error, match="pattern"):  # found on the frames: building renders none
        no_props.get_frame(0)


# ------------------------------------------------------------------------------- HDR10 on disk
def test_encode_hdr10_signalling(tmp_path):
    rng = np.random.default_rng(1)
    hdr = clip_from_arrays([np.exp(rng.normal(-2, 1, (64, 96, 3))).astype(np.float32) for _ in range(3)],
                           [PROPS] * 3)
    path = encode_hdr10(hv.tonemap(hdr, "pq", device="cpu"), tmp_path / "x.mkv", preset="ultrafast",
                        progress=False)
    assert path == tmp_path / "x.mkv" and path.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["x.mkv"]  # no temporary left
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-vf", "showinfo",
                           "-frames:v", "1", "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    err = info.stderr
    assert info.returncode == 0, err[-2000:]
    for needle in ("smpte2084", "bt2020", "Mastering display metadata", "Content light level"):
        assert needle in err, needle
    stream = next(line for line in err.splitlines() if "Stream #0:0" in line and "Video:" in line)
    assert "hevc (Main 10)" in stream, stream


def test_encode_hdr10_rejects_non_pq(tmp_path):
    clip = clip_from_arrays([np.full((16, 16, 3), 0.1, np.float32)] * 2, [PROPS] * 2)
    with pytest.raises(ValueError, match="YUV420P10"):
        encode_hdr10(clip, tmp_path / "x.mkv", progress=False)
    with pytest.raises(ValueError, match="mkv"):
        encode_hdr10(hv.tonemap(clip, "pq"), tmp_path / "x.avi", progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("output", ["rgb", "yuv"])
def test_pq_numpy_curves_change_codes_by_at_most_one(monkeypatch, output):
    """On CPU the PQ curve runs through numpy (issue 14); through torch's curves, as before, the
    delivered codes are the same but for a rare rounding step of one code."""
    import importlib

    tonemap_module = importlib.import_module("vs_hdrvid.nodes.tonemap")
    rng = np.random.default_rng(5)
    hdr = [np.exp2(rng.normal(-2, 3, (64, 96, 3))).astype(np.float32) for _ in range(3)]
    clip = clip_from_arrays(hdr)

    def codes(node):
        return [np.concatenate([np.asarray(f[p], np.int64).ravel() for p in range(3)]) for f in node.frames(close=True)]

    fast = codes(hv.tonemap(clip, "pq", output=output, device="cpu"))
    from vs_hdrvid.ops.tonemap import pq_encode_normalized_

    monkeypatch.setattr(tonemap_module, "pq_encode_normalized_numpy_",
                        lambda y: pq_encode_normalized_(torch.from_numpy(y)).numpy())
    slow = codes(hv.tonemap(clip, "pq", output=output, device="cpu"))
    for a, b in zip(fast, slow):
        assert np.abs(a - b).max() <= 1
        assert np.count_nonzero(a != b) <= 0.01 * a.size
