"""The ``dealthdr`` training stage on the micro preset: branch sampling, schedule, data, shipping, resume."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vs_hdrvid import weights as W
from vs_hdrvid.models.dealthdr import DeAltHDR, DeAltHDRConfig
from vs_hdrvid.train.config import MIN_LR, TrainConfig
from vs_hdrvid.train.data import WindowDataset
from vs_hdrvid.train.loop import train
from vs_hdrvid.train.data import SceneArrays
from vs_hdrvid.train.stages.dealthdr import DEALTHDR_DEVIATIONS, DeAltHDRStage, sample_sensitivity


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The micro preset (one of its recipes is DeAltHDR's ``day``), shared with the other train tests."""
    from vs_hdrvid.synth import generate

    out = tmp_path_factory.getbasetemp() / "train-synth"
    generate("micro", root=out, progress=False)  # complete scenes are kept, not regenerated
    return out


def _cfg(tmp_path, root, **kw) -> TrainConfig:
    base = dict(stage="dealthdr", exposures=2, root=str(root), preset="micro", val_preset="micro", steps=2,
                batch=1, patch=32, val_patch=32, val_windows=1, ckpt_every=1, log_every=1, val_every=100,
                val_at_start=False, init_from="none", runs_dir=str(tmp_path / "runs"),
                weights_dir=str(tmp_path / "weights"), synth_if_missing=False, model="small")
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_sample_sensitivity_branch_frequencies():
    gen = torch.Generator().manual_seed(0)
    draws = [sample_sensitivity(gen) for _ in range(6000)]
    n = len(draws)
    flow = sum(s == 0.0 for s in draws) / n
    attention = sum(math.isinf(s) for s in draws) / n
    low = [s for s in draws if 0.0 < s <= 1.0]
    high = [s for s in draws if 1.0 < s < 100.0]
    assert flow == pytest.approx(0.3, abs=0.025) and attention == pytest.approx(0.3, abs=0.025)
    assert len(low) / n == pytest.approx(0.2, abs=0.025) and len(high) / n == pytest.approx(0.2, abs=0.025)
    assert len(low) + len(high) + round((flow + attention) * n) == n  # nothing else, nothing >= 100
    assert sum(low) / len(low) == pytest.approx(0.5, abs=0.05)  # uniform in (0, 1]
    assert sum(high) / len(high) == pytest.approx(50.5, abs=4.0)  # uniform in (1, 100)
    again = torch.Generator().manual_seed(0)
    assert [sample_sensitivity(again) for _ in range(50)] == draws[:50]


