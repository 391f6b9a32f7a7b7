"""Training runs on the micro preset: checkpoint, resume, shipped weights and manifest, the CLI."""
from __future__ import annotations

import argparse

import pytest
import torch

from vs_hdrvid import weights as W
from vs_hdrvid.train.cli import add_cli, config_from_args
from vs_hdrvid.train.config import TrainConfig
from vs_hdrvid.train.loop import train
from vs_hdrvid.train.stages.refine import REFINE_LOG_LOSS_DEVIATION, REFINE_RESIDUAL_DEVIATION


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The micro preset (two 64x48 two-exposure scenes of 6 frames), shared by the session."""
    from vs_hdrvid.synth import generate

    out = tmp_path_factory.getbasetemp() / "train-synth"
    generate("micro", root=out, progress=False)  # complete scenes are kept, not regenerated
    return out


@pytest.fixture
def cfg(tmp_path, root):
    def make(**kw) -> TrainConfig:
        return _cfg(tmp_path, root, **kw)
    return make


def _cfg(tmp_path, root, **kw) -> TrainConfig:
    base = dict(stage="coarse", exposures=2, root=str(root), preset="micro", val_preset="micro",
                steps=3, batch=2, patch=32, val_patch=32, val_windows=1, lr_halve_every=2, ckpt_every=1,
                log_every=1, val_every=100, val_at_start=False, init_from="none", runs_dir=str(tmp_path / "runs"),
                weights_dir=str(tmp_path / "weights"), synth_if_missing=False)
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown keys.*'stpes'"):
        TrainConfig.from_dict({"stage": "coarse", "stpes": 10})
    with pytest.raises(ValueError, match="stage"):
        TrainConfig(stage="bogus")
    with pytest.raises(ValueError, match="multiples of 16"):
        TrainConfig(stage="coarse", patch=100)
    assert TrainConfig(stage="finetune").lr == 2e-5 and TrainConfig(stage="coarse").out_name == "coarse-2exp"


def test_lr_halves_on_schedule():
    cfg = TrainConfig(stage="coarse", steps=100, warmup=0)
    assert [cfg.lr_at(s) for s in (0, 49, 50, 100)] == [1e-4, 1e-4, 5e-5, 2.5e-5]
    warm = TrainConfig(stage="coarse", steps=100, warmup=10)
    assert [warm.lr_at(s) for s in (0, 4, 9, 49, 50)] == pytest.approx([1e-5, 5e-5, 1e-4, 1e-4, 5e-5])


def test_cli_options_reach_the_config():
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "refine", "--exposures", "3", "--steps", "7", "--max-minutes", "1.5",
                              "--batch", "2", "--patch", "64", "--device", "cpu", "--resume", "--seed", "5",
                              "--out-name", "x", "--workers", "1", "--init-from", "none"])
    cfg = config_from_args(args)
    assert (cfg.stage, cfg.exposures, cfg.steps, cfg.max_minutes, cfg.batch, cfg.patch) == ("refine", 3, 7, 1.5, 2, 64)
    assert cfg.resume and cfg.seed == 5 and cfg.out_name == "x" and cfg.workers == 1 and cfg.lr == 1e-4


def test_coarse_run_checkpoints_resumes_and_ships(tmp_path, cfg):
    first = train(cfg(ship="always"))
    assert first["step"] == 3 and first["stopped"] == "steps"
    ckpt = torch.load(tmp_path / "runs" / "coarse-2exp" / "ckpt.pt", weights_only=False)
    assert ckpt["step"] == 3 and set(ckpt["nets"]) == {"coarse"} and "optimizer" in ckpt and "rng" in ckpt
    assert (tmp_path / "runs" / "coarse-2exp" / "curve.png").is_file()

    resumed = train(cfg(steps=4, resume=True, ship="always"))
    assert resumed["step"] == 4
    hist = torch.load(tmp_path / "runs" / "coarse-2exp" / "ckpt.pt", weights_only=False)["history"]["train"]
    assert [s for s, _ in hist] == [1, 2, 3, 4]

    # an uninterrupted run of the same seed reaches the same loss at step 4
    straight = train(cfg(steps=4, out_name="straight", ship="never"))
    assert straight["shipped"] == []
    hist2 = torch.load(tmp_path / "runs" / "straight" / "ckpt.pt", weights_only=False)["history"]["train"]
    assert hist2[3][1] == pytest.approx(hist[3][1], rel=1e-4)

    folder = tmp_path / "weights"
    net, entry = W.load("coarse-2exp", folder=folder)  # sha256 checked
    assert type(net).__name__ == "CoarseNet"
    for key in ("network", "config", "sha256", "parameters", "recipe", "metrics", "deviations"):
        assert key in entry.to_dict()
    rec = entry.recipe
    assert rec["steps"] == 4 and rec["batch"] == 2 and rec["patch"] == 32 and rec["resumed_from"]
    assert rec["data"]["preset"] == "micro" and rec["data"]["generator_version"] and rec["data"]["seed"] == 4
    assert entry.parameters == sum(p.numel() for p in net.parameters())
    assert entry.metrics["val_psnr_mu"] > 0 and "val_psnr_mu_reference_only" in entry.metrics
    assert any("perceptual" in d for d in entry.deviations)
    assert (folder / "curves" / "coarse_2exp.png").is_file()
    # a corrupted file is refused
    raw = bytearray((folder / "coarse_2exp.safetensors").read_bytes())
    raw[-1] ^= 1
    (folder / "coarse_2exp.safetensors").write_bytes(bytes(raw))
    with pytest.raises(W.WeightsError, match="sha256"):
        W.load("coarse-2exp", folder=folder)


def test_refine_continues_from_shipped_coarse(tmp_path, cfg):
    train(cfg(steps=1, ckpt_every=100, ship="always"))
    out = train(cfg(stage="refine", steps=1, batch=1, ckpt_every=100, ship="always"))
    manifest = W.read_manifest(tmp_path / "weights")
    entry, coarse_sha = manifest["refine_2exp.safetensors"], manifest["coarse_2exp.safetensors"].sha256
    assert out["step"] == 1 and entry.recipe["coarse_sha256"] == coarse_sha
    assert {"val_psnr_mu", "val_psnr_mu_coarse", "val_psnr_mu_reference_only"} <= set(entry.metrics)
    net, _ = W.load("refine-2exp", folder=tmp_path / "weights")
    assert type(net).__name__ == "RefineNet" and net.config.coarse_residual
    assert {REFINE_RESIDUAL_DEVIATION, REFINE_LOG_LOSS_DEVIATION} <= set(entry.deviations)
    assert "log_mu_l1" in entry.recipe["losses"]
    assert REFINE_RESIDUAL_DEVIATION not in manifest["coarse_2exp.safetensors"].deviations
    # the paper's loss: eq. 6 + the perceptual substitute, without the log-loss deviation
    out = train(cfg(stage="refine", loss="eq6", steps=1, batch=1, ckpt_every=100, ship="always", out_name="eq6"))
    entry = W.read_manifest(tmp_path / "weights")["refine_2exp.safetensors"]
    assert out["step"] == 1 and entry.recipe["losses"].startswith("eq. 6")
    assert REFINE_RESIDUAL_DEVIATION in entry.deviations and REFINE_LOG_LOSS_DEVIATION not in entry.deviations


def test_spynet_stage_trains_the_flow_net_only(tmp_path, cfg):
    out = train(cfg(stage="spynet", steps=1, batch=1))
    assert out["shipped"] == [] and "val_epe" in out["val"]
    ckpt = torch.load(tmp_path / "runs" / "spynet-2exp" / "ckpt.pt", weights_only=False)
    names = {g["name"] for g in ckpt["optimizer"]["param_groups"]}
    assert names == {"flownet"}


def test_each_stage_offers_its_own_options_only():
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    cfg = config_from_args(parser.parse_args(["train", "dealthdr", "--model", "paper", "--flow-weight", "0.1"]))
    assert (cfg.options.model, cfg.options.flow_weight, cfg.options.perc_weight) == ("paper", 0.1, 0.5)
    cfg = config_from_args(parser.parse_args(["train", "refine", "--no-flow-refine"]))
    assert cfg.options.flow_refine is False and cfg.options.blend == "merge"
    assert cfg.run_identity()["flow_refine"] is False
    with pytest.raises(SystemExit):  # a DeAltHDR option is not a CoarseNet one
        parser.parse_args(["train", "coarse", "--model", "paper"])
    flat = TrainConfig.from_dict(cfg.to_dict())
    assert flat == cfg and flat.to_dict() == cfg.to_dict()


def test_a_stage_is_one_registered_class(tmp_path, root):
    """What adding a stage takes: a registered Stage subclass (here a toy that learns a gain on
    the reference); the loop, the command line's stage list and the config know it at once."""
    from dataclasses import dataclass, field

    from vs_hdrvid.models.blocks import ldr_to_hdr
    from vs_hdrvid.ops.metrics import psnr_mu
    from vs_hdrvid.train.stages import stage_names
    from vs_hdrvid.train.stages.base import REGISTRY, Stage, StageOptions, register

    @dataclass(frozen=True)
    class GainConfig:  # every network carries its config (stored in checkpoints and manifests)
        def to_dict(self):
            return {}

    class Gain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config, self.g = GainConfig(), torch.nn.Parameter(torch.zeros(()))

    @dataclass(frozen=True)
    class ToyOptions(StageOptions):
        scale: float = field(default=2.0, metadata={"help": "a toy option"})

    @register
    class ToyStage(Stage):
        name, Options, trained, metric = "toy", ToyOptions, ("gain",), "val_psnr_mu"

        def init(self):
            self.nets["gain"] = Gain()

        def _out(self, batch):
            ref = ldr_to_hdr(batch["ldrs"][:, 1], batch["evs"][:, 1])
            return ref * torch.exp(self.opt.scale * self.nets["gain"].g)

        def loss(self, batch):
            loss = (self._out(batch) - batch["gt"][:, 0]).abs().mean()
            return loss, {"l1": loss.item()}

        def validate(self, batch):
            return {"val_psnr_mu": psnr_mu(self._out(batch), batch["gt"][:, 0], batch["h_sat"])}

    try:
        assert "toy" in stage_names()
        out = train(_cfg(tmp_path, root, stage="toy", scale=1.0, ship="never"))
        assert out["step"] == 3 and "val_psnr_mu" in out["val"]
        assert TrainConfig.from_dict({"stage": "toy", "scale": 3.0}).options.scale == 3.0
    finally:
        REGISTRY.pop("toy")


