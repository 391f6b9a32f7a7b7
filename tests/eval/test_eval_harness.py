import argparse
import json

import pytest
from PIL import Image

from eval_fixture import FakeRunner, make_scene
from vs_hdrvid.eval import add_cli, evaluate, run_cli
from vs_hdrvid.eval.harness import METHODS, method_argv, parse_frames
from vs_hdrvid.eval.scenes import exposure_labels, list_scenes, load_scene


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_scene(root, "micro", "s2", [-1.5, 1.5], degradation="clean", motion="small", seed=1)
    make_scene(root, "micro", "s3", [-2.0, 0.0, 2.0], degradation="night", motion="medium", seed=2)
    return root


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    runner = FakeRunner()
    res = evaluate(dataset, "micro", ["reference", "merge", "merge+dis"], out, cvvdp=False,
                   progress=False, runner=runner, device="cpu")
    return res, out, runner


def test_scene_reading(dataset):
    assert list_scenes(dataset, "micro") == ["s2", "s3"]
    s = load_scene(dataset, "micro", "s3")
    assert s.pattern == [-2.0, 0.0, 2.0] and s.h_sat == pytest.approx(4.0)
    assert s.labels[:4] == ["low", "mid", "high", "low"]
    assert s.groups == ["all", "3-exp", "night", "motion medium"]
    assert exposure_labels([1.5, -1.5]) == {-1.5: "low", 1.5: "high"}


def test_method_table_and_frames():
    assert method_argv("merge+dis") == ["--method", "merge", "--flow", "dis"]
    assert set(METHODS) >= {"reference", "merge", "merge+dis", "coarse", "refine", "dealthdr"}
    with pytest.raises(ValueError, match="unknown method"):
        method_argv("mrege")
    assert method_argv("dealthdr@s0@fp32") == ["--method", "dealthdr", "--s", "0", "--fp32"]
    assert method_argv("coarse@fp32") == ["--method", "coarse", "--fp32"]
    assert method_argv("dealthdr@compile") == ["--method", "dealthdr", "--compile"]
    assert method_argv("refine@nocompile") == ["--method", "refine", "--no-compile"]
    for bad in ("merge@fp32", "coarse@s15", "refine@fp16", "merge+dis@compile"):
        with pytest.raises(ValueError, match="unknown modifier"):
            method_argv(bad)
    assert parse_frames("2:5", 10) == (2, 5)
    assert parse_frames(":3", 10) == (0, 3)
    assert parse_frames((4, 99), 10) == (4, 10)
    with pytest.raises(ValueError):
        parse_frames("5:5", 10)


def test_unknown_method_fails_before_running(dataset, tmp_path):
    runner = FakeRunner()
    with pytest.raises(ValueError):
        evaluate(dataset, "micro", ["merge", "nope"], tmp_path, cvvdp=False, progress=False, runner=runner)
    assert runner.calls == []


def test_command_lines(run):
    _, out, runner = run
    assert len(runner.calls) == 6  # 2 scenes x 3 methods
    first = runner.calls[0]
    assert first[0] == "reconstruct" and first[1].endswith("s2/ldr/%05d.png")
    assert "--exposures=-1.5,1.5" in first  # '=' form: argparse would take -1.5,1.5 for an option
    assert first[first.index("-o") + 1] == str(out / "outputs" / "s2" / "reference" / "%05d.exr")
    assert runner.calls[2][-7:] == ["--method", "merge", "--flow", "dis", "--device", "cpu", "--quiet"]
    assert "--frames" not in first


