"""``vs-hdrvid bench-nets``: the node's path beside the exact fp32 eager one, and tiles."""

import json
import re

from vs_hdrvid.cli import main
from vs_hdrvid.eval.bench_nets import measure, write_random_weights


def test_compare_fp32_ends_with_the_speedup_line(tmp_path, capsys):
    wdir = write_random_weights(tmp_path / "w", periods=(2,), narrow=True)
    out = tmp_path / "bench.json"
    status = main(["bench-nets", "--sizes", "64x48", "--device", "cpu", "--repeats", "1", "--compare-fp32",
                   "--no-compile", "--weights", str(wdir), "--json", str(out)])
    text = capsys.readouterr().out
    assert status == 0, text
    assert re.fullmatch(r"speedup \d+\.\d\dx over fp32 eager \(CoarseNet, 64x48\); CoarseNet\+RefineNet \d+\.\d\dx",
                        text.strip().splitlines()[-1])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["fp32_eager"]["coarse"]["dtype"] == "fp32" and row["fp32_eager"]["coarse"]["path"]["channels_last"] is False
    assert row["coarse"]["path"]["channels_last"] is True and row["speedup"]["coarse"] > 0


def test_measure_runs_tiles(tmp_path):
    wdir = write_random_weights(tmp_path / "w", periods=(2,), narrow=True)
    res = measure("refine", 2, 160, 96, repeats=1, folder=wdir, tile=64)
    assert res["path"]["tile"] == 64 and res["seconds"] > 0
