"""`vs-hdrvid bench-dealthdr` on the micro preset: the cost table and the --curve plot, at tiny sizes."""
import json
import math

import pytest
import torch

from vs_hdrvid import weights as W
from vs_hdrvid.cli import main
from vs_hdrvid.eval.bench_dealthdr import load_network
from vs_hdrvid.models.dealthdr import DeAltHDR, DeAltHDRConfig


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The micro preset (its day-recipe scenes give the windows), shared with the train tests."""
    from vs_hdrvid.synth import generate

    out = tmp_path_factory.getbasetemp() / "train-synth"
    generate("micro", root=out, progress=False)
    return out


@pytest.fixture(scope="module")
def wdir(tmp_path_factory):
    """Untrained DeAltHDRConfig.small weights (zero head: the output is the network's merge)."""
    folder = tmp_path_factory.mktemp("bench-weights")
    torch.manual_seed(0)
    cfg = DeAltHDRConfig.small()
    W.write(DeAltHDR(cfg), "dealthdr-2exp", folder)
    return folder


def _strict(text: str):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=reject)


def run(argv, capsys):
    try:
        status = main([str(a) for a in argv])
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def test_bench_table(tmp_path, root, wdir, capsys):
    out = tmp_path / "bench.json"
    status, text, err = run(["bench-dealthdr", "--configs", "small", "--sizes", "64x48", "--device", "cpu",
                             "--s", "0,inf", "--repeats", "1", "--root", root, "--preset", "micro", "--patch", 32,
                             "--weights", wdir, "--json", out], capsys)
    assert status == 0, err
    res = _strict(out.read_text())
    rows = res["rows"]
    assert [r["s"] for r in rows] == ["0", "inf"] and all(r["size"] == "64x48" for r in rows)
    assert all(r["weights"].startswith("trained") and r["seconds"] > 0 for r in rows)
    assert rows[0]["attention_ratio"] == 0.0 and rows[1]["attention_ratio"] == 1.0
    assert 0 < rows[0]["gflops"] < rows[1]["gflops"]
    assert "day" in res["window"]["scene"] and "s=inf" in text


def test_load_network_falls_back_to_random_for_another_width(wdir):
    net, source = load_network("small", wdir, torch.device("cpu"), torch.float32)
    assert source.startswith("trained") and net.config == DeAltHDRConfig.small()
    net, source = load_network("paper", wdir, torch.device("cpu"), torch.float32)
    assert source.startswith("random") and net.config == DeAltHDRConfig()


def test_curve_plot_and_json(tmp_path, root, wdir, capsys):
    png, js = tmp_path / "fig" / "curve.png", tmp_path / "curve.json"
    status, text, err = run(["bench-dealthdr", "--curve", png, "--json", js, "--s", "0,15,inf", "--root", root,
                             "--preset", "micro", "--patch", 32, "--windows", 1, "--weights", wdir,
                             "--device", "cpu"], capsys)
    assert status == 0, err
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = _strict(js.read_text())
    pts = res["points"]
    assert [p["s"] for p in pts] == ["0", "15", "inf"] and res["crops"] >= 1
    ratios = [p["attention_ratio"] for p in pts]
    assert ratios[0] == 0.0 and ratios[-1] == 1.0 and ratios == sorted(ratios)
    assert all(math.isfinite(p["psnr_mu"]) and p["seconds"] > 0 for p in pts)
    # an untrained network returns its merge whatever s is: same quality, more cost
    assert len({round(p["psnr_mu"], 6) for p in pts}) == 1
    assert pts[0]["gflops"] < pts[-1]["gflops"]
    assert all(name.split("_")[-2] in ("day", "night") for name in res["scenes"])


def test_weights_of_the_classical_flow_design_get_the_dis_flows(tmp_path, root, capsys):
    """flow_source="dis": the bench and the curve give the network the window's DIS flows (their
    time apart, as flow_seconds); the untrained network is then the DIS-aligned merge at every s."""
    folder = tmp_path / "dis"
    torch.manual_seed(0)
    W.write(DeAltHDR(DeAltHDRConfig.sized("tiny", flow_source="dis")), "dealthdr-2exp", folder)
    out, js = tmp_path / "bench.json", tmp_path / "curve.json"
    status, _, err = run(["bench-dealthdr", "--configs", "shipped", "--sizes", "64x48", "--device", "cpu", "--s",
                          "0,inf", "--repeats", "1", "--root", root, "--preset", "micro", "--patch", 32,
                          "--weights", folder, "--json", out, "--no-flops"], capsys)
    assert status == 0, err
    rows = _strict(out.read_text())["rows"]
    assert all(r["weights"].startswith("trained") and r["flow_seconds"] > 0 for r in rows)
    assert [r["attention_ratio"] for r in rows] == [0.0, 1.0]
    status, _, err = run(["bench-dealthdr", "--curve", tmp_path / "c.png", "--json", js, "--s", "0,inf", "--root",
                          root, "--preset", "micro", "--patch", 32, "--windows", 1, "--weights", folder,
                          "--device", "cpu", "--time-size", "64x48"], capsys)
    assert status == 0, err
    pts = _strict(js.read_text())["points"]
    assert len({round(p["psnr_mu"], 6) for p in pts}) == 1 and pts[0]["attention_ratio"] == 0.0


def test_curve_needs_trained_weights_and_bad_arguments_are_one_line(tmp_path, root, capsys):
    (tmp_path / "empty").mkdir()
    cases = {"missing": ["--curve", tmp_path / "c.png", "--weights", tmp_path / "empty", "--root", root,
                         "--preset", "micro", "--patch", 32],
             "--s": ["--s", "-1"], "fast": ["--s", "fast"], "paper, small and shipped": ["--configs", "huge"],
             "at least 32x32": ["--sizes", "10x10"], "multiple of 16": ["--patch", "30"]}
    for needle, argv in cases.items():
        status, _, err = run(["bench-dealthdr", *argv], capsys)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert status == 2 and len(lines) == 1 and lines[0].startswith("vs-hdrvid: error:"), (argv, err)
        assert needle in lines[0], (needle, err)
    assert not (tmp_path / "c.png").exists()
