"""What every training stage has: the :class:`Stage` base, its options, and the registry.

A stage is one file of this package: a :class:`Stage` subclass decorated with :func:`register`,
holding everything that is particular to it:

* ``Options``: a dataclass of its own settings (the command line offers each field as
  ``--name``, with the help text of its ``metadata``; ``TrainConfig.options`` holds the instance);
* its networks (``init``), the loss of a training batch and the validation of a batch;
* its learning-rate default and schedule, its data (``datasets``), the manifest text of its loss
  and its deviations from the paper, and what its recipe records beyond the loop's common fields.

The loop in :mod:`vs_hdrvid.train.loop` is the same for every stage.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from vs_hdrvid import weights as W
from vs_hdrvid.models.blocks import ldr_to_hdr

if TYPE_CHECKING:
    from vs_hdrvid.train.config import TrainConfig

__all__ = ["Stage", "StageOptions", "register", "REGISTRY", "load_shipped", "load_into", "weights_dir", "ref_only",
           "CHEN_DATA_DEVIATIONS"]

log = logging.getLogger("vs_hdrvid.train")

#: name -> Stage subclass, filled by :func:`register` as the package's modules are imported.
REGISTRY: dict[str, type[Stage]] = {}

#: Deviations every Chen et al. stage shares.
CHEN_DATA_DEVIATIONS = [
    "Synthetic training data from vs-hdrvid synth (blender-data CC0 panoramas with moving textured layers), "
    "not the 21 HDR videos + Vimeo-90K of Chen et al. 5.1.",
    "VGG16 perceptual loss replaced by multi-scale gradient L1 + (1 - SSIM) in the mu-law domain "
    "(no ImageNet weights); weight given in recipe.perc_weight.",
    "Flow network pretrained on ground-truth flow (EPE) before end-to-end training; the paper trains CoarseNet "
    "end to end only. For three exposures the t->t+-2 flows are composed from one-frame steps.",
    "Iterations instead of epochs; the learning rate halves every lr_halve_every steps (paper: every 5 of 10 epochs).",
]


@dataclass(frozen=True)
class StageOptions:
    """Base of a stage's own settings. A field's ``metadata`` may give ``help`` and ``choices``
    (the command line's) and ``run: True`` for a setting that defines the run: a checkpoint made
    with another value is not resumed."""

    def check(self, cfg: TrainConfig) -> None:
        """Raise ``ValueError`` on settings this stage cannot train with."""

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make ``cls`` the stage ``cls.name``."""
    if cls.name in REGISTRY:
        raise ValueError(f"train: two stages named {cls.name!r}")
    REGISTRY[cls.name] = cls
    return cls


#: The papers ship their networks' last weights; a fine-tune here ships their moving average.
EMA_DEVIATION = ("Validated and shipped: an exponential moving average of the weights (decay {decay:g}, "
                 "train.ema.WeightAverage), not the last weights; a short fine-tune's raw weights swing by more "
                 "than the validation differences that decide what ships.")


def weights_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.weights_dir) if cfg.weights_dir else W.WEIGHTS_DIR


def load_shipped(name: str, cfg: TrainConfig, device: torch.device, folder: Path | None = None
                 ) -> tuple[nn.Module, W.ManifestEntry] | None:
    """The shipped network ``name`` (sha256-checked) and its manifest entry, or None if absent."""
    folder = weights_dir(cfg) if folder is None else folder
    spec = W.REGISTRY[name]
    if not (folder / spec.file).is_file() or spec.file not in W.read_manifest(folder):
        return None
    net, entry = W.load(name, device=device, folder=folder)
    return net.train(), entry