def test_refine_restarts_its_residual_when_the_coarse_net_changed(tmp_path, cfg):
    """A RefineNet residual learnt over one CoarseNet's output is no start for another's: after the
    coarse net is retrained, refine starts from its zero-initialised residual (the coarse HDR)."""
    train(cfg(steps=1, ckpt_every=100, ship="always"))
    train(cfg(stage="refine", steps=1, batch=1, ckpt_every=100, ship="always"))
    again = W.read_manifest(tmp_path / "weights")["refine_2exp.safetensors"]
    train(cfg(stage="refine", steps=1, batch=1, ckpt_every=100, ship="always", out_name="refine-again", init_from=""))
    same_coarse = W.read_manifest(tmp_path / "weights")["refine_2exp.safetensors"]
    assert same_coarse.recipe["continued_from"]["sha256"] == again.sha256  # same coarse: continued

    train(cfg(steps=2, ckpt_every=100, ship="always", out_name="coarse-again"))  # another CoarseNet
    train(cfg(stage="refine", steps=1, batch=1, ckpt_every=100, ship="always", out_name="refine-new", init_from=""))
    fresh = W.read_manifest(tmp_path / "weights")["refine_2exp.safetensors"]
    coarse = W.read_manifest(tmp_path / "weights")["coarse_2exp.safetensors"]
    assert fresh.recipe["continued_from"] is None and fresh.recipe["coarse_sha256"] == coarse.sha256
    assert not any("RefineNet" in note for note in fresh.recipe["init"])


