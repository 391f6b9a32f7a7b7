"""Argument checks the ops share (one line at the call site, the message built only on failure)."""
from __future__ import annotations

from torch import Tensor

__all__ = ["check_float", "check_positive"]


def check_float(x: object, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a floating-point tensor."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {getattr(x, 'dtype', type(x).__name__)}")


def check_positive(value: float, name: str) -> None:
    """Raise ``ValueError`` if ``value <= 0``."""
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
