"""The training stages: one module each, registered by name (see :mod:`.base`).

========  ==========================================================================
stage     what is trained
========  ==========================================================================
spynet    CoarseNet's flow network on ground-truth flow (EPE)
coarse    CoarseNet end to end, mu-law L1 (Chen et al. eq. 1)
refine    RefineNet with the shipped CoarseNet frozen (eq. 6 + perceptual substitute)
finetune  CoarseNet and RefineNet together, the refine loss
dealthdr  DeAltHDR on the degraded day/night scenes (mu-law L1, perceptual, flow EPE)
adapt     DeAltHDR on unlabeled footage, self-supervised (DeAltHDR Algorithm 1)
========  ==========================================================================

Adding a stage is adding a module here that defines a registered :class:`~.base.Stage`; every
module of this package is imported when the package is.
"""
from __future__ import annotations

import importlib
import pkgutil

from vs_hdrvid.train.stages.base import REGISTRY, Stage, StageOptions

__all__ = ["Stage", "StageOptions", "stage_class", "stage_names", "make_stage"]

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")


def stage_names() -> tuple[str, ...]:
    return tuple(sorted(REGISTRY, key=lambda n: (REGISTRY[n].order, n)))


def stage_class(name: str) -> type[Stage]:
    """The registered stage ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"train: stage must be one of {stage_names()}, got {name!r}") from None


def make_stage(cfg, device) -> Stage:
    return stage_class(cfg.stage)(cfg, device)
