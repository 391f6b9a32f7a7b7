"""The weights registry and the manifest's typed entries (vs_hdrvid.weights)."""
from __future__ import annotations

import json

import pytest
import torch

from vs_hdrvid import weights as W
from vs_hdrvid.models.refinenet import RefineNet, RefineNetConfig


def test_registry_names_carry_kind_and_pattern():
    for name, spec in W.REGISTRY.items():
        assert spec.name == name and spec.file == f"{spec.kind}_{spec.exposures}exp.safetensors"
    assert W.REGISTRY["refine-3exp"].train_command == "vs-hdrvid train refine --exposures 3"
    assert W.REGISTRY["dealthdr-2exp"].train_command == "vs-hdrvid train dealthdr"


def test_every_shipped_entry_reads_as_a_typed_record():
    manifest = W.read_manifest(W.WEIGHTS_DIR)
    assert manifest and all(isinstance(e, W.ManifestEntry) and e.version == W.MANIFEST_VERSION
                            for e in manifest.values())


def test_write_then_load_round_trips_and_stores_the_config_once(tmp_path):
    torch.manual_seed(0)
    net = RefineNet(RefineNetConfig(features=16, deformable_groups=4, front_blocks=1, back_blocks=1))
    entry = W.write(net, "refine-2exp", tmp_path, recipe={"training": "none (tests)"})
    loaded, again = W.load("refine-2exp", folder=tmp_path)
    assert again == entry and loaded.config == net.config
    raw = json.loads((tmp_path / W.MANIFEST).read_text())["refine_2exp.safetensors"]
    assert raw["version"] == W.MANIFEST_VERSION and raw["config"] == net.config.to_dict()
    from safetensors import safe_open
    with safe_open(str(tmp_path / "refine_2exp.safetensors"), "pt") as f:
        assert "config" not in (f.metadata() or {})  # the manifest is the one place of the config


@pytest.mark.parametrize("edit,match", [
    (lambda e: e | {"extra": 1}, "unknown keys \\['extra'\\]"),
    (lambda e: {k: v for k, v in e.items() if k != "sha256"}, "missing keys \\['sha256'\\]"),
    (lambda e: e | {"version": W.MANIFEST_VERSION + 1}, "update vs-hdrvid"),
])
def test_a_damaged_or_newer_entry_is_one_clear_error(tmp_path, edit, match):
    torch.manual_seed(0)
    W.write(RefineNet(RefineNetConfig(features=16, deformable_groups=4, front_blocks=1, back_blocks=1)),
            "refine-2exp", tmp_path)
    path = tmp_path / W.MANIFEST
    data = json.loads(path.read_text())
    data["refine_2exp.safetensors"] = edit(data["refine_2exp.safetensors"])
    path.write_text(json.dumps(data))
    with pytest.raises(W.WeightsError, match=match):
        W.load("refine-2exp", folder=tmp_path)


def test_weights_of_another_width_than_the_config_name_both(tmp_path):
    from vs_hdrvid.models.dealthdr import DeAltHDR, DeAltHDRConfig

    W.write(DeAltHDR(DeAltHDRConfig.sized("tiny", flow_source="dis")), "dealthdr-2exp", tmp_path)
    path = tmp_path / W.MANIFEST
    data = json.loads(path.read_text())
    data["dealthdr_2exp.safetensors"]["config"]["dim"] = 16  # the manifest says small, the file is tiny
    path.write_text(json.dumps(data))
    with pytest.raises(W.WeightsError, match=r"another size than its manifest config \(dim 16\).* is \(32,\) in "
                                             r"the file and \(64,\) for the config"):
        W.load("dealthdr-2exp", folder=tmp_path)
