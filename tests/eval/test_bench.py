"""`vs-hdrvid bench` at a tiny size: the figures it reports exist and the transfer counts hold."""
import argparse
import json

import pytest
import torch

from vs_hdrvid.eval import bench


def test_bridge_cost_reports_both_directions():
    cost = bench.bridge_cost(64, 48, torch.device("cpu"), repeats=2)
    assert set(cost) == {"frame_to_tensor_ms", "tensor_to_frame_ms", "round_trip_ms"}
    assert cost["round_trip_ms"] == pytest.approx(cost["frame_to_tensor_ms"] + cost["tensor_to_frame_ms"])


def test_run_cli_small(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = argparse.Namespace(size="64x48", frames=6, device="cpu", compile=False, json=out)
    assert bench.run_cli(args) == 0
    text = capsys.readouterr().out
    assert "bridge: frame->tensor" in text and "load average" in text
    res = json.loads(out.read_text())
    assert len(res["load_average"]) == 2
    faults = res["allocator_faults"]
    assert faults is None or (set(faults) == {"default", "tuned"} and "allocator: a second 200 MB fill" in text)
    for pat in ("2-exposure", "3-exposure"):
        r = res["patterns"][pat]
        assert r["chain_fps"] > 0 and set(r["node_fps"]) == {"linearize", "align", "merge", "tonemap_pq"}
        per = r["per_output_frame"]
        assert 1 <= per["uploads"] < 1.5  # each source frame once, plus the window's ends
        assert per["downloads"] == pytest.approx(3.0, abs=0.5)  # linearize, merge, tonemap make pixels
