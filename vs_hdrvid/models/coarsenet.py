"""CoarseNet: optical-flow alignment and HDR blending in the image space.

Chen et al. (ICCV 2021), section 3.2 and figure 3: a flow network (:class:`~vs_hdrvid.models.
spynet.SpyNet`) aligns the neighbours of the reference frame, and a weight network predicts
per-pixel blending weights for the HDR candidates, merged as a normalised weighted sum. Where
the reference itself is well exposed its own linearisation is kept (the masks of section 3.3,
with the public implementation's stage-1 thresholds 0.4/0.9). Trained with the L1 loss on
mu-law tonemapped HDR (equation 1).

Window layout: ``2n-1`` frames for ``n`` alternating exposures, reference at the centre:
``[t-1, t, t+1]`` for two exposures, ``[t-2, t-1, t, t+1, t+2]`` for three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vs_hdrvid.models.blocks import (
    GAMMA,
    ConfigMixin,
    conv_act,
    hdr_scale,
    ldr_to_hdr,
    pad_to_multiple,
    reexpose,
    well_exposed_mask,
)
from vs_hdrvid.models.spynet import SpyNet, SpyNetConfig

from vs_hdrvid.ops.warp import flow_warp


@dataclass(frozen=True)
class WeightNetConfig(ConfigMixin):
    """Hyperparameters of :class:`WeightNet`.

    Attributes:
        num_images: merge candidates M (5 for two exposures, 9 for three); 6M channels in
            (LDR + HDR of each), 3M weights out.
        encoder: channels of the three stride-2 stages (each stage conv s2 + conv).
        decoder: channels of the three transposed-conv stages back to full resolution.
        batch_norm: BatchNorm after each hidden conv (the public two-exposure setting).
    """

    num_images: int = 5
    encoder: tuple[int, ...] = (64, 128, 256)
    decoder: tuple[int, ...] = (128, 128, 128)
    batch_norm: bool = True

    def __post_init__(self) -> None:
        if self.num_images < 1 or len(self.encoder) != len(self.decoder) or not self.encoder:
            raise ValueError(f"WeightNetConfig: invalid {self}")


class WeightNet(nn.Module):
    """Encoder-decoder predicting a 3-channel blending weight per merge candidate (section 3.2).

    Stride-2 encoder 64-128-256 (two 3x3 convs per stage), transposed-conv decoder back to
    128 channels at full resolution, 3x3 output conv and sigmoid. Inputs are padded
    (reflect) to a multiple of 8 and the weights cropped back.

    Shape:
        - x: ``(B, 6*M, H, W)``: ``[L_1, H_1, ..., L_M, H_M]``, LDRs in [0, 1] and HDRs
          normalised by ``2**min(EV)`` of the window.
        - output: ``(B, M, 3, H, W)`` unnormalised weights in (0, 1).
    """

    def __init__(self, config: WeightNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or WeightNetConfig()
        bn, layers = cfg.batch_norm, []
        prev = 6 * cfg.num_images
        for ch in cfg.encoder:
            layers += [conv_act(prev, ch, stride=2, bn=bn), conv_act(ch, ch, bn=bn)]
            prev = ch
        for i, ch in enumerate(cfg.decoder):
            up: list[nn.Module] = [nn.ConvTranspose2d(prev, ch, 4, 2, 1, bias=False)]
            up += [nn.BatchNorm2d(ch)] if bn else []
            layers.append(nn.Sequential(*up, nn.LeakyReLU(0.1, inplace=True)))
            if i < len(cfg.decoder) - 1:
                layers.append(conv_act(ch, ch, bn=bn))
            prev = ch
        layers.append(nn.Conv2d(prev, 3 * cfg.num_images, 3, 1, 1))
        self.body = nn.Sequential(*layers)
        self.multiple = 2 ** len(cfg.encoder)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        xp, crop = pad_to_multiple(x, self.multiple)
        weights = crop(torch.sigmoid(self.body(xp)))  # (B, 3M, H, W)
        return weights.reshape(b, self.config.num_images, 3, h, w)


def blend_hdr(weights: Tensor, hdrs: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Merge HDR candidates with per-pixel, per-channel weights normalised to sum to one.

    Shape: ``weights, hdrs (B, M, C, H, W)`` -> ``(hdr (B, C, H, W), normalised weights (B, M, C, H, W))``.
    """
    norm = weights / (weights.sum(1, keepdim=True) + eps)
    return (norm * hdrs).sum(1), norm


@dataclass(frozen=True)
class CoarseNetConfig(ConfigMixin):
    """Hyperparameters of :class:`CoarseNet`; build with :meth:`for_exposures`.

    Attributes:
        num_exposures: length of the alternating exposure pattern (2 or 3).
        flow: config of the flow network (``num_triples = num_exposures - 1``).
        weight: config of the weight network (``num_images = 4*num_exposures - 3``).
        keep_low, keep_high: the reference's own linearisation is kept where its largest
            channel is >= keep_low (if a brighter frame exists) and <= keep_high (if a darker
            one exists); binary mask.
        gamma: gamma of the LDR inputs (section 3.1 replaces the CRF by gamma 2.2).
    """

    num_exposures: int = 2
    flow: SpyNetConfig = field(default_factory=SpyNetConfig)
    weight: WeightNetConfig = field(default_factory=WeightNetConfig)
    keep_low: float = 0.4
    keep_high: float = 0.9
    gamma: float = GAMMA

    @classmethod
    def for_exposures(cls, n: int) -> CoarseNetConfig:
        """Default config for ``n`` alternating exposures (batch norm only for two, as published)."""
        return cls(
            num_exposures=n,
            flow=SpyNetConfig(num_triples=n - 1),
            weight=WeightNetConfig(num_images=4 * n - 3, batch_norm=n == 2),
        )

    def __post_init__(self) -> None:
        n = self.num_exposures
        if n not in (2, 3):
            raise ValueError(f"CoarseNetConfig: num_exposures must be 2 or 3, got {n}")
        if self.flow.num_triples != n - 1 or self.weight.num_images != 4 * n - 3:
            raise ValueError(
                f"CoarseNetConfig: {n} exposures need flow.num_triples={n - 1} and "
                f"weight.num_images={4 * n - 3}; use CoarseNetConfig.for_exposures({n})"
            )


