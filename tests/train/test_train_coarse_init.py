"""A flow-refining CoarseNet run starts from the shipped plain CoarseNet's weight network and the
spynet run's flow network, so it begins where both left off."""
from __future__ import annotations

import pytest
import torch

from vs_hdrvid import weights as W
from vs_hdrvid.models.coarsenet import CoarseNet, CoarseNetConfig
from vs_hdrvid.train.config import TrainConfig
from vs_hdrvid.train.stages import make_stage


def _moved(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("flow_net", ["spynet", "fill"])
def test_flow_refine_run_starts_from_shipped_weightnet_and_spynet_run(tmp_path, flow_net):
    weights, runs = tmp_path / "weights", tmp_path / "runs"
    weights.mkdir()
    plain = _moved(CoarseNet(CoarseNetConfig.for_exposures(2, "merge", flow_refine=False)), 1)
    W.write(plain, "coarse-2exp", weights)
    flow = _moved(CoarseNet(CoarseNetConfig.for_exposures(2, "merge", True, flow_net)), 2)
    (runs / "spynet-2exp").mkdir(parents=True)
    torch.save({"step": 7, "nets": {"coarse": flow.state_dict()}, "net_configs": {"coarse": flow.config.to_dict()}},
               runs / "spynet-2exp" / "ckpt.pt")

    cfg = TrainConfig(stage="coarse", exposures=2, weights_dir=str(weights), runs_dir=str(runs),
                      options={"flow_refine": True, "flow_net": flow_net})
    stage = make_stage(cfg, torch.device("cpu"))
    stage.init()
    net = stage.nets["coarse"]
    assert net.config.flow_refine
    for a, b in zip(net.weightnet.state_dict().values(), plain.weightnet.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(net.flownet.state_dict().values(), flow.flownet.state_dict().values()):
        assert torch.equal(a, b)
    assert "coarse" in stage.previous  # the manifest keeps the history of the weights it continues
    assert len(stage.init_notes) == 2 and "step 7" in stage.init_notes[1]
    assert not stage.starts_as_previous  # so ship=auto does not take its start for the shipped file's figure
