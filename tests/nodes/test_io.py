"""Image sequences in, EXR out, scripts as sources."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid.ops.exr import read_exr as read_exr_file
from vs_hdrvid.ops.exr import write_exr as write_exr_file

from conftest import clip_from_arrays, make_sequence, planes


def hdr_arrays(n: int = 3, h: int = 12, w: int = 20, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.exp(rng.normal(0, 2, (h, w, 3))).astype(np.float32) for _ in range(n)]


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------- EXR
@pytest.mark.parametrize("half,rtol", [(True, 1e-3), (False, 0.0)])
def test_exr_round_trip(tmp_path, half, rtol):
    arrays = hdr_arrays()
    out = hv.write_exr(clip_from_arrays(arrays), tmp_path / "exr" / "%04d.exr", half=half, first=1)
    for _ in out.frames():
        pass
    assert files(tmp_path / "exr") == ["0001.exr", "0002.exr", "0003.exr"]  # no .part left
    back = hv.read_exr(tmp_path / "exr" / "%04d.exr")
    assert back.format.id == vs.RGBS and back.num_frames == 3 and (back.width, back.height) == (20, 12)
    for n in range(3):
        np.testing.assert_allclose(planes(back.get_frame(n)), arrays[n], rtol=rtol, atol=0)
        assert back.get_frame(n).props["_Transfer"] == 8


def test_write_exr_passes_frames_through(tmp_path):
    arrays = hdr_arrays(2)
    out = hv.write_exr(clip_from_arrays(arrays), tmp_path / "%05d.exr")
    np.testing.assert_array_equal(planes(out.get_frame(1)), arrays[1])
    assert files(tmp_path) == ["00001.exr"]


def test_write_exr_unwritable_raises(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    clip = clip_from_arrays(hdr_arrays(1))
    with pytest.raises(vs.Error, match="hdrvid.write_exr"):
        hv.write_exr(clip, blocker / "sub" / "%05d.exr")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(vs.Error, match="not writable"):
            hv.write_exr(clip, ro / "%05d.exr")


def test_write_exr_bad_arguments(tmp_path):
    clip = clip_from_arrays(hdr_arrays(1))
    with pytest.raises(vs.Error, match="pattern"):
        hv.write_exr(clip, tmp_path / "out.exr")
    with pytest.raises(vs.Error, match="pattern"):
        hv.write_exr(clip, tmp_path / "%05d.png")
    with pytest.raises(vs.Error, match="RGBS"):
        hv.write_exr(vs.core.std.BlankClip(format=vs.RGB24, width=8, height=8), tmp_path / "%05d.exr")
    assert list(tmp_path.iterdir()) == []


def test_write_exr_failure_leaves_no_part_file(tmp_path):
    with pytest.raises(ValueError):
        write_exr_file(tmp_path / "x.exr", np.zeros((4, 4, 2), np.float32))
    with pytest.raises(Exception):
        write_exr_file(tmp_path / "y.exr", np.zeros((0, 4, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_read_exr_rejects_other_patterns(tmp_path):
    with pytest.raises(vs.Error, match="exr"):
        hv.read_exr(tmp_path / "%05d.png")


def test_read_exr_file_errors(tmp_path):
    with pytest.raises(OSError):
        read_exr_file(tmp_path / "missing.exr")
    (tmp_path / "bad.exr").write_bytes(b"not an exr at all")
    with pytest.raises(OSError):
        read_exr_file(tmp_path / "bad.exr")


# ---------------------------------------------------------------------------------- PNG / TIFF
@pytest.mark.parametrize("bit_depth,fmt", [(8, vs.RGB24), (16, vs.RGB48)])
def test_read_images_formats_and_values(tmp_path, bit_depth, fmt):
    seq = make_sequence(tmp_path, [-1.5, 1.5], 3, size=(16, 24), bit_depth=bit_depth)
    clip = hv.read_images(seq.pattern)
    assert clip.format.id == fmt and clip.num_frames == 3 and (clip.width, clip.height) == (24, 16)
    qmax = 2 ** bit_depth - 1
    for n in range(3):
        f = clip.get_frame(n)
        np.testing.assert_array_equal(planes(f), np.round(seq.ldr[n] * qmax))  # RGB order kept
        assert f.props["HdrSourcePath"] == seq.pattern % n
        assert "HdrExposureEV" not in f.props


def test_read_images_tiff_and_numbering_from_one(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 65536, (8, 10, 3), dtype=np.uint16) for _ in range(3)]
    for i, img in enumerate(imgs):
        cv2.imwrite(str(tmp_path / f"f{i + 1:03d}.tif"), img[..., ::-1])
    clip = hv.read_images(tmp_path / "f%03d.tif")
    assert clip.num_frames == 3 and clip.format.id == vs.RGB48
    np.testing.assert_array_equal(planes(clip.get_frame(2)), imgs[2])


def test_read_images_exposures_txt(tmp_path):
    seq = make_sequence(tmp_path, [-2.0, 0.0, 2.0], 5, with_exposures_txt=True)
    clip = hv.read_images(seq.pattern)
    assert [clip.get_frame(n).props["HdrExposureEV"] for n in range(5)] == seq.evs
    (Path(seq.pattern).parent.parent / "exposures.txt").write_text("-2 0\n")
    with pytest.raises(vs.Error, match="exposures"):
        hv.read_images(seq.pattern)


def test_read_images_errors(tmp_path):
    with pytest.raises(vs.Error, match="no file matches"):
        hv.read_images(tmp_path / "%05d.png")
    with pytest.raises(vs.Error, match="pattern"):
        hv.read_images(tmp_path / "frame.png")
    seq = make_sequence(tmp_path, [-1.0, 1.0], 4, size=(16, 24))
    Path(seq.pattern % 0).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(vs.Error, match="hdrvid.read_images"):
        hv.read_images(seq.pattern)


def test_read_images_errors_at_frame_time(tmp_path):
    seq = make_sequence(tmp_path, [-1.0, 1.0], 4, size=(16, 24))
    Path(seq.pattern % 2).write_bytes(b"garbage")
    cv2.imwrite(seq.pattern % 3, np.zeros((8, 8, 3), np.uint8))
    clip = hv.read_images(seq.pattern)
    clip.get_frame(1)
    with pytest.raises(vs.Error, match="cannot read"):
        clip.get_frame(2)
    with pytest.raises(vs.Error, match="sequence started with"):
        clip.get_frame(3)


# ------------------------------------------------------------------------------------- source
def test_source_script_pattern_and_errors(tmp_path):
    seq = make_sequence(tmp_path, [-1.0, 1.0], 3, size=(16, 24))
    assert hv.source(seq.pattern).num_frames == 3
    good = tmp_path / "good.vpy"
    good.write_text("import vapoursynth as vs\n"
                    "vs.core.std.BlankClip(format=vs.RGB24, width=32, height=16, length=7).set_output()\n")
    clip = hv.source(good)
    assert clip.num_frames == 7 and clip.width == 32
    bad = tmp_path / "bad.vpy"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(vs.Error, match="boom"):
        hv.source(bad)
    silent = tmp_path / "silent.vpy"
    silent.write_text("x = 1\n")
    with pytest.raises(vs.Error, match="no output"):
        hv.source(silent)
    with pytest.raises(vs.Error, match="no such file"):
        hv.source(tmp_path / "missing.mkv")
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(vs.Error, match="hdrvid.source"):
        hv.source(junk)
