"""The built distribution: sdist -> wheel as `pip install .` makes it, with the weights and the sample."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "MANIFEST.in", "README.md", "docs", "vs_hdrvid", "weights", "examples"]
BUILD = """
import sys
from setuptools import build_meta as b
out = sys.argv[1]
name = b.build_sdist(out) if sys.argv[2] == "sdist" else b.build_wheel(out)
print(name)
"""


def _build(cwd: Path, kind: str, out: Path) -> Path:
    proc = subprocess.run([sys.executable, "-c", BUILD, str(out), kind], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """sdist from a copy of the checkout's sources, then the wheel from that sdist (as pip does)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(
            ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                        if (ROOT / name).is_dir() else {}))
    sdist = _build(src, "sdist", tmp)
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    return _build(unpacked, "wheel", tmp / "dist")


@pytest.mark.slow
def test_wheel_carries_the_weights_and_the_sample_issue15(wheel):
    manifest = json.loads((ROOT / "weights" / "MANIFEST.json").read_text())
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert json.loads(z.read("vs_hdrvid/_data/weights/MANIFEST.json")) == manifest
        for file, entry in manifest.items():
            member = f"vs_hdrvid/_data/weights/{file}"
            assert member in names, f"{file} of weights/MANIFEST.json is not in the wheel"
            assert hashlib.sha256(z.read(member)).hexdigest() == entry["sha256"], file
        prefix = "vs_hdrvid/_data/weights/"
        shipped = {n.removeprefix(prefix) for n in names if n.startswith(prefix)}
        assert shipped == set(manifest) | {"MANIFEST.json"}  # nothing unregistered rides along
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "vs-hdrvid = vs_hdrvid.cli:main" in z.read(entry_points).decode()
    sample = ROOT / "examples" / "sample"
    for path in sample.rglob("*"):
        if path.is_file():
            assert f"vs_hdrvid/_data/sample/{path.relative_to(sample).as_posix()}" in names, path
    for path in (ROOT / "vs_hdrvid").rglob("*.py"):  # the package list in pyproject.toml is complete
        if "__pycache__" not in path.parts:
            assert path.relative_to(ROOT).as_posix() in names, f"{path} is not in the wheel"
    assert not [n for n in names if n.startswith(("weights/", "examples/", "tests/"))]


PROBE = """
import json, sys
import vs_hdrvid as hv
from vs_hdrvid import weights
from vs_hdrvid.demo import SAMPLE
model, entry = weights.load("coarse-2exp")
lin = hv.linearize(hv.read_images(str(SAMPLE / "ldr" / "%05d.png")), device="cpu")
print(json.dumps({"package": hv.__file__, "weights": str(weights.WEIGHTS_DIR), "sample": str(SAMPLE),
                  "pattern": list(lin.get_frame(0).props["HdrExposurePattern"])}))
"""


@pytest.mark.slow
def test_installed_wheel_finds_its_weights_and_sample_issue15(wheel, tmp_path):
    """Installed without the checkout (the wheel unpacked as pip installs it), the package finds the
    weights and the sample inside itself: `--method coarse` and examples/*.vpy need them."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    env = {k: v for k, v in os.environ.items() if k != "HDRVID_WEIGHTS"}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["package"].startswith(str(site))
    assert found["weights"] == str(site / "vs_hdrvid" / "_data" / "weights")
    assert found["sample"] == str(site / "vs_hdrvid" / "_data" / "sample")
    assert found["pattern"] == [-1.5, 1.5]  # from the sample's exposures.txt


def test_vspreview_state_is_not_tracked_issue15():
    """vspreview writes .vsjet/ beside the script it opens."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(["git", "check-ignore", "-q", "examples/.vsjet/config.yml"], cwd=ROOT)
    assert proc.returncode == 0
