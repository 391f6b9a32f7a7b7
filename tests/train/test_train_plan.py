"""``train-all`` (one budget for every network), ``bench-train`` and the device script, on the micro preset."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from vs_hdrvid import cli
from vs_hdrvid.train.config import TrainConfig
from vs_hdrvid.train.plan import PLAN, plan_configs, run_plan

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from vs_hdrvid.synth import generate

    out = tmp_path_factory.getbasetemp() / "train-synth"
    generate("micro", root=out, progress=False)
    return out


def test_plan_shares_the_budget_and_keeps_the_schedule():
    items = plan_configs(60, "cpu")
    assert [i.name for i, _ in items] == [p.name for p in PLAN]
    assert sum(c.max_minutes for _, c in items) == pytest.approx(60)
    coarse = dict((i.name, c) for i, c in items)["coarse-2exp"]
    assert (coarse.batch, coarse.patch, coarse.options.flow_refine, coarse.options.flow_net,
            coarse.options.blend) == (4, 128, True, "fill", "merge")
    configs = dict((i.name, c) for i, c in items)
    assert configs["coarse-3exp"].lr == coarse.lr == 5e-5 and not configs["coarse-3exp"].options.flow_refine
    assert all(c.ema == 0.999 for name, c in configs.items() if name != "dealthdr-2exp")
    gpu = dict((i.name, c) for i, c in plan_configs(8, "gpu", ("coarse-2exp",)))
    assert list(gpu) == ["coarse-2exp"] and gpu["coarse-2exp"].batch == 16
    assert gpu["coarse-2exp"].max_minutes == pytest.approx(8)


@pytest.mark.parametrize("argv, match", [
    (["train-all", "--minutes", "0"], "positive number of minutes"),
    (["train-all", "--minutes", "nan"], "positive number of minutes"),
    (["train-all", "--minutes", "5", "--only", "coarse-9exp"], "unknown networks"),
    (["train", "bogus"], "invalid choice"),
    (["train", "coarse", "--minutes", "-1"], "positive number of minutes"),
    (["bench-train", "--seconds", "0", "--root", "/nonexistent"], "positive"),
])
def test_bad_budgets_and_names_are_one_line(argv, match, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vs-hdrvid: error:") and match in err[0], err


def test_resume_of_another_design_is_refused_and_the_run_kept(tmp_path, root):
    from vs_hdrvid.train.loop import train

    base = dict(stage="coarse", exposures=2, root=str(root), preset="micro", val_preset="micro", steps=1,
                batch=2, patch=32, val_patch=32, val_windows=1, val_at_start=False, init_from="none",
                runs_dir=str(tmp_path / "runs"), weights_dir=str(tmp_path / "w"), synth_if_missing=False,
                ship="never")
    train(TrainConfig(**base))
    ckpt = tmp_path / "runs" / "coarse-2exp" / "ckpt.pt"
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match="flow_refine"):
        train(TrainConfig(**base, resume=True, options={"flow_refine": False}))
    assert ckpt.read_bytes() == before


@pytest.mark.slow
def test_train_all_continues_runs_within_the_budget(tmp_path, root):
    common = dict(root=str(root), preset="micro", val_preset="micro", val_patch=32, runs_dir=str(tmp_path / "runs"),
                  weights_dir=str(tmp_path / "w"), device="cpu")
    first = run_plan(0.6, "tiny", ("coarse-2exp",), **common)
    assert first[0]["name"] == "coarse-2exp" and first[0]["stopped"] == "max_minutes" and first[0]["step"] >= 1
    again = run_plan(0.6, "tiny", ("coarse-2exp",), **common)
    assert again[0]["step"] > first[0]["step"]  # resumed its run folder, not a new run


@pytest.mark.slow
def test_bench_train_prints_both_paths_and_the_speedup(root, capsys):
    assert cli.main(["bench-train", "--stage", "coarse", "--seconds", "1", "--batch", "1", "--patch", "32",
                     "--root", str(root), "--preset", "micro", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("CPU: ") for line in out) and any("baseline:" in line for line in out)
    assert out[-1].startswith("speedup ") and out[-1].endswith("x over the fp32 eager baseline")


@pytest.mark.slow
def test_device_script_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, DEVICE="cpu", PROFILE="tiny", PRESET="micro",
               MINUTES="0.6", ONLY="coarse-2exp", WORKERS="2", WORK=str(tmp_path / "work"))
    run = subprocess.run(["bash", str(ROOT / "scripts" / "device_train.sh")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "train-all: coarse-2exp: step" in (out / "summary.txt").read_text()
    parts = sorted(out.glob("weights.tgz.*"))
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts))) as tar:
        names = tar.getnames()
    assert "./MANIFEST.json" in names and "./coarse_2exp.safetensors" in names
    with tarfile.open(out / "logs.tgz") as tar:
        assert any(n.endswith("coarse-2exp/log.jsonl") for n in tar.getnames())


def test_the_best_validated_state_is_what_ships():
    from types import SimpleNamespace

    from torch import nn

    from vs_hdrvid.train.loop import _Best

    net = nn.Linear(2, 2)
    best = _Best(SimpleNamespace(nets={"coarse": net}, trained=("coarse",)))
    good = {"step": 100, "val_psnr_mu": 41.9}
    best.offer(good)
    kept = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    last = {"step": 200, "val_psnr_mu": 41.7}
    best.offer(last)
    assert best.restore(last, 200) == (good, 100)
    assert torch.equal(net.weight, kept)
    better = {"step": 300, "val_psnr_mu": 42.0}
    best.offer(better)
    assert best.restore(better, 300) == (better, 300)
