"""Scenes and exposures shared by the merge tests (tests/ops/test_merge*.py)."""
from __future__ import annotations

import torch


def scene(b: int = 1, h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Radiance from 0.01 to ~4 (log-uniform across the width), smooth enough for the 3x3 rejection dilation."""
    g = torch.Generator().manual_seed(seed)
    logf = torch.nn.functional.interpolate(torch.randn(b, 3, 4, 5, generator=g), size=(h, w), mode="bilinear")
    x = torch.linspace(0, 1, w).view(1, 1, 1, w)
    return torch.exp2(-6.5 + 8.5 * x + 0.3 * logf)


def expose(h: torch.Tensor, evs, quant: int | None = None) -> torch.Tensor:
    """Linear frames (B, T, 3, H, W) seen through clipping (and 8/16-bit gamma quantisation)."""
    out = []
    for ev in evs:
        x = (h * 2.0 ** ev).clamp(0, 1)
        if quant:
            x = ((x.pow(1 / 2.2) * quant).round() / quant).pow(2.2)
        out.append(x / 2.0 ** ev)
    return torch.stack(out, 1)
