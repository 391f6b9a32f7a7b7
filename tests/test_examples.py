"""The example scripts run under vspipe on a synthetic sequence given with ``-a input=...``."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, make_sequence

VSPIPE = Path(sys.executable).parent / "vspipe"
FRAMES, H, W = 6, 48, 64


def parse_y4m(data: bytes) -> tuple[dict[str, str], int]:
    """Header fields and the number of complete frames of a YUV4MPEG2 stream (4:2:0)."""
    header, _, rest = data.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 "), header[:40]
    fields = {t[:1].decode(): t[1:].decode() for t in header.split()[1:]}
    w, h = int(fields["W"]), int(fields["H"])
    depth = 2 if fields.get("C", "420").endswith(("p10", "p12", "p16")) else 1
    size = (w * h + 2 * (w // 2) * (h // 2)) * depth
    count, pos = 0, 0
    while pos < len(rest):
        line_end = rest.index(b"\n", pos)
        assert rest[pos:line_end].startswith(b"FRAME"), rest[pos:pos + 20]
        pos = line_end + 1 + size
        assert pos <= len(rest), "truncated frame"
        count += 1
    return fields, count


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both scripts at once (each vspipe pays the start-up of torch): name -> CompletedProcess-like."""
    scripts = {name: ROOT / "examples" / f"{name}.vpy" for name in ("reconstruct", "preview")}
    seq = make_sequence(tmp_path_factory.mktemp("ex"), [-1.5, 1.5], FRAMES, size=(H, W), motion=(1.0, 0.5, 0.0, 1.0))
    args = {"reconstruct": ["-c", "y4m"], "preview": []}
    procs = {name: subprocess.Popen([str(VSPIPE), "-a", f"input={seq.pattern}", str(path), *args[name], "-"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
             for name, path in scripts.items()}
    # without -a the script reads the bundled sample, from vspipe's working folder (the script's)
    procs["default"] = subprocess.Popen([str(VSPIPE), str(scripts["reconstruct"]), "--info"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    out = {}
    for name, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        out[name] = (p.returncode, stdout, stderr.decode(errors="replace"))
    return out


def test_reconstruct_vpy_writes_y4m(runs):
    rc, stdout, stderr = runs["reconstruct"]
    assert rc == 0, stderr[-2000:]
    fields, count = parse_y4m(stdout)
    assert (fields["W"], fields["H"]) == (str(W), str(H))
    assert fields["C"].startswith("420p10")
    assert count == FRAMES


def test_preview_vpy_side_by_side(runs):
    rc, stdout, stderr = runs["preview"]
    assert rc == 0, stderr[-2000:]
    assert len(stdout) == FRAMES * (2 * W) * H * 3  # RGB24 planes, input beside reconstruction


def test_reconstruct_vpy_defaults_to_the_bundled_sample(runs):
    rc, stdout, stderr = runs["default"]
    assert rc == 0, stderr[-2000:]
    frames = len(list((ROOT / "examples" / "sample" / "ldr").glob("*.png")))
    assert f"Frames: {frames}" in stdout.decode() + stderr