def test_cosine_schedule_and_config_checks():
    cfg = TrainConfig(stage="dealthdr", steps=100)
    assert cfg.lr == 4e-4 and cfg.cosine and not TrainConfig(stage="coarse").cosine
    assert cfg.lr_at(0) == pytest.approx(4e-4)
    assert cfg.lr_at(50) == pytest.approx((4e-4 + MIN_LR) / 2)
    assert cfg.lr_at(100) == pytest.approx(MIN_LR) and cfg.lr_at(1000) == pytest.approx(MIN_LR)
    lrs = [cfg.lr_at(s) for s in range(101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    with pytest.raises(ValueError, match="2-exposure"):
        TrainConfig(stage="dealthdr", exposures=3)
    with pytest.raises(ValueError, match="model"):
        TrainConfig.from_dict({"stage": "dealthdr", "model": "huge"})


def test_dealthdr_windows_use_the_degraded_scenes_only(root):
    ds = WindowDataset(root, "micro", "dealthdr", 2, patch=32, train=True)
    recipes = {json.loads((d / "meta.json").read_text()).get("degradation") for d in ds.dirs}
    assert recipes == {"day"}
    sample = ds[0]
    assert tuple(sample["ldrs"].shape) == (5, 3, 32, 32) and tuple(sample["evs"].shape) == (5,)
    assert tuple(sample["gt"].shape) == (1, 3, 32, 32)
    assert tuple(sample["flows"].shape) == (4, 2, 32, 32) and sample["flow_valid"].shape[0] == 4
    assert sorted(set(float(e) for e in sample["evs"])) == [-2.0, 1.0]
    clean = WindowDataset(root, "micro", "coarse", 2, patch=32, train=True)
    assert set(clean.dirs) - set(ds.dirs)  # the clean recipe is left out of dealthdr windows


def test_dealthdr_windows_carry_the_classical_flows_both_ways(root):
    ds = WindowDataset(root, "micro", "dealthdr", 2, patch=32, train=False, val_windows=1, classical_flow=True)
    assert ds.flow_reach == 2
    item, y, x = ds.fixed[0]
    sample = ds[0]
    assert tuple(sample["init_flows"].shape) == (1, 4, 2, 32, 32) == tuple(sample["init_bwd"].shape)
    flows, _ = SceneArrays(ds.dirs[item.scene]).classical_flows(2)  # offsets -2, -1, 1, 2
    crop = (..., slice(y, y + 32), slice(x, x + 32))
    for j, d in enumerate((-2, -1, 1, 2)):
        assert torch.equal(sample["init_flows"][0, j], torch.from_numpy(flows[item.t, j][crop]))
        assert torch.equal(sample["init_bwd"][0, j], torch.from_numpy(flows[item.t + d, 3 - j][crop]))  # t+d -> t


@pytest.fixture(scope="module")
def runs(tmp_path_factory, root):
    """A 3-step run stopped after its first step (``max_minutes``) and resumed, and the same run
    uninterrupted. Steps are fixed at 3 in both, so the cosine schedules agree."""
    tmp = tmp_path_factory.mktemp("dealthdr-runs")
    first = train(_cfg(tmp, root, steps=3, max_minutes=1e-6))
    resumed = train(_cfg(tmp, root, steps=3, resume=True, ship="never"))
    straight = train(_cfg(tmp, root, steps=3, out_name="straight", ship="never"))
    return tmp, first, resumed, straight


def _log(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_dealthdr_stage_trains_and_ships(runs):
    tmp, first, _, _ = runs
    assert first["step"] == 1 and first["stopped"] == "max_minutes"
    assert [Path(f).name for f in first["shipped"]] == ["dealthdr_2exp.safetensors"]
    steps = _log(tmp / "runs" / "straight")
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all({"mu_l1", "structure", "linear_l1", "s", "attention_ratio"} <= set(r) for r in steps)  # logged anyway
    assert not any("epe" in r for r in steps)  # DIS flows: no flow network, no EPE term
    assert all(0.0 <= r["attention_ratio"] <= 1.0 for r in steps)

    net, entry = W.load("dealthdr-2exp", folder=tmp / "weights")  # sha256 checked
    want = DeAltHDRConfig.small(flow_source="dis", residual_base="bounded_merge", residual_bound=0.05, bound_power=0.5,
                                attention_residual=True)
    assert isinstance(net, DeAltHDR) and net.config == want
    assert net.flownet is None and net.needs_flows
    assert entry.network == "DeAltHDR" and entry.parameters == sum(p.numel() for p in net.parameters())
    rec = entry.recipe
    assert rec["steps"] == 1 and rec["batch"] == 1 and rec["patch"] == 32
    assert "AdamW" in rec["lr_schedule"] and "cosine" in rec["lr_schedule"]
    assert "lin_weight" not in rec["losses"] and "EPE" not in rec["losses"]  # the linear term is off by default
    assert rec["perc_weight"] == 0.5 and rec["lin_weight"] == 0.0 and "flow_weight" not in rec
    assert "30% flow only" in rec["branches"] and "30% attention only" in rec["branches"]
    assert "tone perturbation" not in rec["augmentation"]
    assert rec["data"]["preset"] == "micro" and rec["data"]["exposures"] == 2
    assert entry.deviations[:len(DEALTHDR_DEVIATIONS)] == DEALTHDR_DEVIATIONS
    assert any("'small' size" in d for d in entry.deviations)
    assert any("hv.merge's clipping level" in d for d in entry.deviations)
    assert any("bounded around the base" in d for d in entry.deviations)
    assert any("Flows from DIS" in d for d in entry.deviations) and not any("SpyNet is trained" in d
                                                                             for d in entry.deviations)
    assert {"val_psnr_mu", "val_psnr_mu_s0", "val_psnr_mu_sinf", "val_psnr_mu_reference_only", "val_psnr_mu_merge",
            "val_psnr_l", "val_attention_ratio_s15"} <= set(entry.metrics)
    assert "--model small" in json.dumps(entry.to_dict())


def test_auto_ship_keeps_weights_validated_on_other_crops(runs, root):
    """``ship="auto"`` compares validation figures only on the same crops: a run validated on
    others (here more crops per scene) leaves the shipped weights as they are. With a vanishing
    learning rate the run stays the merge it starts from, which would otherwise let it ship."""
    tmp = runs[0]
    before = (tmp / "weights" / "dealthdr_2exp.safetensors").read_bytes()
    out = train(_cfg(tmp, root, steps=1, lr=1e-30, val_windows=2, ship="auto", out_name="other-crops"))
    assert out["val"]["val_psnr_mu"] == out["val"]["val_psnr_mu_merge"]
    assert out["shipped"] == [] and (tmp / "weights" / "dealthdr_2exp.safetensors").read_bytes() == before


@pytest.mark.parametrize("lr, shipped_figure", [(1e-30, 1e3), (3e-2, -1e3)])
def test_auto_ship_judges_against_the_start_validation_of_the_shipped_file(tmp_path, runs, root, lr, shipped_figure):
    """A run from the shipped file is judged against its own validation of that file at step 0, not
    the figure in the manifest, which may come from other crops of the same preset name (an old
    entry has no crops digest): it ships exactly when it is not below its start, whether the
    manifest's figure is unbeatable (a vanishing step holds the start) or unreachably low (a large
    step makes it worse)."""
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(runs[0] / "weights", weights)
    manifest = json.loads((weights / "MANIFEST.json").read_text())
    entry = manifest["dealthdr_2exp.safetensors"]
    entry["metrics"]["val_psnr_mu"] = shipped_figure
    entry["metrics"]["val_protocol"].pop("crops_sha256", None)
    (weights / "MANIFEST.json").write_text(json.dumps(manifest))
    before = (weights / "dealthdr_2exp.safetensors").read_bytes()
    out = train(_cfg(tmp_path, root, steps=2, lr=lr, init_from="", val_at_start=True, ship="auto",
                     runs_dir=str(tmp_path / "runs"), weights_dir=str(weights), out_name="judged"))
    start = json.loads((tmp_path / "runs" / "judged" / "log.jsonl").read_text().splitlines()[0])["val"]
    assert start["step"] == 0
    held = out["val"]["val_psnr_mu"] >= start["val_psnr_mu"]
    if lr < 1e-20:
        assert out["val"]["val_psnr_mu"] == pytest.approx(start["val_psnr_mu"], abs=1e-3)
    else:
        assert not held  # the large step made it worse
    if held:
        assert out["shipped"]
        assert W.read_manifest(weights)["dealthdr_2exp.safetensors"].metrics["val_protocol"]["crops_sha256"]
    else:
        assert out["shipped"] == [] and (weights / "dealthdr_2exp.safetensors").read_bytes() == before


def test_losses_and_deviations_follow_the_options():
    def stage(**opts):
        return DeAltHDRStage(TrainConfig.from_dict({"stage": "dealthdr", **opts}), torch.device("cpu"))

    lin, paper = stage(lin_weight=1.0), stage(flow_source="spynet")
    assert "lin_weight x L1" in lin.losses and "EPE" not in lin.losses
    dis_cfg = DeAltHDRConfig.small(flow_source="dis", residual_base="tuned_merge").to_dict()
    assert any("clip(H / H_sat" in d for d in lin.net_deviations("dealthdr", dis_cfg))
    assert "EPE" in paper.losses and "lin_weight" not in paper.losses
    devs = paper.net_deviations("dealthdr", DeAltHDRConfig.small().to_dict())
    assert any("SpyNet is trained" in d for d in devs) and not any("Flows from DIS" in d for d in devs)
    assert not any("bounded around the base" in d for d in devs)  # residual_bound 0
    assert paper.recipe("dealthdr", {})["flow_weight"] == 0.01 and not paper.classical_flow and lin.classical_flow


def test_dealthdr_resume_continues_history_schedule_and_optimiser(runs):
    tmp, _, resumed, _ = runs
    run = tmp / "runs" / "dealthdr-2exp"
    assert resumed["step"] == 3 and resumed["shipped"] == []
    ckpt = torch.load(run / "ckpt.pt", weights_only=False)
    assert [s for s, _ in ckpt["history"]["train"]] == [1, 2, 3]
    assert set(ckpt["nets"]) == {"dealthdr"} and ckpt["net_configs"]["dealthdr"] == DeAltHDRConfig.small(
        flow_source="dis", residual_base="bounded_merge", residual_bound=0.05, bound_power=0.5,
        attention_residual=True).to_dict()
    group = ckpt["optimizer"]["param_groups"][0]
    assert group["betas"] == (0.9, 0.999) and group["weight_decay"] == 0.01  # AdamW's default decay (Adam: 0)
    lrs = [r["lr"] for r in _log(run)]
    assert lrs == pytest.approx([r["lr"] for r in _log(tmp / "runs" / "straight")])
    assert lrs == pytest.approx([TrainConfig(stage="dealthdr", steps=3).lr_at(s) for s in range(3)])


def test_dealthdr_resume_draws_the_same_branches_as_an_uninterrupted_run(runs):
    tmp = runs[0]
    resumed, straight = _log(tmp / "runs" / "dealthdr-2exp"), _log(tmp / "runs" / "straight")
    assert [r["s"] for r in resumed] == [r["s"] for r in straight]
    assert resumed[-1]["loss"] == pytest.approx(straight[-1]["loss"], rel=1e-4)


def test_dealthdr_stage_continues_shipped_weights_of_the_same_width(tmp_path, root):
    train(_cfg(tmp_path, root, steps=1))
    sha = W.read_manifest(tmp_path / "weights")["dealthdr_2exp.safetensors"].sha256
    out = train(_cfg(tmp_path, root, steps=1, init_from="", out_name="again", ship="always"))
    entry = W.read_manifest(tmp_path / "weights")["dealthdr_2exp.safetensors"]
    assert out["shipped"] and entry.sha256 != sha
    ckpt = torch.load(tmp_path / "runs" / "again" / "ckpt.pt", weights_only=False)
    assert any("(shipped)" in note for note in ckpt["init"])


def test_init_from_weights_of_another_design_that_fits_and_of_another_width(tmp_path, root):
    """``--init-from`` the shipped file into a new design whose tensors fit (another residual_bound):
    loaded, the change named in the run's provenance; into another width: a clear error."""
    train(_cfg(tmp_path, root, steps=1, residual_bound=0.0))
    shipped = tmp_path / "weights" / "dealthdr_2exp.safetensors"
    sha = W.read_manifest(shipped.parent)[shipped.name].sha256
    train(_cfg(tmp_path, root, steps=1, init_from=str(shipped), out_name="bounded", ship="always",
               weights_dir=str(tmp_path / "bounded-weights")))
    ckpt = torch.load(tmp_path / "runs" / "bounded" / "ckpt.pt", weights_only=False)
    assert any("config changed: residual_bound 0.0 -> 0.05" in note for note in ckpt["init"])
    entry = W.read_manifest(tmp_path / "bounded-weights")[shipped.name]
    assert entry.config["residual_bound"] == 0.05 and entry.recipe["continued_from"]["sha256"] == sha
    with pytest.raises(ValueError, match="do not fit"):
        train(_cfg(tmp_path, root, steps=1, init_from=str(shipped), out_name="wider", model="medium"))


def test_attention_lr_scale_puts_the_fgma_parameters_in_their_own_group():
    stage = DeAltHDRStage(TrainConfig.from_dict({"stage": "dealthdr", "init_from": "none",
                                                 "attention_lr_scale": 10.0}), torch.device("cpu"))
    stage.init()
    net = stage.nets["dealthdr"]
    rest, att = stage.param_groups()
    assert (rest["lr_scale"], att["lr_scale"]) == (1.0, 10.0)
    names = {id(p): n for n, p in net.named_parameters()}
    assert att["params"] and all(".fgma." in names[id(p)] for p in att["params"])
    assert any(names[id(p)].endswith("proj_o.weight") for p in att["params"])  # the residual design's O
    assert len(rest["params"]) + len(att["params"]) == len(list(net.parameters()))
    assert stage.recipe("dealthdr", {})["attention_lr_scale"] == 10.0


def test_eq8_run_does_not_load_residual_design_weights(tmp_path, root):
    """Shipped weights of FGMA's residual design cannot be converted back to eq. 8's exactly: a run
    of eq. 8's design (--no-attention-residual) starts from zero instead of failing to load them."""
    train(_cfg(tmp_path, root, steps=1))
    assert W.read_manifest(tmp_path / "weights")["dealthdr_2exp.safetensors"].config["attention_residual"]
    out = train(_cfg(tmp_path, root, steps=1, init_from="", out_name="eq8", attention_residual=False))
    ckpt = torch.load(tmp_path / "runs" / "eq8" / "ckpt.pt", weights_only=False)
    assert not any("(shipped)" in note for note in ckpt["init"]) and out["step"] == 1