def _config_changes(saved: dict, config: Any) -> str:
    """``"config changed: k a -> b, ..."`` for the fields in which ``config`` differs from the
    ``saved`` config dict (fields the saved dict lacks take their defaults); empty if none."""
    new = config.to_dict()
    try:
        old = type(config).from_dict(saved).to_dict()
    except (TypeError, ValueError):  # a field this code does not know: compare as saved
        old = saved
    diff = [f"{k} {old[k]} -> {new[k]}" for k in new if json.dumps(old.get(k)) != json.dumps(new[k])]
    return "config changed: " + ", ".join(diff) if diff else ""


def load_into(net: nn.Module, path: Path, key: str, previous: dict | None = None,
              upgrade: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None) -> str:
    """Load weights for ``net`` from a ``.safetensors`` file or from a run's ``ckpt.pt`` (its
    ``nets[key]``, or its weight average where the run kept one). A safetensors file listed in its
    folder's manifest must match its sha256; its config may differ from ``net``'s where the tensors
    still fit (a fine-tune into a new design, such as another ``residual_bound``), which the
    provenance string then names. With ``previous`` (a stage's), the file's manifest entry goes
    into ``previous[key]``, so the weights shipped from it record what they continued
    (``continued_from``). ``upgrade`` maps the loaded tensors to ``net``'s design first (a stage's
    conversion of weights of an earlier design).

    Returns:
        a provenance string ``"<path> (sha256 ...)"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"train: --init-from {path} does not exist")
    if path.suffix == ".safetensors":
        entry = W.read_manifest(path.parent).get(path.name)
        digest = W.sha256_of(path)
        if entry is not None and entry.sha256 != digest:
            raise W.WeightsError(f"{path}: sha256 {digest} but the manifest expects {entry.sha256}")
        changed = _config_changes(entry.config, net.config) if entry is not None else ""
        try:
            net.load_state_dict((upgrade or dict)(load_file(str(path))))
        except RuntimeError as e:  # another width or depth: the tensors do not fit
            raise ValueError(f"train: {path} holds a network with config {entry.config if entry else '?'}, whose "
                             f"tensors do not fit {net.config.to_dict()}: {str(e).splitlines()[0]}") from None
        if previous is not None and entry is not None:
            previous[key] = entry
        return f"{path} (sha256 {digest[:16]}{'; ' + changed if changed else ''})"
    state = torch.load(path, map_location="cpu", weights_only=False)
    if key not in state.get("nets", {}):
        raise ValueError(f"train: checkpoint {path} holds {sorted(state.get('nets', {}))}, not {key!r}")
    net.load_state_dict((upgrade or dict)(state["nets"][key]))
    # a run with TrainConfig.ema validated and shipped its average: continue that
    average = {n[len(key) + 1:]: t for n, t in (state.get("ema") or {}).items() if n.startswith(key + ".")}
    if average:
        net.load_state_dict((upgrade or dict)(average), strict=False)
    return f"{path} (step {state.get('step')}{', weight average' if average else ''})"


def ref_only(batch: dict[str, Tensor], center: int) -> Tensor:
    """Linearisation of the reference LDR alone, ``L**2.2 / 2**EV``."""
    return ldr_to_hdr(batch["ldrs"][:, center], batch["evs"][:, center])


class Stage:
    """One kind of training run. ``nets`` (name -> module), ``trained`` (names optimised),
    ``ship_files`` (names written at the end).

    ``previous`` holds the manifest entries of shipped weights a run continued from, so the
    manifest keeps the whole training history of a file; ``init_notes`` says where each network
    started from.
    """

    name: ClassVar[str]
    order: ClassVar[int] = 100  # place in listings
    summary: ClassVar[str] = ""  # one line for the command line's help
    Options: ClassVar[type[StageOptions]] = StageOptions
    lr: ClassVar[float] = 1e-4  # default base learning rate
    schedule: ClassVar[str] = "halve"  # "halve" (Adam, Chen et al.) or "cosine" (AdamW to MIN_LR, DeAltHDR)
    paper_sizes: ClassVar[tuple[int, str]] = (256, "16 coarse / 8 refine")  # patch, batch of the paper
    patch_multiple: ClassVar[int] = 16  # the flow pyramid's
    kind: ClassVar[str] = "coarse"  # data window kind (vs_hdrvid.train.data)
    trained: ClassVar[tuple[str, ...]] = ("coarse",)
    ship_files: ClassVar[tuple[str, ...]] = ()
    metric: ClassVar[str | None] = "val_psnr_mu"  # None: the stage has no validation
    start_metric: ClassVar[str | None] = None  # the validation of what the network corrects, if any
    losses: ClassVar[str] = ""  # the manifest's recipe.losses
    deviations: ClassVar[list[str]] = CHEN_DATA_DEVIATIONS
    flow_scale: float = 1.0  # the flow net's lr relative to the base lr

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg, self.opt, self.device = cfg, cfg.options, device
        self.nets: dict[str, nn.Module] = {}
        self.init_notes: list[str] = []
        self.previous: dict[str, W.ManifestEntry] = {}  # shipped entries continued from
        # whether the networks start as those shipped files compute (not only some of their weights)
        self.starts_as_previous = True

    # -- set-up
    def init(self) -> None:
        """Build (and initialise) the networks; called only when not resuming."""
        raise NotImplementedError

    def network_kind(self, name: str) -> str:
        """The :func:`vs_hdrvid.weights.build_network` kind of ``nets[name]``."""
        return name

    def rebuild(self, configs: dict[str, dict]) -> None:
        """Networks from the configs a checkpoint stored (their weights are loaded after)."""
        self.nets = {name: W.build_network(self.network_kind(name), c) for name, c in configs.items()}

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.nets[n].parameters()), "lr_scale": 1.0, "name": n} for n in self.trained]

    def to(self) -> None:
        for name, net in self.nets.items():
            net.to(self.device)
            net.train(name in self.trained)
            net.requires_grad_(name in self.trained)

    def datasets(self, val: bool = True) -> tuple[Any, ...]:
        """The training and (with ``val``) validation datasets; the classical flows of their
        scenes are computed (``max(1, cfg.workers)`` processes) where not cached yet."""
        from vs_hdrvid.train.data import prepare_classical_flows

        cfg = self.cfg
        out = (self.window_dataset(cfg.preset, train=True),)
        if val:
            out += (self.window_dataset(cfg.val_preset, train=False),)
        if self.classical_flow:
            t0 = time.monotonic()
            done = sum(prepare_classical_flows(ds.dirs, ds.flow_reach, max(1, cfg.workers)) for ds in out)
            if done:
                log.info("train: classical flows of %d scenes computed in %.0f s", done, time.monotonic() - t0)
        return out

    def window_dataset(self, preset: str, train: bool) -> Any:
        """A :class:`~vs_hdrvid.train.data.WindowDataset` of ``preset`` for this stage, synthesised
        first when missing and ``cfg.synth_if_missing``."""
        from vs_hdrvid.train.data import WindowDataset, window_length

        cfg = self.cfg

        def make() -> WindowDataset:
            return WindowDataset(cfg.root, preset, self.kind, cfg.exposures, patch=cfg.patch if train else cfg.val_patch,
                                 classical_flow=self.classical_flow, train=train, seed=cfg.seed,
                                 ref_window=None if train else window_length("refine", cfg.exposures),
                                 val_windows=cfg.val_windows, tone=self.tone, noise=cfg.noise)
        try:
            return make()
        except FileNotFoundError:
            if not cfg.synth_if_missing or (Path(cfg.root) / preset).is_dir():
                raise
        from vs_hdrvid.synth import generate
        log.info("train: %s/%s is missing; synthesising it first", cfg.root, preset)
        generate(preset, root=cfg.root, workers=max(1, cfg.workers))
        return make()

    @property
    def classical_flow(self) -> bool:
        """Whether the batches carry the classical flows (``init_flows``, ``init_conf``)."""
        return False

    @property
    def tone(self) -> bool:
        """Whether training perturbs the reference's tone (Chen et al. 5.1); never for a correction
        of the classical answer (it makes the classical base wrong in training only)."""
        return self.cfg.tone and not self.classical_flow

    # -- per batch
    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-crop values ``(B,)`` by metric name (the first is the stage's metric)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after each optimiser step (an EMA teacher's update, say)."""

    # -- shipping
    def ship_folder(self) -> Path:
        return weights_dir(self.cfg)

    def recipe(self, key: str, digests: dict[str, str]) -> dict[str, Any]:
        """What the manifest's recipe of ``nets[key]`` records beyond the loop's common fields."""
        out: dict[str, Any] = {"losses": self.losses}
        perc = getattr(self.opt, "perc_weight", None)
        if perc is not None:
            out["perc_weight"] = perc
        aug = ["flips, rot90, channel permutation"] + ["per-channel tone perturbation of the reference"] * self.tone \
            + ["linear noise sigma 1e-3 on low exposures of noise-free scenes"] * self.cfg.noise
        out["augmentation"] = ", ".join(aug)
        return out

    def net_deviations(self, key: str, config: dict) -> list[str]:
        """The manifest's deviations of ``nets[key]`` (with stored ``config``)."""
        return list(self.deviations)

    def size_note(self) -> str:
        """What the CPU note of :meth:`run_deviations` adds about the networks' size."""
        return ""

    def run_deviations(self, device: torch.device) -> list[str]:
        """Deviations of this run's sizes from the paper's (patch, batch, iterations) and of its
        weight averaging."""
        cfg, (paper_patch, paper_batch) = self.cfg, self.paper_sizes
        average = [EMA_DEVIATION.format(decay=cfg.ema)] if cfg.ema else []
        if device.type == "cpu":
            return [f"Trained on CPU: {cfg.patch}x{cfg.patch} patches (paper {paper_patch}), batch {cfg.batch} "
                    f"(paper {paper_batch}), far fewer iterations than the paper's epochs{self.size_note()}."] + average
        return ([f"{cfg.patch}x{cfg.patch} patches (paper {paper_patch})."] if cfg.patch != paper_patch else []) + average

    def command_flags(self) -> list[str]:
        """The stage's options as ``vs-hdrvid train`` flags, for the manifest's command."""
        out = []
        for f in self.Options.fields():
            value = getattr(self.opt, f.name)
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                if value != f.default:
                    out.append(flag if value else "--no-" + f.name.replace("_", "-"))
            else:
                out.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
        return out

    def command(self) -> str:
        """The command that continues this run, for the manifest."""
        cfg = self.cfg
        parts = [f"vs-hdrvid train {cfg.stage}", f"--exposures {cfg.exposures}", f"--steps {cfg.steps}",
                 f"--batch {cfg.batch}", f"--patch {cfg.patch}", f"--lr {cfg.lr:g}", f"--preset {cfg.preset}",
                 f"--seed {cfg.seed}"]
        if cfg.max_minutes:
            parts.append(f"--minutes {cfg.max_minutes:g}")
        if cfg.lr_halve_every:
            parts.append(f"--lr-halve-every {cfg.lr_halve_every}")
        if cfg.ema:
            parts.append(f"--ema {cfg.ema:g}")
        return " ".join(parts + self.command_flags())

    def schedule_text(self) -> str:
        from vs_hdrvid.train.config import MIN_LR

        cfg = self.cfg
        average = f"; weights averaged (EMA decay {cfg.ema:g}) for validation and shipping" if cfg.ema else ""
        if self.schedule == "cosine":
            return f"AdamW (0.9, 0.999) lr {cfg.lr:g}, cosine to {MIN_LR:g} over {cfg.steps} steps{average}"
        return f"Adam lr {cfg.lr:g} halved every {cfg.halve_every} steps{average}"
