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


def test_breakdown_accounts_for_the_chain(tmp_path, capsys):
    """The instrumented pass: every node of the chain with its parts, and the rest (VapourSynth)."""
    out = tmp_path / "bench.json"
    args = argparse.Namespace(size="64x48,80x48", frames=6, device="cpu", compile=False, json=out, compare=None)
    assert bench.run_cli(args) == 0
    assert "where the time goes" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert set(res["sizes"]) == {"64x48", "80x48"} and res["patterns"] == res["sizes"]["64x48"]["patterns"]
    b = res["sizes"]["80x48"]["patterns"]["3-exposure"]["breakdown"]
    assert set(b["nodes"]) == {"linearize", "align", "merge", "tonemap"}
    assert {"similarity", "pyramid", "luminance"} <= set(b["nodes"]["align"]["parts"])
    assert {"warps", "weights", "emit"} <= set(b["nodes"]["merge"]["parts"])
    for v in b["nodes"].values():
        assert v["cpu_ms"] > 0 and v["other_ms"] >= -1e-6 and sum(v["parts"].values()) <= v["cpu_ms"] + 1e-6
    assert b["cpu_ms"] == pytest.approx(sum(v["cpu_ms"] for v in b["nodes"].values()) + b["vapoursynth_ms"])


def test_compare_with_a_revision(tmp_path):
    """--compare HEAD: the chain of the committed package against this tree, both timed."""
    from vs_hdrvid.eval.bench_compare import compare_chains

    res = compare_chains("HEAD", [(64, 48)], [[-1.5, 1.5]], frames=4, repeats=1)
    r = res["sizes"]["64x48"]["2-exposure"]
    assert len(r["before"]["fps"]) == len(r["after"]["fps"]) == 1 and r["fps_ratio"] > 0 and r["cpu_ratio"] > 0
    with pytest.raises(ValueError, match="no-such-revision"):
        compare_chains("no-such-revision", [(64, 48)], [[-1.5, 1.5]], frames=4, repeats=1)
