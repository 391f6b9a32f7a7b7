"""``vs-hdrvid bench-chain``: a network chain's fps and what crossed the bridge per frame."""

import json

import pytest

from vs_hdrvid.cli import main
from vs_hdrvid.eval.bench_chain import run_chain


def test_dealthdr_chain_uploads_each_source_frame_once():
    res = run_chain(96, 64, "dealthdr", frames=3, device="cpu")
    assert res["fps"] > 0 and res["frames"] == 3
    # the source frame, and the DIS flow frames the shipped network takes (classical_flow, OpenCV):
    # four offsets, each read at t and, for the reverse direction, at t+o
    assert res["per_frame"]["uploads"] == 9.0
    assert res["per_frame"]["handoffs"] >= 2.0  # align and dealthdr at least (dealthdr's window reuses its cache)


def test_coarse_chain_uploads_the_dis_flows_too(tmp_path, capsys):
    out = tmp_path / "chain.json"
    assert main(["bench-chain", "--sizes", "96x64", "--methods", "coarse", "--frames", "3", "--device", "cpu",
                 "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["per_frame"]["uploads"] == 3.0  # the source frame and the two classical_flow frames (OpenCV DIS)
    assert "uploads/frame 3.00" in capsys.readouterr().out


def test_unknown_chain_is_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        run_chain(96, 64, "merge", frames=3, device="cpu")
    assert main(["bench-chain", "--methods", "nope"]) == 2
