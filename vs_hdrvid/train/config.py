"""Training configuration: the settings every stage shares, and the stage's own options.

The stages, their options, learning-rate defaults and schedules live in
:mod:`vs_hdrvid.train.stages` (one module each). Chen et al.'s stages use Adam and halve the
learning rate every ``lr_halve_every`` steps (the paper halves every 5 of 10 epochs: by default
half the run); DeAltHDR's (``dealthdr``, ``adapt``) use AdamW (betas 0.9/0.999) with cosine
annealing to ``1e-7`` (DeAltHDR section 5.1). :meth:`TrainConfig.from_dict` takes the flat form
(shared settings and the stage's options side by side, as :meth:`TrainConfig.to_dict` writes it
into checkpoints and manifests) and rejects unknown keys.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["TrainConfig", "MIN_LR"]

MIN_LR = 1e-7  # the end of DeAltHDR's cosine schedule


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in its checkpoint and manifest entry).

    Attributes:
        stage: a registered stage (:func:`vs_hdrvid.train.stages.stage_names`).
        options: the stage's own settings, an instance of its ``Options`` dataclass (a mapping or
            None is turned into one: the stage's defaults, unknown keys rejected).
        exposures: alternating exposures of the data and networks (2 or 3).
        root, preset, val_preset: synthetic data (``<root>/<preset>``) for training and validation.
        steps: optimiser steps of the run (a resumed run continues to this count).
        max_minutes: stop cleanly after this much wall time of this invocation (0: no limit).
        batch, patch: batch size and square patch side (a multiple of the stage's
            ``patch_multiple``: 16 for the flow pyramid).
        lr: base learning rate (``None``: the stage's default).
        lr_halve_every: halve the learning rate every this many steps (0: ``steps // 2``).
        warmup: linear learning-rate warm-up over the first steps of a run (0: none), so the
            first Adam steps of a zero-initialised correction do not throw it far off.
        val_patch, val_windows: side of the fixed validation crops and crops per scene (keep
            them when continuing a run: shipping compares validation results of the same crops).
        val_at_start: validate before the first step of a fresh run (the curve's starting point).
        val_every, ckpt_every, log_every: in steps.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch CPU threads (0: leave torch's default).
        seed: seeds initialisation and the per-sample data generators.
        workers: DataLoader worker processes.
        out_name: run name, ``runs/<out_name>/`` (default ``<stage>-<n>exp``).
        init_from: weights to start from (a ``.safetensors`` or a run's ``ckpt.pt``); empty: the
            shipped weights when present (so a GPU run continues a CPU one), else the stage's
            predecessor; ``none``: random initialisation.
        resume: continue ``runs/<out_name>/ckpt.pt`` (model, optimiser, step, RNG, history).
        tone, noise: tone perturbation of the reference / noise on clean data (section 5.1).
        weights_dir: where shipped weights and MANIFEST.json go (empty: ``vs_hdrvid.weights.WEIGHTS_DIR``).
        runs_dir: where run folders go.
        ship: write the shipped weights at the end: ``auto`` (when there are none yet, or the new
            validation PSNR-mu is at least the shipped one's), ``always`` or ``never``.
        synth_if_missing: generate a missing train/val preset with ``vs-hdrvid synth`` first.
        fp32: train on the plain fp32 eager path instead of :class:`~vs_hdrvid.train.fastpath.FastPath`.
        compile: ``torch.compile`` the trained networks (part of the fast path, opt-in).
        ema: decay of an exponential moving average of the trained networks' weights
            (:class:`~vs_hdrvid.train.ema.WeightAverage`; 0: none). Validation scores, and the
            run ships, the average instead of the last weights.
    """

    stage: str
    options: Any = None
    exposures: int = 2
    root: str = "data/synth"
    preset: str = "train"
    val_preset: str = "val"
    steps: int = 1000
    max_minutes: float = 0.0
    batch: int = 4
    patch: int = 128
    lr: float | None = None
    lr_halve_every: int = 0
    warmup: int = 100
    val_patch: int = 128
    val_windows: int = 3
    val_at_start: bool = True
    val_every: int = 250
    ckpt_every: int = 100
    log_every: int = 10
    device: str = "auto"
    threads: int = 0
    seed: int = 0
    workers: int = 0
    out_name: str = ""
    init_from: str = ""
    resume: bool = False
    tone: bool = True
    noise: bool = True
    weights_dir: str = ""
    runs_dir: str = "runs"
    ship: str = "auto"
    synth_if_missing: bool = True
    fp32: bool = False
    compile: bool = False
    ema: float = 0.0

    def __post_init__(self) -> None:
        from vs_hdrvid.train.stages import stage_class

        cls = stage_class(self.stage)
        self.options = _options(cls, self.options)
        if self.exposures not in (2, 3):
            raise ValueError(f"train: exposures must be 2 or 3, got {self.exposures}")
        m = cls.patch_multiple
        if self.patch % m or self.val_patch % m or self.patch < 16:
            raise ValueError(f"train: patch and val_patch must be multiples of {m}, got {self.patch}, {self.val_patch}")
        if not (self.max_minutes >= 0 and math.isfinite(self.max_minutes)):
            raise ValueError(f"train: the time budget must be a positive number of minutes, got {self.max_minutes}")
        if self.steps < 1 or self.batch < 1:
            raise ValueError(f"train: steps and batch must be positive, got {self.steps}, {self.batch}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"train: ema must be a decay in [0, 1) (0: none), got {self.ema}")
        if self.ship not in ("auto", "always", "never"):
            raise ValueError(f"train: ship must be auto, always or never, got {self.ship!r}")
        self.options.check(self)
        if self.lr is None:
            self.lr = cls.lr
        if not self.out_name:
            self.out_name = f"{self.stage}-{self.exposures}exp"

    @property
    def halve_every(self) -> int:
        return self.lr_halve_every or max(1, self.steps // 2)

    @property
    def cosine(self) -> bool:
        """DeAltHDR's schedule (AdamW, cosine annealing) rather than Chen et al.'s halving."""
        from vs_hdrvid.train.stages import stage_class

        return stage_class(self.stage).schedule == "cosine"

    def lr_at(self, step: int) -> float:
        """Base learning rate at ``step``: ``lr * 0.5 ** (step // halve_every)``, or on the cosine
        schedule from ``lr`` at step 0 to :data:`MIN_LR` at ``steps``."""
        if self.cosine:
            frac = min(step, self.steps) / self.steps
            return MIN_LR + (float(self.lr) - MIN_LR) * 0.5 * (1 + math.cos(math.pi * frac))
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        return warm * float(self.lr) * 0.5 ** (step // self.halve_every)

    def run_identity(self) -> dict[str, Any]:
        """The settings that define a run: a checkpoint made with others is not resumed."""
        out = {k: getattr(self, k) for k in ("stage", "exposures", "batch", "patch")}
        out.update({f.name: getattr(self.options, f.name) for f in self.options.fields() if f.metadata.get("run")})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from the flat form (shared settings and the stage's options side by side);
        unknown keys raise ``ValueError`` naming them."""
        from vs_hdrvid.train.stages import stage_class

        if "stage" not in data:
            raise ValueError("TrainConfig: the stage is missing")
        opt_cls = stage_class(data["stage"]).Options
        fields = {f.name for f in dataclasses.fields(cls)} - {"options"}
        opt_fields = {f.name for f in opt_cls.fields()}
        unknown = sorted(set(data) - fields - opt_fields - {"options"})
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {unknown} for stage {data['stage']!r}; known keys: "
                             f"{sorted(fields | opt_fields)}")
        options = dict(data.get("options") or {}) | {k: v for k, v in data.items() if k in opt_fields}
        return cls(options=options, **{k: v for k, v in data.items() if k in fields})

    def to_dict(self) -> dict[str, Any]:
        """The flat form: shared settings and the stage's options side by side."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        return out | dataclasses.asdict(self.options)


def _options(stage_cls, value: Any):
    """``value`` (None, a mapping or an instance) as an instance of ``stage_cls.Options``."""
    opt_cls = stage_cls.Options
    if isinstance(value, opt_cls):
        return value
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ValueError(f"train {stage_cls.name}: options must be a mapping or {opt_cls.__name__}, got "
                         f"{type(value).__name__}")
    known = {f.name: f for f in opt_cls.fields()}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"train {stage_cls.name}: unknown options {unknown}; known: {sorted(known)}")
    kw = {}
    for name, v in value.items():
        if isinstance(v, list):  # JSON has no tuples
            v = tuple(v)
        choices = known[name].metadata.get("choices")
        if choices and v not in choices:
            raise ValueError(f"train {stage_cls.name}: {name} must be one of {list(choices)}, got {v!r}")
        kw[name] = v
    return opt_cls(**kw)