def test_per_exposure_aggregation(run):
    res, _, _ = run
    g2 = res["groups"]["2-exp"]["methods"]["reference"]
    assert g2["psnr_l"]["low"] == pytest.approx(40.0, abs=0.01)
    assert g2["psnr_l"]["high"] == pytest.approx(20.0, abs=0.01)
    assert g2["psnr_l"]["all"] == pytest.approx(30.0, abs=0.01)
    assert set(g2["psnr_l"]) == {"low", "high", "all"} and g2["frames"] == 6
    g3 = res["groups"]["3-exp"]["methods"]["reference"]
    assert [g3["psnr_l"][k] for k in ("low", "mid", "high")] == pytest.approx([40.0, 30.0, 20.0], abs=0.01)
    ga = res["groups"]["all"]["methods"]["reference"]
    assert ga["frames"] == 12 and ga["psnr_l"]["all"] == pytest.approx(30.0, abs=0.01)
    assert ga["psnr_l"]["mid"] == pytest.approx(30.0, abs=0.01)  # only the 3-exposure scene has mid frames
    assert set(res["groups"]) == {"all", "2-exp", "3-exp", "clean", "night", "motion small", "motion medium"}
    # per-frame records carry EV and label
    frames = res["scenes"]["s3"]["methods"]["reference"]["frames"]
    assert [(f["ev"], f["exposure"]) for f in frames[:3]] == [(-2.0, "low"), (0.0, "mid"), (2.0, "high")]
    assert ga["ssim_mu"]["all"] < 1.0 and ga["psnr_mu"]["all"] > 0


def test_exact_method_and_twe(run):
    res, _, _ = run
    s2 = res["scenes"]["s2"]
    assert s2["gt_twe"] == pytest.approx(0.0, abs=1e-9)  # integer shifts warp exactly
    merge = s2["methods"]["merge"]
    assert merge["twe"] == pytest.approx(0.0, abs=1e-9)
    assert all(f["psnr_mu"] == float("inf") and f["ssim_mu"] == pytest.approx(1.0) for f in merge["frames"])
    assert s2["methods"]["reference"]["twe"] > 1e-4  # per-exposure offsets flicker
    assert merge["seconds"] >= 0 and merge["seconds_per_frame"] == pytest.approx(merge["seconds"] / 6)


def test_failures_recorded(run):
    res, _, _ = run
    assert {(f["scene"], f["method"]) for f in res["failures"]} == {("s2", "merge+dis"), ("s3", "merge+dis")}
    assert res["groups"]["all"]["methods"]["merge+dis"]["failed"] == 2
    assert res["scenes"]["s2"]["methods"]["merge+dis"]["status"] == "failed"


def test_files_written(run):
    res, out, _ = run
    data = json.loads((out / "results.json").read_text())
    assert data["groups"]["2-exp"]["methods"]["reference"]["psnr_l"]["low"] == pytest.approx(40.0, abs=0.01)
    assert data["scenes"]["s2"]["methods"]["merge"]["frames"][0]["psnr_mu"] is None  # inf -> null
    md = (out / "results.md").read_text()
    for heading in ("## all (2 scenes)", "## 2-exp (1 scenes)", "## 3-exp (1 scenes)", "## night"):
        assert heading in md
    assert "| reference | " in md and "40.00" in md and "merge+dis (1 failed)" in md
    assert "PSNR-μ low | PSNR-μ high | PSNR-μ all" in md
    with Image.open(out / "crops.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200
    assert (out / "outputs" / "s3" / "merge" / "00005.exr").is_file()


def test_frame_range_scene_subset_and_cvvdp(dataset, tmp_path):
    pytest.importorskip("pycvvdp")
    res = evaluate(dataset, "micro", ["merge", "reference"], tmp_path, scenes=["s3"], frames="1:3",
                   progress=False, runner=FakeRunner(), keep_outputs=False, crop_rows=1)
    sc = res["scenes"]["s3"]
    assert sc["frame_range"] == [1, 3]
    assert [f["frame"] for f in sc["methods"]["merge"]["frames"]] == [1, 2]
    assert sc["methods"]["merge"]["jod"] == pytest.approx(10.0, abs=1e-3)
    assert sc["methods"]["reference"]["jod"] < 10.0
    assert not (tmp_path / "outputs").exists()
    assert list(res["groups"]) == ["all", "3-exp", "night", "motion medium"]


def test_cli_arguments(dataset, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="vs-hdrvid")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--root", str(tmp_path / "none"), "--scenes", "2", "--no-cvvdp",
                              "--out", str(tmp_path / "o")])
    assert args.scenes == 2 and args.cvvdp is False
    assert args.methods == "reference,merge,merge+dis" and args.keep_outputs is True
    assert run_cli(args) == 2  # no dataset there
    assert "synth" in capsys.readouterr().err
    args = parser.parse_args(["eval", "--root", str(dataset), "--preset", "micro", "--methods", "bogus"])
    assert run_cli(args) == 2
    assert parser.parse_args(["eval", "--scenes", "a,b"]).scenes == ["a", "b"]
