"""Row bands: how the CPU paths split a frame so that chains of passes stay in cache."""
from __future__ import annotations

import torch

__all__ = ["BAND_PIXELS", "row_bands"]

BAND_PIXELS = 1 << 18  # about 1 MB per float32 plane: a band's passes stay in cache


def row_bands(height: int, width: int, device: torch.device, pixels: int = BAND_PIXELS) -> list[slice]:
    """Row ranges of about ``pixels`` pixels each for pointwise work done band by band on CPU.

    A chain of in-place passes over a 1080p frame streams every plane through memory once per
    pass; over a band of ~256 K pixels the band stays in cache between passes, and its temporaries
    are small enough to be recycled by the allocator instead of being page-faulted in afresh. On
    CUDA (one kernel per pass either way) the whole frame is one band.
    """
    if device.type != "cpu":
        return [slice(0, height)]
    rows = max(1, pixels // max(width, 1))
    return [slice(r, min(height, r + rows)) for r in range(0, height, rows)]
