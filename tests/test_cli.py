"""`vs-hdrvid`: reconstruct happy paths, every bad input (one line, exit status, nothing left), demo."""
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from vs_hdrvid.cli import fail, main
from vs_hdrvid.encode import ffmpeg_exe
from vs_hdrvid.ops.exr import read_exr, write_exr
from vs_hdrvid.outputs import claim

from conftest import make_sequence

EXE = Path(sys.executable).parent / "vs-hdrvid"
ROOT = Path(__file__).resolve().parents[1]


def run(argv, capfd):
    """``main(argv)`` in-process: (status, stdout, stderr); the root logger is restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        status = main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors exit from inside main, as the entry point would
        status = e.code
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    out, err = capfd.readouterr()
    return status, out, err


def assert_one_error_line(err: str, needle: str = ""):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("vs-hdrvid: error:"), err
    message = lines[0][len("vs-hdrvid: error:"):].strip()
    assert message and "Traceback" not in err, err
    assert needle.lower() in message.lower(), (needle, err)


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def seq(tmp_path):
    return make_sequence(tmp_path, [-1.5, 1.5], 6, size=(48, 64), motion=(1.0, 0.5, 0.0, 1.0), name="in")


def psnr_mu(pred: np.ndarray, gt: np.ndarray, h_sat: float) -> float:
    mu = lambda h: np.log1p(5000 * np.clip(h / h_sat, 0, 1)) / np.log1p(5000)  # noqa: E731
    return float(10 * np.log10(1 / np.mean((mu(pred) - mu(gt)) ** 2)))


# --------------------------------------------------------------------------------- happy paths
def test_exr_output(tmp_path, seq, capfd):
    out = tmp_path / "out"
    status, stdout, err = run(["reconstruct", seq.pattern, "-o", out / "%05d.exr", "--exposures", "-1.5,1.5",
                               "--quiet", "--device", "cpu"], capfd)
    assert status == 0, err
    assert stdout == ""  # stdout stays free for data
    assert "wrote 6 file(s)" in err
    assert leftovers(out) == [f"{n:05d}.exr" for n in range(6)]
    for n in range(6):
        assert psnr_mu(read_exr(out / f"{n:05d}.exr"), seq.gt[n], seq.h_sat) > 45


def test_png_output_frames_and_reference(tmp_path, seq, capfd):
    out = tmp_path / "png"
    status, _, err = run(["reconstruct", seq.pattern, "-o", out / "f%03d.png", "--frames", "2:5",
                          "--quiet", "--exposures", "-1.5,1.5"], capfd)
    assert status == 0, err
    assert leftovers(out) == ["f002.png", "f003.png", "f004.png"]  # numbered by source frame
    img = cv2.imread(str(out / "f002.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == (48, 64, 3)


def test_frames_keep_the_pattern_anchored(tmp_path, seq, capfd):
    out = tmp_path / "ref"
    status, _, err = run(["reconstruct", seq.pattern, "-o", out / "%05d.exr", "--method", "reference",
                          "--frames", "1:4", "--exposures", "-1.5,1.5", "--quiet"], capfd)
    assert status == 0, err
    assert leftovers(out) == ["00001.exr", "00002.exr", "00003.exr"]
    for k in range(3):  # input frame 1 + k with its own exposure
        h = read_exr(out / f"{1 + k:05d}.exr")
        ldr = seq.ldr[1 + k]
        ok = (ldr > 0.1) & (ldr < 0.9)
        np.testing.assert_allclose(h[ok], seq.gt[1 + k][ok], rtol=0.06)


def test_flow_dis_and_mkv(tmp_path, seq, capfd):
    out = tmp_path / "v"
    status, _, err = run(["reconstruct", seq.pattern, "-o", out / "x.mkv", "--flow", "dis", "--quiet",
                          "--exposures", "-1.5,1.5"], capfd)
    assert status == 0, err
    assert leftovers(out) == ["x.mkv"] and (out / "x.mkv").stat().st_size > 1000


def test_detected_pattern_is_printed(tmp_path, capfd):
    seq = make_sequence(tmp_path, [-2.0, 0.0, 2.0], 9, size=(48, 64), name="three")
    status, _, err = run(["reconstruct", seq.pattern, "-o", tmp_path / "o" / "%05d.exr", "--quiet"], capfd)
    assert status == 0, err
    assert "period 3" in err


def test_subprocess_entry_point(tmp_path, seq):
    out = tmp_path / "sp"
    proc = subprocess.run([str(EXE), "reconstruct", seq.pattern, "-o", str(out / "%05d.exr"), "--quiet",
                           "--exposures", "-1.5,1.5", "--radius", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert len(leftovers(out)) == 6


def test_demo_on_a_small_sample(tmp_path, capfd):
    sample = tmp_path / "sample"
    seq = make_sequence(tmp_path, [-1.5, 1.5], 6, size=(48, 64), name="sample", with_exposures_txt=True)
    for n, gt in enumerate(seq.gt):
        write_exr(sample / "gt" / f"{n:05d}.exr", gt, half=False)
    out = tmp_path / "demo"
    status, stdout, err = run(["demo", "--sample", sample, "--out", out, "--quiet"], capfd)
    assert status == 0, err
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in stdout.splitlines()[2:]}
    from vs_hdrvid.demo import shipped_methods
    assert set(rows) == {"reference", "merge", *shipped_methods(2)}  # the networks whose weights ship
    assert rows["merge"][-1] > rows["reference"][-1] + 6  # last column: all frames
    assert (out / "merge_hdr10.mkv").is_file() and (out / "contact_sheet.png").is_file()
    assert len(list((out / "exr").glob("*.exr"))) == 6


# ----------------------------------------------------------------------------------- bad input
def write_script(path: Path, body: str) -> Path:
    path.write_text("import vapoursynth as vs\ncore = vs.core\n" + body)
    return path


def nan_exr_sequence(folder: Path) -> str:
    for n in range(5):
        img = np.full((16, 24, 3), 0.4, np.float32)
        if n == 3:
            img[5, 5, 0] = np.nan
        write_exr(folder / f"{n:05d}.exr", img, half=False)
    return str(folder / "%05d.exr")


def corrupt_png_sequence(folder: Path, bad: int) -> str:
    seq = make_sequence(folder, [-1.5, 1.5], 4, size=(16, 24), name="c")
    Path(seq.pattern % bad).write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return seq.pattern


CASES = {  # name: (exit status, make input, extra args, a word the one error line must hold)
    "variable-size-vpy": (2, lambda t: write_script(t / "var.vpy", (
        "a = core.std.BlankClip(format=vs.RGB24, width=32, height=16, length=3)\n"
        "b = core.std.BlankClip(format=vs.RGB24, width=48, height=16, length=3)\n"
        "core.std.Splice([a, b], mismatch=True).set_output()\n")), ["--exposures", "-1.5,1.5"], "variable"),
    "too-few-frames": (2, lambda t: make_sequence(t, [-2, 0, 2], 2, size=(16, 24), name="s").pattern,
                       ["--exposures", "-2,0,2"], "frames"),
    "single-frame": (2, lambda t: make_sequence(t, [-1.5, 1.5], 1, size=(16, 24), name="s").pattern,
                     ["--exposures", "-1.5,1.5"], "frames"),
    "evs-nan": (2, lambda t: make_sequence(t, [-1.5, 1.5], 4, size=(16, 24), name="s").pattern,
                ["--exposures", "nan,1"], "finite"),
    "evs-inf": (2, lambda t: make_sequence(t, [-1.5, 1.5], 4, size=(16, 24), name="s").pattern,
                ["--exposures=-inf,1"], "finite"),
    "evs-span": (2, lambda t: make_sequence(t, [-1.5, 1.5], 4, size=(16, 24), name="s").pattern,
                 ["--exposures=-7,7"], "span"),
    "nan-pixels": ((1, 2), lambda t: nan_exr_sequence(t / "nan"), ["--exposures", "-1.5,1.5"], "NaN"),
    "missing-file": (2, lambda t: t / "missing.mkv", [], "no such file"),
    "missing-sequence": (2, lambda t: t / "none" / "%05d.png", [], "no file matches"),
    "corrupt-first-png": (2, lambda t: corrupt_png_sequence(t, 0), ["--exposures", "-1.5,1.5"], "cannot read"),
    "corrupt-later-png": ((1, 2), lambda t: corrupt_png_sequence(t, 2), ["--exposures", "-1.5,1.5"],
                          "cannot read"),
    "raising-vpy": (2, lambda t: write_script(t / "boom.vpy", "raise ValueError('boom')\n"), [], "boom"),
    "no-output-vpy": (2, lambda t: write_script(t / "quiet.vpy", "x = 1\n"), [], "no output"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(tmp_path, capfd, case):
    status_want, make_input, extra, needle = CASES[case]
    inp = make_input(tmp_path)
    out = tmp_path / "out"
    status, stdout, err = run(["reconstruct", inp, "-o", out / "%05d.exr", "--quiet", *extra], capfd)
    assert not out.exists()
    assert not list(tmp_path.rglob("*.part"))
    assert stdout == ""
    assert status in (status_want if isinstance(status_want, tuple) else (status_want,)), (status, err)
    assert_one_error_line(err, needle)


@pytest.mark.parametrize("output", ["blocker/out/%05d.exr", "x.avi", "out/frame.exr", "out/%05d.jpg"])
def test_bad_output(tmp_path, seq, capfd, output):
    (tmp_path / "blocker").write_text("a regular file")
    before = leftovers(tmp_path)
    status, _, err = run(["reconstruct", seq.pattern, "-o", tmp_path / output, "--quiet",
                          "--exposures", "-1.5,1.5"], capfd)
    assert status == 2, err
    assert_one_error_line(err)
    assert leftovers(tmp_path) == before


def test_failure_mid_run_removes_written_frames(tmp_path, capfd):
    """Frames before the bad one were written already; the failed run must take them back."""
    inp = nan_exr_sequence(tmp_path / "nan")
    for out in (tmp_path / "o1" / "%05d.exr", tmp_path / "o2" / "%05d.png", tmp_path / "o3" / "x.mkv"):
        status, _, err = run(["reconstruct", inp, "-o", out, "--quiet", "--method", "reference",
                              "--exposures", "-1.5,1.5"], capfd)
        assert not out.parent.exists()  # the folder the run created goes too (issue 15)
        assert status in (1, 2), err
        assert_one_error_line(err, "NaN")


def test_bad_arguments(capfd):
    for argv in (["reconstruct"], ["reconstruct", "x.mkv", "-o", "y.exr", "--method", "magic"],
                 ["reconstruct", "x.mkv", "-o", "y.mkv", "--frames", "a:b"], ["nonsense"]):
        status, _, err = run(argv, capfd)
        assert status == 2
        assert_one_error_line(err)


def test_frames_outside_clip(tmp_path, seq, capfd):
    status, _, err = run(["reconstruct", seq.pattern, "-o", tmp_path / "o" / "%05d.exr", "--frames", "4:9",
                          "--exposures", "-1.5,1.5", "--quiet"], capfd)
    assert status == 2
    assert_one_error_line(err, "4:9")



# ------------------------------------------------------------------------------------- issue 15
def with_exposures_txt(seq, text: str) -> None:
    (Path(seq.pattern).parent.parent / "exposures.txt").write_text(text)


@pytest.mark.parametrize("text,given", [("-1.5,1.5\n", False), ("-1.5,1.5\n", True), ("-1.5 1.5 x\n", True)])
def test_exposures_txt_pattern_and_precedence_issue15(tmp_path, seq, capfd, text, given):
    """A pattern file is used; --exposures wins over the file, even one that cannot be used."""
    with_exposures_txt(seq, text)
    out = tmp_path / "o"
    status, _, err = run(["reconstruct", seq.pattern, "-o", out / "%05d.exr", "--quiet",
                          *(["--exposures", "-1.5,1.5"] if given else [])], capfd)
    assert status == 0, err
    assert len(leftovers(out)) == 6


def test_unusable_exposures_txt_is_one_line_issue15(tmp_path, seq, capfd):
    with_exposures_txt(seq, "-1.5 1.5 -1.5 1.5\n")  # 4 EVs for 6 frames: neither form
    out = tmp_path / "o"
    status, stdout, err = run(["reconstruct", seq.pattern, "-o", out / "%05d.exr", "--quiet"], capfd)
    assert status == 2 and stdout == ""
    assert_one_error_line(err, "exposures.txt holds 4 EV(s) for 6 frames")
    assert "repeating pattern" in err
    assert not out.exists()


def test_pattern_from_exposures_txt_is_printed_issue15(tmp_path, seq, capfd):
    with_exposures_txt(seq, "-1.5\n1.5\n" * 3)
    status, _, err = run(["reconstruct", seq.pattern, "-o", tmp_path / "o" / "%05d.exr", "--quiet"], capfd)
    assert status == 0, err
    assert re.search(r"^vs-hdrvid: exposures -1\.5,\+1\.5 from .*exposures\.txt$", err, re.M), err


def test_second_writer_is_refused_issue15(tmp_path, seq, capfd):
    """While another run holds the output, a second one is refused and touches none of its files."""
    out = tmp_path / "o"
    with claim(out / "%05d.exr") as other:
        for n in range(2):
            with other.atomic(out / f"{n:05d}.exr") as tmp:
                write_exr(tmp, np.full((4, 4, 3), 0.5, np.float32))
        before = leftovers(out)
        status, _, err = run(["reconstruct", seq.pattern, "-o", out / "%05d.exr", "--quiet",
                              "--exposures", "-1.5,1.5"], capfd)
        assert status == 2
        assert_one_error_line(err, f"another run (pid {os.getpid()}) is writing")
        assert leftovers(out) == before
    assert leftovers(out) == ["00000.exr", "00001.exr"]  # the lock goes with its run
    status, _, err = run(["reconstruct", seq.pattern, "-o", out / "%05d.exr", "--quiet",
                          "--exposures", "-1.5,1.5"], capfd)
    assert status == 0, err


def test_failed_run_removes_only_its_own_files_issue15(tmp_path, capfd):
    inp = nan_exr_sequence(tmp_path / "nan")  # frame 3 fails
    out = tmp_path / "o"
    out.mkdir()
    (out / "00004.exr").write_bytes(b"an earlier run's frame")
    (out / "notes.txt").write_text("mine")
    status, _, err = run(["reconstruct", inp, "-o", out / "%05d.exr", "--quiet", "--method", "reference",
                          "--exposures", "-1.5,1.5"], capfd)
    assert status in (1, 2)
    assert_one_error_line(err, "NaN")
    assert leftovers(out) == ["00004.exr", "notes.txt"] and out.is_dir()


@pytest.mark.parametrize("output,blocked", [("o/%05d.exr", "o/00002.exr"), ("o/x.mkv", "o/x.mkv")])
def test_output_path_that_is_a_folder_leaves_nothing_issue15(tmp_path, seq, capfd, output, blocked):
    (tmp_path / blocked).mkdir(parents=True)
    status, _, err = run(["reconstruct", seq.pattern, "-o", tmp_path / output, "--quiet",
                          "--exposures", "-1.5,1.5"], capfd)
    assert status == 2
    assert_one_error_line(err, "is a folder")
    assert ".part" not in err
    assert leftovers(tmp_path / "o") == [] and (tmp_path / blocked).is_dir()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc and /sys")
@pytest.mark.parametrize("output", ["/proc/out.mkv", "/sys/%05d.png"])
def test_system_folders_give_one_plain_line_issue15(seq, capfd, output):
    with_exposures_txt(seq, "-1.5,1.5\n")  # the output is checked before the chosen pattern is printed
    status, _, err = run(["reconstruct", seq.pattern, "-o", output, "--quiet"], capfd)
    assert status == 2
    assert_one_error_line(err, f"cannot write {output}")
    assert ".part" not in err and "Errno" not in err


def test_hdr10_content_light_is_measured_issue15(tmp_path, seq, capfd):
    """MaxCLL/MaxFALL are the brightest pixel and frame average over the encoded frames, not the
    mastering peak and 0."""
    from vs_hdrvid import nodes
    from vs_hdrvid.reconstruct import Options, build

    out = tmp_path / "v" / "x.mkv"
    status, _, err = run(["reconstruct", seq.pattern, "-o", out, "--quiet", "--exposures", "-1.5,1.5",
                          "--peak-nits", "4000"], capfd)
    assert status == 0, err
    tm = nodes.tonemap(build(nodes.source(seq.pattern), Options(exposures=[-1.5, 1.5])), "pq", peak_nits=4000)
    frames = [f.props for f in tm.frames()]
    want = (round(max(p["HdrFrameMaxNits"] for p in frames)), round(max(p["HdrFrameAverageNits"] for p in frames)))
    assert 0 < want[1] < want[0] < 3900
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out), "-vf", "showinfo", "-f", "null", "-"],
                          capture_output=True, text=True, timeout=60)
    found = set(re.findall(r"MaxCLL=(\d+), MaxFALL=(\d+)", info.stderr))
    assert found == {(str(want[0]), str(want[1]))}, info.stderr[-2000:]
    assert f"MaxCLL {want[0]}, MaxFALL {want[1]} cd/m2" in err


SLOW_SOURCE = """import time
import numpy as np
import vapoursynth as vs
core = vs.core
seq = core.std.BlankClip(format=vs.RGB24, width=64, height=48, length=60)
def slow(n, f):
    time.sleep(0.15)
    out = f.copy()
    np.asarray(out[0])[:] = 70 if n % 2 == 0 else 180  # 3 stops apart: -1.5, +1.5
    return out