def test_steps_with_non_finite_loss_are_not_taken(tmp_path, cfg, monkeypatch):
    """A NaN loss (or gradient) leaves the weights and Adam's moments as they were; a run of them stops."""
    from vs_hdrvid.train import loop
    from vs_hdrvid.train.stages.coarse import CoarseStage

    real, calls = CoarseStage.loss, {"n": 0}

    def sometimes_nan(self, batch):
        loss, parts = real(self, batch)
        calls["n"] += 1
        return (loss * torch.nan if calls["n"] % 2 == 0 else loss), parts

    monkeypatch.setattr(CoarseStage, "loss", sometimes_nan)
    out = train(cfg(steps=4))
    assert out["stopped"] == "steps"
    state = torch.load(tmp_path / "runs" / "coarse-2exp" / "ckpt.pt", weights_only=False)
    assert all(torch.isfinite(t).all() for net in state["nets"].values() for t in net.values() if t.is_floating_point())

    monkeypatch.setattr(CoarseStage, "loss", lambda self, batch: (real(self, batch)[0] * torch.nan, {}))
    monkeypatch.setattr(loop, "MAX_SKIPPED_STEPS", 2)
    assert train(cfg(steps=10, runs_dir=str(tmp_path / "runs2")))["stopped"] == "non-finite"


def test_weight_average_follows_the_weights_and_validation_sees_it():
    from vs_hdrvid.train.ema import WeightAverage

    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
    avg = WeightAverage({"n": net}, decay=0.75)
    with torch.no_grad():
        net.weight.fill_(5.0)
    avg.update()  # 0.75 * 1 + 0.25 * 5
    with avg.applied():
        assert torch.allclose(net.weight, torch.full_like(net.weight, 2.0))
    assert torch.allclose(net.weight, torch.full_like(net.weight, 5.0))  # its own weights are back
    with pytest.raises(ValueError, match="decay"):
        WeightAverage({"n": net}, decay=1.0)
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(stage="coarse", ema=1.5)


def test_a_run_with_ema_ships_and_continues_the_average(tmp_path, cfg):
    out = train(cfg(steps=3, ema=0.5, ship="always"))
    ckpt = torch.load(tmp_path / "runs" / "coarse-2exp" / "ckpt.pt", weights_only=False)
    average, raw = ckpt["ema"], ckpt["nets"]["coarse"]
    shipped, _ = W.load("coarse-2exp", folder=tmp_path / "weights")
    state = shipped.state_dict()
    moved = [k for k in average if not torch.equal(average[k], raw[k.removeprefix("coarse.")])]
    assert out["step"] == 3 and moved  # the average lags the weights
    assert all(torch.equal(state[k.removeprefix("coarse.")], average[k]) for k in average)
    # a run that starts from this checkpoint starts from its average
    cont = train(cfg(steps=1, init_from=str(tmp_path / "runs" / "coarse-2exp" / "ckpt.pt"), out_name="cont",
                     lr=0.0, warmup=0, ship="never"))
    start = torch.load(tmp_path / "runs" / "cont" / "ckpt.pt", weights_only=False)["nets"]["coarse"]
    assert cont["step"] == 1 and all(torch.equal(start[k.removeprefix("coarse.")], average[k]) for k in average)
