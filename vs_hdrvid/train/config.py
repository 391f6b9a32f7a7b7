"""Training configuration: one dataclass for every stage, with per-stage defaults.

Stages (Chen et al., ICCV 2021, section 5.1, plus a flow pretraining):

=============  ====================================================================  =========
stage          what is trained                                                      default lr
=============  ====================================================================  =========
``spynet``     the flow network inside CoarseNet, on ground-truth flow (EPE)        1e-4
``coarse``     CoarseNet end to end, mu-law L1 (eq. 1); flow net at a lower lr      1e-4
``refine``     RefineNet with CoarseNet frozen: eq. 6 L1 + perceptual substitute    1e-4
``finetune``   CoarseNet and RefineNet together, the refine loss                    2e-5
``dealthdr``   DeAltHDR on the degraded (day/night) scenes: mu-law L1 + 0.5 x       4e-4
               perceptual substitute + flow EPE; AdamW, cosine decay to 1e-7
=============  ====================================================================  =========

The Chen et al. stages use Adam and halve the learning rate every ``lr_halve_every`` steps (the
paper halves every 5 of 10 epochs: by default half the run); ``dealthdr`` uses AdamW
(betas 0.9/0.999) with cosine annealing to ``1e-7`` (DeAltHDR section 5.1).
:meth:`TrainConfig.from_dict` rejects unknown keys.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["STAGES", "STAGE_DEFAULTS", "TrainConfig"]

STAGES = ("spynet", "coarse", "refine", "finetune", "dealthdr")
MIN_LR = 1e-7  # the end of DeAltHDR's cosine schedule

STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "spynet": {"lr": 1e-4},
    "coarse": {"lr": 1e-4},
    "refine": {"lr": 1e-4},
    "finetune": {"lr": 2e-5},
    "dealthdr": {"lr": 4e-4},
}


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in its checkpoint and manifest entry).

    Attributes:
        stage: one of :data:`STAGES`.
        exposures: alternating exposures of the data and networks (2 or 3).
        root, preset, val_preset: synthetic data (``<root>/<preset>``) for training and validation.
        steps: optimiser steps of the run (a resumed run continues to this count).
        max_minutes: stop cleanly after this much wall time of this invocation (0: no limit).
        batch, patch: batch size and square patch side (a multiple of 16 for the flow pyramid).
        lr: base learning rate (``None``: the stage default); Adam with default betas.
        flow_lr_scale: the flow network's learning rate relative to ``lr`` in end-to-end stages.
        lr_halve_every: halve the learning rate every this many steps (0: ``steps // 2``).
        warmup: linear learning-rate warm-up over the first steps of a run (0: none), so the
            first Adam steps of a zero-initialised correction do not throw it far off.
        head_lr_scale: learning rate of the zero-initialised output layer of a ``blend="merge"``
            CoarseNet relative to ``lr`` (its output is added to the classical answer directly).
        perc_weight: weight of the perceptual substitute (:func:`~vs_hdrvid.train.losses.structure_loss`).
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
        model: ``dealthdr`` only: ``small`` (the CPU width, :meth:`DeAltHDRConfig.small`) or
            ``paper`` (the paper's depth with Turtle's width).
        flow_weight: ``dealthdr`` only: weight of the SpyNet's EPE against the ground-truth flows.
        blend: CoarseNet's design (``coarse``/``spynet``/``refine``): ``merge`` (the shipped
            correction of the weight-free merge with DIS flows) or ``paper``
            (:class:`~vs_hdrvid.models.coarsenet.CoarseNetConfig`).
        flow_refine: CoarseNet's flow network corrects the DIS flows (``blend="merge"``; False:
            no flow network, the DIS flows as they are).
        fp32: train on the plain fp32 eager path instead of :class:`~vs_hdrvid.train.fastpath.FastPath`.
        compile: ``torch.compile`` the trained networks (part of the fast path, opt-in).
    """

    stage: str
    exposures: int = 2
    root: str = "data/synth"
    preset: str = "train"
    val_preset: str = "val"
    steps: int = 1000
    max_minutes: float = 0.0
    batch: int = 4
    patch: int = 128
    lr: float | None = None
    flow_lr_scale: float = 0.25
    lr_halve_every: int = 0
    warmup: int = 100
    head_lr_scale: float = 0.5
    perc_weight: float = 0.5
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
    model: str = "small"
    flow_weight: float = 0.01
    blend: str = "merge"
    flow_refine: bool = True
    fp32: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"train: stage must be one of {STAGES}, got {self.stage!r}")
        if self.exposures not in (2, 3):
            raise ValueError(f"train: exposures must be 2 or 3, got {self.exposures}")
        if self.patch % 16 or self.val_patch % 16 or self.patch < 16:
            raise ValueError(f"train: patch and val_patch must be multiples of 16, got {self.patch}, {self.val_patch}")
        if not (self.max_minutes >= 0 and math.isfinite(self.max_minutes)):
            raise ValueError(f"train: the time budget must be a positive number of minutes, got {self.max_minutes}")
        if self.steps < 1 or self.batch < 1:
            raise ValueError(f"train: steps and batch must be positive, got {self.steps}, {self.batch}")
        if self.stage == "dealthdr" and self.exposures != 2:
            raise ValueError("train dealthdr: DeAltHDR is trained for 2-exposure patterns (EV -2/+1)")
        if self.model not in ("small", "paper"):
            raise ValueError(f"train: model must be small or paper, got {self.model!r}")
        if self.blend not in ("merge", "paper"):
            raise ValueError(f"train: blend must be merge or paper, got {self.blend!r}")
        if self.ship not in ("auto", "always", "never"):
            raise ValueError(f"train: ship must be auto, always or never, got {self.ship!r}")
        if self.lr is None:
            self.lr = STAGE_DEFAULTS[self.stage]["lr"]
        if not self.out_name:
            self.out_name = f"{self.stage}-{self.exposures}exp"

    @property
    def halve_every(self) -> int:
        return self.lr_halve_every or max(1, self.steps // 2)

    @property
    def cosine(self) -> bool:
        """DeAltHDR's schedule (AdamW, cosine annealing) rather than Chen et al.'s halving."""
        return self.stage == "dealthdr"

    def lr_at(self, step: int) -> float:
        """Base learning rate at ``step``: ``lr * 0.5 ** (step // halve_every)``, or for
        ``dealthdr`` the cosine from ``lr`` at step 0 to :data:`MIN_LR` at ``steps``."""
        if self.cosine:
            frac = min(step, self.steps) / self.steps
            return MIN_LR + (float(self.lr) - MIN_LR) * 0.5 * (1 + math.cos(math.pi * frac))
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        return warm * float(self.lr) * 0.5 ** (step // self.halve_every)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise ``ValueError`` naming them."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {unknown}; known keys: {sorted(fields)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
