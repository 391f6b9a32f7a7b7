"""Trained weights: an explicit registry, sha256-checked loading, and the provenance manifest.

Each entry names a safetensors file in ``weights/`` (inside the package when installed from a wheel:
:mod:`vs_hdrvid.resources`) and the network that reads it. The file's
sha256, network config, training recipe and measured quality live in ``weights/MANIFEST.json``
(written by ``vs-hdrvid train``); loading refuses a file whose hash does not match it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from .resources import data_dir

__all__ = ["build_network", "WEIGHTS_DIR", "MANIFEST", "WeightSpec", "REGISTRY", "WeightsError", "sha256_of",
           "read_manifest", "load", "save", "register_in_manifest"]

# HDRVID_WEIGHTS, else the weights the wheel carries, else weights/ of the source checkout
WEIGHTS_DIR = Path(os.environ.get("HDRVID_WEIGHTS") or data_dir("weights"))
MANIFEST = "MANIFEST.json"


class WeightsError(RuntimeError):
    """Weights missing, corrupt, or not matching their manifest entry."""


@dataclass(frozen=True)
class WeightSpec:
    """One shipped checkpoint.

    Attributes:
        file: file name inside ``weights/``.
        build: ``build(config_dict) -> nn.Module`` constructing the network from its stored config.
        network: what the file holds, for messages.
        train_command: the command that (re)makes it, for messages.
    """

    file: str
    build: Callable[[dict], torch.nn.Module]
    network: str
    train_command: str


def build_network(kind: str, config: dict) -> torch.nn.Module:
    """The network ``kind`` (``coarse``, ``refine``, ``dealthdr`` or ``spynet``) from its stored
    config: the one place networks are built from configs (loading, training, resuming)."""
    return _builder(kind)(config)


def _builder(kind: str) -> Callable[[dict], torch.nn.Module]:
    def build(cfg: dict) -> torch.nn.Module:
        if kind == "spynet":
            from .models.spynet import SpyNet, SpyNetConfig
            return SpyNet(SpyNetConfig.from_dict(cfg))
        if kind == "dealthdr":
            from .models.dealthdr import DeAltHDR, DeAltHDRConfig
            return DeAltHDR(DeAltHDRConfig.from_dict(cfg))
        if kind == "coarse":
            from .models.coarsenet import CoarseNet, CoarseNetConfig
            return CoarseNet(CoarseNetConfig.from_dict(cfg))
        from .models.refinenet import RefineNet, RefineNetConfig
        return RefineNet(RefineNetConfig.from_dict(cfg))
    return build


REGISTRY: dict[str, WeightSpec] = {
    f"{kind}-{n}exp": WeightSpec(f"{kind}_{n}exp.safetensors", _builder(kind), f"Chen et al. 2021 {kind}",
                                 f"vs-hdrvid train {kind} --exposures {n}")
    for kind in ("coarse", "refine") for n in (2, 3)
}
REGISTRY["dealthdr-2exp"] = WeightSpec("dealthdr_2exp.safetensors", _builder("dealthdr"), "DeAltHDR",
                                       "vs-hdrvid train dealthdr")


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(folder: Path = WEIGHTS_DIR) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path} is not valid JSON ({e}); restore it from git") from None


def load(name: str, device: torch.device | str = "cpu", folder: Path = WEIGHTS_DIR,
         check_hash: bool = True) -> tuple[torch.nn.Module, dict]:
    """Build the network ``name`` and load its checked weights.

    Returns:
        the module in eval mode on ``device``, and its manifest entry.

    Raises:
        WeightsError: unknown name, file missing, no manifest entry, or sha256 mismatch; the message
            names the file, the hashes and the command that makes the weights.
    """
    if name not in REGISTRY:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(sorted(REGISTRY))}")
    spec = REGISTRY[name]
    path = folder / spec.file
    entry = read_manifest(folder).get(spec.file)
    if not path.is_file():
        raise WeightsError(f"weights file {path} is missing; train it with `{spec.train_command}`")
    if entry is None:
        raise WeightsError(f"{path} has no entry in {folder / MANIFEST}; retrain with `{spec.train_command}`")
    if check_hash:
        actual = sha256_of(path)
        if actual != entry["sha256"]:
            raise WeightsError(f"{path} is corrupt: sha256 {actual} but the manifest expects "
                               f"{entry['sha256']}; restore it from git or retrain with `{spec.train_command}`")
    model = spec.build(entry["config"])
    state = load_file(path, device=str(device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{path} does not fit {spec.network}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.to(device).eval(), entry


def save(module: torch.nn.Module, path: str | os.PathLike, config: dict) -> str:
    """Write ``module``'s weights to ``path`` (safetensors, config in the metadata); returns sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, tmp, metadata={"config": json.dumps(config)})
    os.chmod(tmp, 0o644)  # safetensors creates files readable by their owner only
    os.replace(tmp, path)
    return sha256_of(path)


def register_in_manifest(file: str, entry: dict, folder: Path = WEIGHTS_DIR) -> None:
    """Add or replace ``file``'s entry in the manifest (written atomically)."""
    manifest = read_manifest(folder)
    manifest[file] = entry
    tmp = folder / (MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / MANIFEST)