core.std.ModifyFrame(seq, seq, slow).set_output()
"""


def _start(tmp_path: Path, output: Path, launcher: list[str]) -> subprocess.Popen:
    script = tmp_path / "slow.vpy"
    script.write_text(SLOW_SOURCE)
    return subprocess.Popen([*launcher, "reconstruct", str(script), "-o", str(output), "--quiet",
                             "--method", "reference", "--exposures", "-1.5,1.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the run did not get going"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("output", ["o/%05d.exr", "o/x.mkv"])
def test_sigterm_cleans_up_like_ctrl_c_issue15(tmp_path, output):
    out = tmp_path / output
    proc = _start(tmp_path, out, [sys.executable, "-m", "vs_hdrvid.cli"])
    folder = out.parent
    if output.endswith(".exr"):  # finished frames under their final names
        _wait_for(lambda: folder.is_dir() and len(list(folder.glob("0*.exr"))) >= 2, proc)
    else:  # ffmpeg writing the .part
        _wait_for(lambda: folder.is_dir() and list(folder.glob(".x.*.part")), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["vs-hdrvid: terminated"], err
    assert not folder.exists(), leftovers(folder)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 1.5, 4.0])
def test_ctrl_c_during_start_up_is_one_line_issue15(tmp_path, delay):
    """Loading torch and VapourSynth takes seconds; Ctrl-C there (or once the run has begun) ends in
    one line, status 130 and nothing written."""
    proc = _start(tmp_path, tmp_path / "o" / "%05d.exr", [sys.executable, "-m", "vs_hdrvid.cli"])
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["vs-hdrvid: interrupted"], err
    assert not (tmp_path / "o").exists()


def test_fail_is_the_one_error_form_issue15(capfd):
    assert fail("no such thing:\n  x", 3) == 3
    assert fail(ValueError("bad\nvalue")) == 1
    _, err = capfd.readouterr()
    assert err.splitlines() == ["vs-hdrvid: error: no such thing: x", "vs-hdrvid: error: bad"]