class CoarseOutput(NamedTuple):
    """What :class:`CoarseNet` returns (K = T-1 neighbours in time order, M = 2K+1)."""

    hdr: Tensor  # (B, 3, H, W) coarse HDR of the reference, H = L**gamma / 2**EV
    flows: Tensor  # (B, K, 2, H, W) flow from the reference to each neighbour
    warped: Tensor  # (B, K, 3, H, W) neighbour LDRs backward-warped onto the reference
    weights: Tensor  # (B, M, 3, H, W) normalised blending weights, candidates as documented
    mask: Tensor  # (B, 1, H, W) 1 where the reference's own linearisation is kept


class CoarseNet(nn.Module):
    """Flow network + weight network: coarse HDR of the centre frame of an LDR window.

    Per exposure pair, the reference is re-exposed to the pair's exposure and the triple
    ``[N_a, C re-exposed, N_b]`` goes to the flow network (for two exposures
    ``[t-1, t, t+1]``; for three ``[t-2, t, t+1]`` and ``[t-1, t, t+2]``). The weight network
    sees M = 2K+1 candidates, each as its LDR and its normalised HDR: the reference, the K
    warped neighbours and the K unwarped neighbours (time order), i.e. 30 channels in and 5
    three-channel weights (15) out for two exposures, 54 in and 9 x 3 = 27 out for three. The unwarped neighbours give the
    blend a fallback where flow fails (occlusions, saturated regions the flow cannot match).

    Shape:
        - ldrs: ``(B, T, 3, H, W)`` gamma LDR frames in [0, 1], T = 2n-1, reference at T//2.
        - evs: ``(B, T)`` or ``(T,)`` exposure of each frame in stops.
        - output: :class:`CoarseOutput`.
    """

    def __init__(self, config: CoarseNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CoarseNetConfig()
        n = cfg.num_exposures
        self.flownet = SpyNet(cfg.flow)
        self.weightnet = WeightNet(cfg.weight)
        self.window = 2 * n - 1
        self.center = n - 1
        self.pairs = [(j, j + n) for j in range(n - 1)]  # same exposure: (0, 2) or (0, 3), (1, 4)
        flow_order = [i for pair in self.pairs for i in pair]  # SpyNet's output order
        self.neighbours = sorted(flow_order)
        self.flow_perm = [flow_order.index(i) for i in self.neighbours]

    def forward(self, ldrs: Tensor, evs: Tensor) -> CoarseOutput:
        b, t, c, h, w = ldrs.shape
        if t != self.window or c != 3:
            raise ValueError(f"CoarseNet: expected (B, {self.window}, 3, H, W), got {tuple(ldrs.shape)}")
        evs = torch.as_tensor(evs, dtype=ldrs.dtype, device=ldrs.device).expand(b, t)
        gamma, ci = self.config.gamma, self.center
        ref = ldrs[:, ci]  # (B, 3, H, W)

        triples = [
            torch.stack((ldrs[:, a], reexpose(ref, evs[:, ci], evs[:, a], gamma), ldrs[:, bb]), dim=1)
            for a, bb in self.pairs
        ]
        flows = self.flownet(torch.stack(triples, dim=1))  # (B, K, 2, H, W), pair order
        flows = flows[:, self.flow_perm]  # time order
        k = len(self.neighbours)
        nbrs = ldrs[:, self.neighbours]  # (B, K, 3, H, W)
        warped = flow_warp(nbrs.reshape(b * k, c, h, w), flows.reshape(b * k, 2, h, w)).reshape(b, k, c, h, w)

        cand_ldr = torch.cat((ref[:, None], warped, nbrs), dim=1)  # (B, M, 3, H, W)
        cand_ev = torch.cat((evs[:, ci : ci + 1], evs[:, self.neighbours], evs[:, self.neighbours]), dim=1)  # (B, M)
        m = cand_ldr.shape[1]
        cand_hdr = ldr_to_hdr(cand_ldr.reshape(b * m, c, h, w), cand_ev.reshape(-1), gamma).reshape(b, m, c, h, w)
        scale = hdr_scale(evs)[:, None]  # (B, 1, 1, 1, 1)
        net_in = torch.cat((cand_ldr, cand_hdr * scale), dim=2).reshape(b, 6 * m, h, w)

        hdr, weights = blend_hdr(self.weightnet(net_in), cand_hdr)
        mask = well_exposed_mask(ref, evs[:, ci], evs, self.config.keep_low, self.config.keep_high, soft=False)
        hdr = mask * cand_hdr[:, 0] + (1 - mask) * hdr
        return CoarseOutput(hdr=hdr, flows=flows, warped=warped, weights=weights, mask=mask)
