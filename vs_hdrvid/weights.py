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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .resources import data_dir

__all__ = ["build_network", "WEIGHTS_DIR", "MANIFEST", "MANIFEST_VERSION", "ManifestEntry", "WeightSpec", "REGISTRY",
           "WeightsError", "sha256_of", "read_manifest", "load", "save", "write", "register_in_manifest"]

# HDRVID_WEIGHTS, else the weights the wheel carries, else weights/ of the source checkout
WEIGHTS_DIR = Path(os.environ.get("HDRVID_WEIGHTS") or data_dir("weights"))
MANIFEST = "MANIFEST.json"
MANIFEST_VERSION = 1  # of ManifestEntry's fields; an entry without a version is of version 1


class WeightsError(RuntimeError):
    """Weights missing, corrupt, or not matching their manifest entry."""


@dataclass(frozen=True)
class WeightSpec:
    """One shipped checkpoint.

    Attributes:
        kind: the network (``coarse``, ``refine``, ``dealthdr``; :func:`build_network`'s kind).
        exposures: the alternating-exposure pattern length it was trained for.
        file: file name inside ``weights/``.
        network: what the file holds, for messages.
    """

    kind: str
    exposures: int
    file: str
    network: str

    @property
    def name(self) -> str:
        """The registry name, ``<kind>-<n>exp``."""
        return f"{self.kind}-{self.exposures}exp"

    @property
    def train_command(self) -> str:
        """The command that (re)makes the file, for messages."""
        return f"vs-hdrvid train {self.kind}" + (f" --exposures {self.exposures}" if self.kind != "dealthdr" else "")

    def build(self, config: dict) -> torch.nn.Module:
        return build_network(self.kind, config)


@dataclass
class ManifestEntry:
    """What ``MANIFEST.json`` records of one weights file: the network and its config (stored here
    only), the file's sha256, its size, how it was trained, what validation measured and where it
    deviates from the paper. Written by :func:`register_in_manifest`, read by :func:`read_manifest`.
    """

    network: str
    config: dict[str, Any]
    sha256: str
    parameters: int
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    deviations: list[str] = field(default_factory=list)
    version: int = MANIFEST_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "manifest entry") -> ManifestEntry:
        names = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(data) - names), sorted(n for n in ("network", "config", "sha256", "parameters")
                                                              if n not in data)
        if unknown or missing:
            raise WeightsError(f"{where}: unknown keys {unknown}, missing keys {missing}; restore it from git")
        entry = cls(**data)
        if entry.version > MANIFEST_VERSION:
            raise WeightsError(f"{where} is of manifest version {entry.version}; this vs-hdrvid reads up to "
                               f"{MANIFEST_VERSION}: update vs-hdrvid")
        return entry

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_network(kind: str, config: dict) -> torch.nn.Module:
    """The network ``kind`` (``coarse``, ``refine``, ``dealthdr`` or ``spynet``) from its stored
    config: the one place networks are built from configs (loading, training, resuming)."""
    if kind == "spynet":
        from .models.spynet import SpyNet, SpyNetConfig
        return SpyNet(SpyNetConfig.from_dict(config))
    if kind == "dealthdr":
        from .models.dealthdr import DeAltHDR, DeAltHDRConfig
        return DeAltHDR(DeAltHDRConfig.from_dict(config))
    if kind == "coarse":
        from .models.coarsenet import CoarseNet, CoarseNetConfig
        return CoarseNet(CoarseNetConfig.from_dict(config))
    if kind == "refine":
        from .models.refinenet import RefineNet, RefineNetConfig
        return RefineNet(RefineNetConfig.from_dict(config))
    raise ValueError(f"unknown network kind {kind!r}")


REGISTRY: dict[str, WeightSpec] = {
    spec.name: spec for spec in
    [WeightSpec(kind, n, f"{kind}_{n}exp.safetensors", f"Chen et al. 2021 {kind}") for kind in ("coarse", "refine")
     for n in (2, 3)] + [WeightSpec("dealthdr", 2, "dealthdr_2exp.safetensors", "DeAltHDR")]
}


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(folder: Path = WEIGHTS_DIR) -> dict[str, ManifestEntry]:
    """The entries of ``folder``'s manifest by file name (empty when there is none)."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path} is not valid JSON ({e}); restore it from git") from None
    return {file: ManifestEntry.from_dict(entry, f"{path}: {file}") for file, entry in data.items()}


def load(name: str, device: torch.device | str = "cpu", folder: Path = WEIGHTS_DIR,
         check_hash: bool = True) -> tuple[torch.nn.Module, ManifestEntry]:
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
        if actual != entry.sha256:
            raise WeightsError(f"{path} is corrupt: sha256 {actual} but the manifest expects "
                               f"{entry.sha256}; restore it from git or retrain with `{spec.train_command}`")
    model = spec.build(entry.config)
    state = load_file(path, device=str(device))
    want = model.state_dict()
    bad = [(k, tuple(v.shape), tuple(want[k].shape)) for k, v in state.items() if k in want and v.shape != want[k].shape]
    if bad:
        k, got, need = bad[0]
        width = f" (dim {entry.config['dim']})" if "dim" in entry.config else ""
        raise WeightsError(f"{path} is of another size than its manifest config{width}: {len(bad)} tensors differ, "
                           f"e.g. {k} is {got} in the file and {need} for the config; retrain with "
                           f"`{spec.train_command}` or restore the matching MANIFEST.json")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{path} does not fit {spec.network}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.to(device).eval(), entry


def save(module: torch.nn.Module, path: str | os.PathLike) -> str:
    """Write ``module``'s weights to ``path`` (safetensors; the config goes into the manifest
    entry, :class:`ManifestEntry`); returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, tmp)
    os.chmod(tmp, 0o644)  # safetensors creates files readable by their owner only
    os.replace(tmp, path)
    return sha256_of(path)


def write(module: torch.nn.Module, name: str, folder: Path = WEIGHTS_DIR, *, recipe: dict | None = None,
          metrics: dict | None = None, deviations: list[str] | None = None) -> ManifestEntry:
    """Write the network ``module`` as the weights ``name`` into ``folder``: the file, then its
    manifest entry (config, sha256, parameter count and the given provenance). Returns the entry."""
    spec = REGISTRY[name]
    digest = save(module, Path(folder) / spec.file)
    entry = ManifestEntry(network=spec.network, config=json.loads(json.dumps(module.config.to_dict())),
                          sha256=digest, parameters=sum(p.numel() for p in module.parameters()),
                          recipe=recipe or {}, metrics=metrics or {}, deviations=deviations or [])
    register_in_manifest(spec.file, entry, Path(folder))
    return entry


def register_in_manifest(file: str, entry: ManifestEntry, folder: Path = WEIGHTS_DIR) -> None:
    """Add or replace ``file``'s entry in the manifest (written atomically)."""
    manifest = {name: e.to_dict() for name, e in read_manifest(folder).items()}
    manifest[file] = entry.to_dict()
    tmp = folder / (MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / MANIFEST)
