"""``reconstruct --workers`` on a local Ray instance (issue 16): the frames of one process, retries, errors.

The Ray tests share one ``ray.init(num_cpus=2)``; they skip only where ray cannot be imported.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vs_hdrvid.encode import ffmpeg_exe

from conftest import make_sequence
from test_cli import assert_one_error_line, leftovers, run

try:
    import ray  # noqa: F401
    RAY_MISSING = None
except ImportError as e:
    RAY_MISSING = f"ray cannot be imported ({e}); pip install 'vs-hdrvid[ray]'"
needs_ray = pytest.mark.skipif(RAY_MISSING is not None, reason=RAY_MISSING or "")
EVS = "-1.5,1.5"


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def seq(tmp_path_factory):
    return make_sequence(tmp_path_factory.mktemp("dist"), [-1.5, 1.5], 8, size=(48, 64), name="in")


def decoded(path: Path) -> bytes:
    return subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt",
                           "yuv420p10le", "-"], capture_output=True, check=True).stdout


def same_output(a: Path, b: Path, video: bool) -> None:
    if video:
        frames = decoded(a)
        assert len(frames) == 8 * 64 * 48 * 3 and frames == decoded(b)
        return
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) == [f"{n:05d}.exr" for n in range(8)]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ------------------------------------------------------------------------- the one-process frames
@needs_ray
@pytest.mark.parametrize("method", ["merge", "coarse"])
@pytest.mark.parametrize("out", ["%05d.exr", "x.mkv"])
def test_two_workers_make_the_one_process_output_issue16(local_ray, seq, tmp_path, capfd, method, out):
    outputs, errs = {}, {}
    for name, extra in (("one", []), ("two", ["--workers", "2"])):
        outputs[name] = tmp_path / name / out
        status, _, errs[name] = run(["reconstruct", seq.pattern, "-o", outputs[name], "--exposures", EVS,
                                     "--method", method, "--device", "cpu", "--quiet", *extra], capfd)
        assert status == 0, errs[name]
    assert "2 segments of 4 frames, 2 at a time" in errs["two"] and "from 2 segments" in errs["two"]
    video = out.endswith(".mkv")
    if video:  # MaxCLL and MaxFALL measured over the whole clip, as one process measures them
        light = [re.search(r"\(MaxCLL \d+, MaxFALL \d+ cd/m2, measured\)", errs[k]).group(0) for k in ("one", "two")]
        assert light[0] == light[1]
        same_output(outputs["one"], outputs["two"], video)
    else:
        same_output(outputs["one"].parent, outputs["two"].parent, video)
    assert leftovers(tmp_path / "two") == leftovers(tmp_path / "one")  # no parts left, no lock


@needs_ray
def test_segments_of_any_length_and_a_frame_range_issue16(local_ray, seq, tmp_path, capfd):
    for name, extra in (("one", []), ("three", ["--workers", "2", "--segment-frames", "2"])):
        status, _, err = run(["reconstruct", seq.pattern, "-o", tmp_path / name / "f%03d.exr", "--frames", "1:8",
                              "--exposures", EVS, "--quiet", *extra], capfd)
        assert status == 0, err
    assert "4 segments of 1-2 frames" in err
    one, three = leftovers(tmp_path / "one"), leftovers(tmp_path / "three")
    assert one == three == [f"f{n:03d}.exr" for n in range(1, 8)]
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "three" / name).read_bytes()


# ------------------------------------------------------------------------------------ failures
HOLD = '''
import os, time
import vapoursynth as vs
import vs_hdrvid as hv

clip = hv.read_images({pattern!r})

def hold(n, f):  # frame {frame} waits while the marker exists: the worker making it is killed there
    t = time.monotonic()
    while n == {frame} and os.path.exists({marker!r}) and time.monotonic() - t < 60:
        time.sleep(0.02)
    return f

vs.core.std.ModifyFrame(clip, clip, hold).set_output()
'''


@needs_ray
def test_a_task_killed_mid_segment_is_retried_and_the_output_is_the_same_issue16(local_ray, seq, tmp_path):
    from vs_hdrvid.distributed import write_distributed
    from vs_hdrvid.nodes import source
    from vs_hdrvid.outputs import claim
    from vs_hdrvid.reconstruct import Options, build, write_output

    marker = tmp_path / "hold"
    script = tmp_path / "held.vpy"
    script.write_text(HOLD.format(pattern=seq.pattern, frame=6, marker=str(marker)))  # only segment 1 reads 6
    opts = Options(exposures=[-1.5, 1.5], device="cpu")
    one = tmp_path / "one" / "%05d.exr"
    write_output(build(source(str(script)), opts), str(one), progress=False)
    marker.touch()
    killed = []

    def kill_segment_1(snapshot):
        attempt = snapshot.get((1, 0))
        if attempt and attempt["done"] >= 1 and not killed:
            os.kill(attempt["pid"], signal.SIGKILL)
            killed.append(attempt["pid"])
            marker.unlink()

    two = tmp_path / "two" / "%05d.exr"
    src = source(str(script))
    with claim(str(two)) as target:
        outcome = write_distributed(src, build(src, opts), input=str(script), output=str(two), kind="exr",
                                    options=opts, pattern=[-1.5, 1.5], target=target, workers=2, progress=False,
                                    on_progress=kill_segment_1)
    assert killed
    assert outcome.attempts[0] == ["done"]
    assert outcome.attempts[1][0].startswith("lost") and outcome.attempts[1][1:] == ["done"]
    assert sorted(outcome.paths) == [str(two) % n for n in range(8)]  # each frame adopted once
    same_output(one.parent, two.parent, video=False)
    assert leftovers(tmp_path / "two") == [f"{n:05d}.exr" for n in range(8)]


@needs_ray
def test_sigterm_through_ray_address_cleans_up_like_one_process_issue16(local_ray, seq, tmp_path):
    """A second process joins the running cluster by its address; SIGTERM once a segment is in."""
    marker = tmp_path / "hold"
    script = tmp_path / "held.vpy"
    script.write_text(HOLD.format(pattern=seq.pattern, frame=6, marker=str(marker)))
    out = tmp_path / "o" / "%05d.exr"
    proc = subprocess.Popen([sys.executable, "-m", "vs_hdrvid.cli", "reconstruct", str(script), "-o", str(out),
                             "--exposures", EVS, "--quiet", "--workers", "2",
                             "--ray", local_ray.get_runtime_context().gcs_address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not lines or "segments of" not in lines[-1]:  # the driver has read its frames 0-23 to check
            lines.append(proc.stderr.readline())           # the exposures: hold frame 6 for the workers only
            assert lines[-1], lines
        marker.touch()
        t0 = time.monotonic()
        while len(list(out.parent.glob("0*.exr"))) < 4:  # segment 0 adopted, segment 1 held
            assert proc.poll() is None and time.monotonic() - t0 < 60
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stdout, err = proc.communicate(timeout=60)
    finally:
        marker.unlink(missing_ok=True)
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["vs-hdrvid: terminated"] and stdout == "", err
    assert not out.parent.exists()


@needs_ray
def test_a_segment_that_fails_everywhere_leaves_nothing_issue16(local_ray, tmp_path, capfd):
    from test_cli import nan_exr_sequence

    inp = nan_exr_sequence(tmp_path / "nan")
    for out in (tmp_path / "o1" / "%05d.exr", tmp_path / "o2" / "x.mkv"):
        status, _, err = run(["reconstruct", inp, "-o", out, "--quiet", "--method", "reference",
                              "--exposures", EVS, "--workers", "2"], capfd)
        assert status == 2, err
        assert_one_error_line(err.split("at a time;")[-1].split("\n", 1)[-1], "NaN")  # after the plan's line
        assert not out.parent.exists()  # frames of the segment that worked are taken back too


@needs_ray
def test_a_worker_that_cannot_open_the_input_is_one_line_issue16(local_ray, tmp_path):
    from vs_hdrvid.cli import UserError
    from vs_hdrvid.distributed import check_reachable

    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match=r"worker node \S+ cannot open .*missing\.mkv \(No such file"):
        check_reachable(local_ray, [str(tmp_path / "missing.mkv")], [], tmp_path / "out")
    with pytest.raises(UserError, match="sees .*00009.png"):
        (tmp_path / "00009.png").touch()
        check_reachable(local_ray, [], [str(tmp_path / "00009.png")], tmp_path / "out")
    assert check_reachable(local_ray, [str(tmp_path / "00009.png")], [], tmp_path / "out") == 1


# ------------------------------------------------------------------------- arguments, addresses
@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", ""])
def test_bad_workers_values_are_one_line_issue16(tmp_path, capfd, value):
    status, _, err = run(["reconstruct", "in/%05d.png", "-o", tmp_path / "o" / "%05d.exr", f"--workers={value}"],
                         capfd)
    assert status == 2
    assert_one_error_line(err, "--workers")
    assert not (tmp_path / "o").exists()


def test_ray_options_need_workers_issue16(tmp_path, capfd):
    for extra in (["--ray", "auto"], ["--segment-frames", "10"]):
        status, _, err = run(["reconstruct", "in/%05d.png", "-o", tmp_path / "o" / "%05d.exr", *extra], capfd)
        assert status == 2
        assert_one_error_line(err, "needs --workers")


def test_workers_without_ray_say_what_to_install_issue16(tmp_path, capfd, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    status, _, err = run(["reconstruct", "in/%05d.png", "-o", tmp_path / "o" / "%05d.exr", "--workers", "2"], capfd)
    assert status == 2
    assert_one_error_line(err, "pip install 'vs-hdrvid[ray]'")
    assert not (tmp_path / "o").exists()


@needs_ray
@pytest.mark.parametrize("address,needle", [("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"),
                                            ("no-port-here", "--ray takes HOST:PORT")])
def test_unreachable_ray_address_is_one_line_issue16(seq, tmp_path, capfd, address, needle):
    t0 = time.monotonic()
    status, _, err = run(["reconstruct", seq.pattern, "-o", tmp_path / "o" / "%05d.exr", "--exposures", EVS,
                          "--workers", "2", "--ray", address], capfd)
    assert status == 2 and time.monotonic() - t0 < 10
    assert_one_error_line(err, needle)
    assert not (tmp_path / "o").exists()
