"""``adapt`` (DeAltHDR Algorithm 1) runs on the shared training loop: checkpoint with its EMA
teacher, resume, budget, and the adapted weights with their manifest entry in ``--out``."""
from __future__ import annotations

import json

import pytest
import torch

from vs_hdrvid import weights as W
from vs_hdrvid.train.config import TrainConfig
from vs_hdrvid.train.loop import train
from vs_hdrvid.train.stages.adapt import FootageWindows


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """A 2-exposure micro scene's LDR frames as an image sequence, and its EV pattern."""
    from vs_hdrvid.synth import generate

    root = tmp_path_factory.getbasetemp() / "train-synth"
    generate("micro", root=root, progress=False)
    scene = sorted(d for d in (root / "micro").iterdir() if d.is_dir() and json.loads((d / "meta.json").read_text())["exposure_count"] == 2)[0]
    evs = json.loads((scene / "meta.json").read_text())["exposures"][:2]
    return str(scene / "ldr" / "%05d.png"), tuple(float(e) for e in evs)


def _cfg(tmp_path, footage, **kw) -> TrainConfig:
    path, evs = footage
    opts = {"footage": (path,), "out": str(tmp_path / "adapted"), "ev_pattern": evs, "reach": 2}
    opts.update(kw.pop("options", {}))
    base = dict(stage="adapt", steps=2, batch=1, patch=32, runs_dir=str(tmp_path / "runs"), out_name="adapt",
                ship="always", warmup=0, ckpt_every=1, log_every=1, synth_if_missing=False, options=opts)
    return TrainConfig(**(base | kw))


def test_windows_are_a_pure_function_of_the_index(footage):
    path, evs = footage
    ds = FootageWindows((path,), evs, 32, 2, seed=0)
    a, b = ds[7], ds[7]
    assert all((a[k] == b[k]).all() for k in a) and a["full"].shape == (5, 3, 32, 32)
    assert list(a["sub_ev"]) == [a["full_ev"][i] for i in (0, 1, 2, 1, 0)]  # every slot keeps its exposure


def test_adapt_runs_on_the_training_loop_resumes_and_writes_its_weights(tmp_path, footage):
    first = train(_cfg(tmp_path, footage))
    assert first["step"] == 2 and first["val"] == {}
    ckpt = torch.load(tmp_path / "runs" / "adapt" / "ckpt.pt", weights_only=False)
    assert set(ckpt["nets"]) == {"dealthdr", "ema"} and tuple(ckpt["config"]["footage"]) == (footage[0],)
    teacher, student = ckpt["nets"]["ema"], ckpt["nets"]["dealthdr"]
    assert any(not torch.equal(teacher[k], student[k]) for k in student)  # the EMA lags the student

    resumed = train(_cfg(tmp_path, footage, steps=3, resume=True))
    assert resumed["step"] == 3
    hist = torch.load(tmp_path / "runs" / "adapt" / "ckpt.pt", weights_only=False)["history"]["train"]
    assert [s for s, _ in hist] == [1, 2, 3]

    net, entry = W.load("dealthdr-2exp", folder=tmp_path / "adapted")  # sha256 checked
    assert entry.recipe["stages"].startswith("self-supervised adaptation")
    assert "L_ema" in entry.recipe["losses"] and entry.recipe["command"].startswith("vs-hdrvid adapt ")
    assert "AdamW" in entry.recipe["lr_schedule"] and entry.recipe["continued_from"]["sha256"]
    assert entry.deviations == W.read_manifest(W.WEIGHTS_DIR)["dealthdr_2exp.safetensors"].deviations


def test_adapt_refuses_bad_options(tmp_path, footage):
    with pytest.raises(ValueError, match="0 < ema < 1"):
        _cfg(tmp_path, footage, options={"ema": 1.5})
    with pytest.raises(ValueError, match="footage"):
        TrainConfig(stage="adapt", options={"out": "x"})


def test_windows_carry_their_classical_flows_for_networks_that_take_them(footage):
    from vs_hdrvid.train.data import window_classical_flows

    path, evs = footage
    plain, ds = FootageWindows((path,), evs, 32, 2, seed=0), FootageWindows((path,), evs, 32, 2, seed=0, flows=True)
    a, b = plain[3], ds[3]
    assert set(b) - set(a) == {"full_fwd", "full_bwd", "sub_fwd", "sub_bwd"}
    assert all((a[k] == b[k]).all() for k in a)
    assert b["full_fwd"].shape == b["sub_bwd"].shape == (4, 2, 32, 32)
    fwd, bwd = window_classical_flows(b["sub"], b["sub_ev"], 2)
    assert (fwd == b["sub_fwd"]).all() and (bwd == b["sub_bwd"]).all()
    assert (b["sub_fwd"][0] == b["sub_fwd"][3]).all() and (b["sub_fwd"][1] == b["sub_fwd"][2]).all()  # [A, B, t, B, A]
