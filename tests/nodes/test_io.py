"""Image sequences in, EXR out, scripts as sources."""
import os
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid.cli import _one_line
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


@pytest.mark.parametrize("text", ["-1.5,1.5", "-1.5 1.5\n", "-1.5\n1.5\n", "-1.5, 1.5, -1.5, 1.5, -1.5, 1.5",
                                  "# EV per frame\n-1.5\n1.5\n-1.5\n1.5\n-1.5\n1.5\n-1.5\n"])
def test_exposures_txt_forms_issue15(tmp_path, text):
    """One EV per frame or a repeating pattern; commas, spaces or new lines."""
    seq = make_sequence(tmp_path, [-1.5, 1.5], 6, size=(16, 24))
    (Path(seq.pattern).parent.parent / "exposures.txt").write_text(text)
    clip = hv.read_images(seq.pattern)
    assert [clip.get_frame(n).props["HdrExposureEV"] for n in range(6)] == [-1.5, 1.5] * 3
    lin = hv.linearize(clip, device="cpu")
    assert list(lin.get_frame(5).props["HdrExposurePattern"]) == [-1.5, 1.5]


@pytest.mark.parametrize("text,needle", [("-2 0 2 0\n", "4 EV"), ("-1.5,bright\n", "'bright'"),
                                         ("nan 1\n", "finite"), ("", "0 EV"),
                                         ("-1.5 1.5 1.5 -1.5 1.5 -1.5\n", "do not repeat"),
                                         ("-1.5 1.5 -1.5 -1.5 1.5 -1.5\n", "differ")])
def test_unusable_exposures_txt_issue15(tmp_path, text, needle):
    """Reported by linearize when it needs the EVs (naming the file and the accepted forms); explicit
    exposures take precedence."""
    seq = make_sequence(tmp_path, [-1.5, 1.5], 6, size=(16, 24))
    txt = Path(seq.pattern).parent.parent / "exposures.txt"
    txt.write_text(text)
    clip = hv.read_images(seq.pattern)
    with pytest.raises(vs.Error, match=needle) as info:
        hv.linearize(clip, device="cpu")
    assert str(txt) in str(info.value) and "\n" not in str(info.value)
    if needle not in ("do not repeat", "differ"):
        assert "repeating pattern" in str(info.value)
    lin = hv.linearize(clip, exposures=[-1.5, 1.5], device="cpu")
    assert lin.get_frame(1).props["HdrExposureEV"] == 1.5


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


# --------------------------------------------------------------------------- fuzz (issue 15)
def _png_bytes(img: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()


def _corrupt(kind: str, path: Path, rng: np.random.Generator, size: tuple[int, int]) -> None:
    """Damage one frame of a sequence the way copies and exports go wrong."""
    data = path.read_bytes()
    h, w = size
    if kind == "truncated":
        path.write_bytes(data[:int(rng.integers(0, len(data)))])
    elif kind == "random":
        path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes())
    elif kind == "flipped":  # one damaged byte past the signature
        pos = int(rng.integers(8, len(data)))
        path.write_bytes(data[:pos] + bytes([data[pos] ^ int(rng.integers(1, 256))]) + data[pos + 1:])
    elif kind == "resized":
        shape = [(h + 8, w, 3), (h, w - 4, 3), (w, h, 3)][int(rng.integers(0, 3))]
        img = rng.random(shape).astype(np.float32)
        if path.suffix == ".exr":
            write_exr_file(path, img)
        else:
            path.write_bytes(_png_bytes((img * 255).astype(np.uint8)))
    elif kind == "wrong-depth":  # a 16-bit frame in an 8-bit sequence
        path.write_bytes(_png_bytes((rng.random((h, w, 3)) * 65535).astype(np.uint16)))
    else:
        raise AssertionError(kind)


FUZZ = [(ext, kind) for ext in ("png", "exr") for kind in ("truncated", "random", "flipped", "resized",
                                                           "wrong-depth")
        if not (ext == "exr" and kind in ("flipped", "wrong-depth"))]  # pixel damage is OpenEXR's to find


def _sequence(folder: Path, ext: str, frames: int = 5, size=(16, 24)) -> str:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    for n in range(frames):
        img = rng.random((*size, 3)).astype(np.float32)
        if ext == "exr":
            write_exr_file(folder / f"{n:05d}.exr", img)
        else:
            (folder / f"{n:05d}.png").write_bytes(_png_bytes((img * 255).astype(np.uint8)))
    return str(folder / f"%05d.{ext}")


@pytest.mark.parametrize("ext,kind", FUZZ)
def test_readers_fuzz_issue15(tmp_path, capfd, ext, kind):
    """Every damaged frame, first or later, gives one vs.Error line naming it; libraries stay quiet."""
    rng = np.random.default_rng(zlib.crc32(f"{ext}-{kind}".encode()))  # the same damage every run
    for trial in range(12):
        pattern = _sequence(tmp_path / f"t{trial}", ext)
        bad = int(rng.integers(0, 5))
        _corrupt(kind, Path(pattern % bad), rng, (16, 24))
        try:
            clip = hv.read_images(pattern)
            for n in range(clip.num_frames):
                clip.get_frame(n)
        except vs.Error as e:
            msg = _one_line(e)  # a frame-time error arrives wrapped in the callback's traceback
            assert msg.startswith("hdrvid.read_images: ") and len(msg) < 400, str(e)
            assert Path(pattern % bad).name in msg, msg
        else:
            raise AssertionError(f"{kind} frame {bad} was read without an error")
        out, err = capfd.readouterr()
        assert out == "" and err == "", (kind, bad, err)
