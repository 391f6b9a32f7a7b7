"""eval-flow: EPE of DIS and of a DIS-correcting flow network against the generator's flows."""
from __future__ import annotations

import pytest
import torch

from vs_hdrvid.eval.flow_epe import evaluate_flows, flow_methods, markdown
from vs_hdrvid.models.coarsenet import CoarseNet, CoarseNetConfig


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from vs_hdrvid.synth import generate

    out = tmp_path_factory.getbasetemp() / "train-synth"  # shared with the training-data tests
    generate("micro", root=out, progress=False)
    return out


def test_untrained_correction_scores_as_dis_and_dis_beats_no_motion(root):
    net = CoarseNet(CoarseNetConfig.for_exposures(2, "merge", flow_refine=True)).eval()
    res = evaluate_flows(root, "micro", 2, {"zero": None, "dis": None, "net": net}, progress=False)
    every = res["groups"]["all"]
    assert every["net"]["epe"] == pytest.approx(every["dis"]["epe"], abs=1e-6)  # zero-initialised residuals
    assert every["dis"]["epe"] < every["zero"]["epe"]  # the micro preset moves ("large" motion)
    assert every["dis"]["pixels"] > 0 and every["dis"]["pixels_saturated"] <= every["dis"]["pixels"]
    assert set(res["scenes"]) and "motion large" in res["groups"]
    assert "| net |" in markdown(res)


def test_a_moved_flow_network_changes_the_error(root):
    net = CoarseNet(CoarseNetConfig.for_exposures(2, "merge", flow_refine=True)).eval()
    with torch.no_grad():
        for p in net.flownet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    res = evaluate_flows(root, "micro", 2, {"dis": None, "net": net}, progress=False)
    assert res["groups"]["all"]["net"]["epe"] != pytest.approx(res["groups"]["all"]["dis"]["epe"], abs=1e-4)


def test_methods_are_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        flow_methods(["bogus"], 2)
    plain = CoarseNet(CoarseNetConfig.for_exposures(2, "merge", flow_refine=False))
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"nets": {"coarse": plain.state_dict()}, "net_configs": {"coarse": plain.config.to_dict()}}, ckpt)
    with pytest.raises(ValueError, match="no flow network"):  # it uses the DIS flows as they are
        flow_methods([f"ckpt:{ckpt}"], 2)
    with pytest.raises(ValueError, match="3-exposure"):
        flow_methods([f"ckpt:{ckpt}"], 3)
    with pytest.raises(FileNotFoundError):
        evaluate_flows(tmp_path, "micro", 2, {"dis": None})
