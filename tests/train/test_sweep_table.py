"""``python -m vs_hdrvid.train.sweep_table``: the table of training runs from their folders."""
from __future__ import annotations

import json

import pytest
import torch

from vs_hdrvid.models.dealthdr import DeAltHDRConfig
from vs_hdrvid.train.sweep_table import main, markdown, run_row


def _run(folder, vals, steps=(10, 20)):
    folder.mkdir(parents=True)
    cfg = DeAltHDRConfig.sized("tiny", flow_source="dis").to_dict()
    torch.save({"net_configs": {"dealthdr": cfg}, "nets": {"dealthdr": {}}}, folder / "ckpt.pt")
    lines = [{"val": v} for v in vals[:1]] + [{"step": s, "loss": 0.1, "wall_s": 6.0 * s, "steps_per_s": 1 / 6}
                                             for s in steps] + [{"val": v} for v in vals[1:]]
    (folder / "log.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    return folder


def _val(step, mu):
    return {"step": step, "val_psnr_mu": mu, "val_psnr_mu_s0": mu - 0.1, "val_psnr_mu_sinf": mu + 0.1, "val_psnr_l": 40.0}


def test_row_and_table_of_a_run(tmp_path, capsys):
    run = _run(tmp_path / "dealthdr-sweep-tiny", [_val(0, 30.0), _val(15, 31.5), _val(21, 31.25)], steps=(10, 20))
    row = run_row(run)
    assert row["steps"] == 21 and row["minutes"] == pytest.approx(2.0) and row["parameters"] == 370791
    assert row["best"]["step"] == 15 and row["start"]["val_psnr_mu"] == 30.0 and row["last"]["step"] == 21
    table = markdown([row]).splitlines()
    assert table[0].startswith("| run | parameters |") and len(table) == 3
    assert table[2] == "| dealthdr-sweep-tiny | 0.37 M | 21 | 2.0 | 0.17 | 31.25 | 31.15 | 31.35 | 40.00 | 31.50 (15) | 30.00 |"
    assert main([str(run)]) == 0 and "dealthdr-sweep-tiny" in capsys.readouterr().out
    assert main([]) == 2


def test_a_run_without_validation_is_an_error(tmp_path):
    run = _run(tmp_path / "r", [])
    with pytest.raises(ValueError, match="no validation"):
        run_row(run)
