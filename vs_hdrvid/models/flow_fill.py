"""Flow correction of CoarseNet's ``blend="merge"`` design: confidence-gated filling of the DIS flow.

DIS fails where matching has no evidence: clipped highlights, flat or noisy regions, occlusion
borders. There its forward-backward confidence is low while the flow of the surrounding,
confidently matched pixels is usually right (the region moves with its surroundings). The
classical answer to such holes is normalised convolution (Knutsson and Westin 1993): the flow
averaged with a Gaussian weighted by its confidence. :class:`FlowFill` learns where and how much
to use it: a small dilated CNN at half resolution sees the exposure-matched reference and
neighbour (the neighbour warped by the DIS flow), their difference, the confidence and how each
fill differs from the DIS flow, and predicts per pixel a gate for each fill scale and a free
residual. Its last convolution starts at zero, so the untrained network returns the DIS flow
exactly, and training on the ground-truth flow (EPE) can only start from there.

It is the alternative (``CoarseNetConfig(flow_net="fill")``) to the DIS-initialised SpyNet of
:mod:`vs_hdrvid.models.spynet`: that network must learn a correction from image evidence alone, and
in 3174 CPU steps it moved the EPE by less than 0.001 px; here the known-good operation is one gate
away. Pretrained on the ground-truth flow and then trained end to end inside CoarseNet, it is the
flow network of the shipped 2-exposure CoarseNet (README, the flow).

Convention: flows are ``(N, 2, H, W)`` in pixels, channel 0 = x, backward-warping the neighbour
onto the reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vs_hdrvid.models.blocks import ConfigMixin, pad_to_multiple
from vs_hdrvid.ops.warp import flow_warp

__all__ = ["FlowFillConfig", "FlowFill", "normalized_convolution"]


@dataclass(frozen=True)
class FlowFillConfig(ConfigMixin):
    """Hyperparameters of :class:`FlowFill`.

    Attributes:
        sigmas: Gaussian scales (full-resolution pixels) of the confidence-weighted fills.
        channels: hidden channels of the gate network.
        dilations: dilation of each hidden 3x3 convolution after the first (its context).
        max_residual: the free residual is clamped to +-max_residual pixels.
    """

    sigmas: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
    channels: int = 32
    dilations: tuple[int, ...] = (2, 4, 8)
    max_residual: float = 16.0

    def __post_init__(self) -> None:
        if not self.sigmas or min(self.sigmas) < 2 or self.channels < 1 or self.max_residual <= 0:
            raise ValueError(f"FlowFillConfig: invalid {self} (sigmas at least 2 px)")


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with replicated borders, ``(N, C, H, W)``."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-t * t / (2 * sigma * sigma))
    g = (g / g.sum()).view(1, 1, 1, -1).expand(x.shape[1], 1, 1, -1)
    r_x, r_y = min(r, x.shape[-1] - 1), min(r, x.shape[-2] - 1)  # replicate padding needs pad < size
    x = F.pad(x, (r_x, r_x, 0, 0), mode="replicate")
    x = F.pad(x, (r - r_x, r - r_x, 0, 0), mode="constant") if r_x < r else x
    x = F.conv2d(x, g, groups=x.shape[1])
    x = F.pad(x, (0, 0, r_y, r_y), mode="replicate")
    x = F.pad(x, (0, 0, r - r_y, r - r_y), mode="constant") if r_y < r else x
    return F.conv2d(x, g.transpose(2, 3), groups=x.shape[1])


def normalized_convolution(flow: Tensor, conf: Tensor, sigma: float, eps: float = 1e-4) -> Tensor:
    """The confidence-weighted Gaussian average of ``flow`` (normalised convolution); where no
    pixel nearby is confident it tends to the plain Gaussian average.

    Shape: ``flow (N, 2, H, W)``, ``conf (N, 1, H, W)`` in [0, 1] -> ``(N, 2, H, W)``.
    """
    both = _blur(torch.cat((flow * conf, flow, conf), 1), sigma)
    return (both[:, :2] + eps * both[:, 2:4]) / (both[:, 4:5] + eps)


class FlowFill(nn.Module):
    """``flow + sum_j g_j (fill_j - flow) + r``: DIS flow corrected by gated confidence fills.

    ``fill_j`` is :func:`normalized_convolution` of the flow at ``config.sigmas[j]``; the gates
    ``g_j = tanh(.)`` and the residual ``r`` come from a dilated CNN at half resolution whose last
    convolution starts at zero (the untrained network is the identity on ``flow``). The fills are
    computed at half resolution too (they are smooth) and upsampled bilinearly.

    Shape:
        - ref, nbr: ``(N, 3, H, W)`` gamma LDR frames in [0, 1] brought to one exposure.
        - flow: ``(N, 2, H, W)`` the DIS flow ``ref -> nbr``; conf: ``(N, 1, H, W)`` its confidence.
        - output: ``(N, 2, H, W)``.
    """

    def __init__(self, config: FlowFillConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or FlowFillConfig()
        c, k = cfg.channels, len(cfg.sigmas)
        layers: list[nn.Module] = [nn.Conv2d(9 + 2 * k, c, 3, 1, 1), nn.ReLU(inplace=True)]
        for d in cfg.dilations:
            layers += [nn.Conv2d(c, c, 3, 1, d, dilation=d), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, k + 2, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, ref: Tensor, nbr: Tensor, flow: Tensor, conf: Tensor) -> Tensor:
        n, _, h, w = ref.shape
        if nbr.shape != ref.shape or flow.shape != (n, 2, h, w) or conf.shape != (n, 1, h, w):
            raise ValueError(f"FlowFill: expected ref, nbr (N, 3, H, W), flow (N, 2, H, W), conf (N, 1, H, W); got "
                             f"{tuple(ref.shape)}, {tuple(nbr.shape)}, {tuple(flow.shape)}, {tuple(conf.shape)}")
        k = len(self.config.sigmas)
        warped = flow_warp(nbr, flow)
        x = torch.cat((flow, conf.clamp(0, 1), ref, warped, (ref - warped).abs().mean(1, keepdim=True),
                       ref.amax(1, keepdim=True)), 1)
        x, crop = pad_to_multiple(x, 2, mode="replicate")
        x = F.avg_pool2d(x, 2)  # everything but the final sum runs at half resolution
        flow_h, conf_h = x[:, :2], x[:, 2:3]  # flow still in full-resolution pixels
        fills = torch.stack([normalized_convolution(flow_h, conf_h, s / 2) for s in self.config.sigmas], 1)
        diffs = fills - flow_h[:, None]  # (N, K, 2, h, w)
        out = self.head(self.body(torch.cat((x[:, 2:], (diffs / 8).clamp(-4, 4).flatten(1, 2)), 1)))
        up = F.interpolate(torch.cat((out, fills.flatten(1, 2)), 1), scale_factor=2, mode="bilinear",
                           align_corners=False)
        up = crop(up)
        gates = torch.tanh(up[:, :k, None])  # (N, K, 1, H, W), zero untrained
        residual = up[:, k:k + 2].clamp(-self.config.max_residual, self.config.max_residual)
        fills = up[:, k + 2:].unflatten(1, (k, 2))  # (N, K, 2, H, W)
        return flow + (gates * (fills - flow[:, None])).sum(1) + residual
