"""Flow network of CoarseNet: a SpyNet pyramid over exposure-matched frame triples.

Chen et al. (ICCV 2021), section 3.2 and its supplement: the flow network follows
Kalantari and Ramamoorthi (2019). The reference frame is first re-exposed to its neighbours'
exposure (``blocks.reexpose``); one triple ``[N_a, C re-exposed, N_b]`` of two neighbours that
share an exposure and the reference is stacked on channels (9 channels) and a 5-level pyramid
predicts both flows (4 channels) coarse to fine. Each level is a stack of 5x5 convolutions
(100-50-25 channels, ReLU) predicting the residual of the upsampled flow of the level below,
with the neighbours backward-warped by that flow first. Three exposures use two triples
(18 channels in, 4 flows out).

Convention: flows are ``(B, 2, H, W)`` in pixels, channel 0 = x; the flow "from C to N"
backward-warps N onto C.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vs_hdrvid.models.blocks import ConfigMixin, pad_to_multiple
from vs_hdrvid.ops.warp import flow_warp, resize_flow


@dataclass(frozen=True)
class SpyNetConfig(ConfigMixin):
    """Hyperparameters of :class:`SpyNet`.

    Attributes:
        num_triples: frame triples estimated jointly (1 for two exposures, 2 for three).
        levels: pyramid levels; inputs are padded to a multiple of ``2**(levels-1)``.
        channels: hidden channels of each level's convolution stack.
        kernel_size: kernel of those convolutions.
        max_flow: final flows are clamped to +-max_flow pixels (0 disables); with ``refine_init``
            the correction is clamped instead.
        refine_init: correct a given initial flow (the classical DIS flow) instead of estimating
            from zero; each level's last convolution starts at zero, so an untrained network
            returns the initial flow exactly. A deviation from the paper (see :class:`SpyNet`).
    """

    num_triples: int = 1
    levels: int = 5
    channels: tuple[int, ...] = (100, 50, 25)
    kernel_size: int = 5
    max_flow: float = 200.0
    refine_init: bool = False

    def __post_init__(self) -> None:
        if self.num_triples < 1 or self.levels < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"SpyNetConfig: invalid {self}")


class SpyNet(nn.Module):
    """Coarse-to-fine flow from the reference of each triple to its two neighbours.

    With ``config.refine_init`` (this project's deviation, so that a CPU training budget starts
    from the classical answer rather than from nothing) the network corrects ``init``: the
    initial flow is average-pooled into the pyramid (vectors halved per level), each level warps
    the neighbours by ``init + correction`` and adds its output to the correction, and the result
    is ``init + correction`` at full resolution. The zero-initialised last convolutions make the
    untrained network the identity on ``init``.

    Args:
        config: :class:`SpyNetConfig`.

    Shape:
        - triples: ``(B, G, 3, 3, H, W)``: G triples ``[N_a, C, N_b]`` of RGB LDR frames in
          [0, 1], where C is the reference re-exposed to the exposure of N_a and N_b.
        - init: ``(B, 2*G, 2, H, W)`` initial flows in the output order (``refine_init`` only).
        - output: ``(B, 2*G, 2, H, W)``: flows ``[C->N_a, C->N_b]`` for each triple in turn.
    """

    def __init__(self, config: SpyNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or SpyNetConfig()
        c_in, c_out, k = 9 * cfg.num_triples, 4 * cfg.num_triples, cfg.kernel_size
        self.basic = nn.ModuleList()
        for _ in range(cfg.levels):
            layers: list[nn.Module] = []
            prev = c_in
            for ch in cfg.channels:
                layers += [nn.Conv2d(prev, ch, k, 1, k // 2), nn.ReLU(inplace=True)]
                prev = ch
            layers.append(nn.Conv2d(prev, c_out, k, 1, k // 2))
            if cfg.refine_init:
                nn.init.zeros_(layers[-1].weight)
                nn.init.zeros_(layers[-1].bias)
            self.basic.append(nn.Sequential(*layers))

    def forward(self, triples: Tensor, init: Tensor | None = None) -> Tensor:
        b, g, three, c, h, w = triples.shape
        if g != self.config.num_triples or three != 3:
            raise ValueError(f"SpyNet: expected (B, {self.config.num_triples}, 3, C, H, W), got {tuple(triples.shape)}")
        if self.config.refine_init:
            if init is None or init.shape != (b, 2 * g, 2, h, w):
                got = None if init is None else tuple(init.shape)
                raise ValueError(f"SpyNet(refine_init): init must be ({b}, {2 * g}, 2, {h}, {w}), got {got}")
            return self._refine(triples, init)
        x, crop = pad_to_multiple(triples.reshape(b, g * 3 * c, h, w), 2 ** (self.config.levels - 1))
        pyramid = [x]  # finest last
        for _ in range(self.config.levels - 1):
            pyramid.insert(0, F.avg_pool2d(pyramid[0], 2))

        flow = x.new_zeros(b, g * 4, *pyramid[0].shape[-2:])  # (B, 4G, h0, w0)
        for level, (module, img) in enumerate(zip(self.basic, pyramid)):
            hl, wl = img.shape[-2:]
            frames = img.reshape(b, g, 3, c, hl, wl)
            if level > 0:  # upsample the flow of the level below (doubling it), warp the neighbours
                flow = resize_flow(flow.reshape(b * g * 2, 2, *flow.shape[-2:]), (hl, wl)).reshape(b, g * 4, hl, wl)
                nbrs = frames[:, :, (0, 2)].reshape(b * g * 2, c, hl, wl)  # (B*G*2, C, h, w)
                nbrs = flow_warp(nbrs, flow.reshape(b * g * 2, 2, hl, wl))
                nbrs = nbrs.reshape(b, g, 2, c, hl, wl)
                frames = torch.stack((nbrs[:, :, 0], frames[:, :, 1], nbrs[:, :, 1]), dim=2)  # (B, G, 3, C, h, w)
            flow = flow + module(frames.reshape(b, g * 3 * c, hl, wl))  # residual, (B, 4G, h, w)

        flow = crop(flow)
        if self.config.max_flow > 0:
            flow = flow.clamp(-self.config.max_flow, self.config.max_flow)
        return flow.reshape(b, 2 * g, 2, h, w)

    def _refine(self, triples: Tensor, init: Tensor) -> Tensor:
        """``init + correction`` (see the class docstring)."""
        b, g, _, c, h, w = triples.shape
        m = 2 ** (self.config.levels - 1)
        x, crop = pad_to_multiple(triples.reshape(b, g * 3 * c, h, w), m)
        f0, _ = pad_to_multiple(init.reshape(b, g * 4, h, w), m, mode="replicate")
        pyramid, inits = [x], [f0]  # finest last
        for _ in range(self.config.levels - 1):
            pyramid.insert(0, F.avg_pool2d(pyramid[0], 2))
            inits.insert(0, F.avg_pool2d(inits[0], 2) * 0.5)
        res = x.new_zeros(b, g * 4, *pyramid[0].shape[-2:])  # (B, 4G, h0, w0)
        for module, img, start in zip(self.basic, pyramid, inits):
            hl, wl = img.shape[-2:]
            res = resize_flow(res.reshape(b * g * 2, 2, *res.shape[-2:]), (hl, wl)).reshape(b, g * 4, hl, wl)
            frames = img.reshape(b, g, 3, c, hl, wl)
            nbrs = flow_warp(frames[:, :, (0, 2)].reshape(b * g * 2, c, hl, wl),
                             (start + res).reshape(b * g * 2, 2, hl, wl)).reshape(b, g, 2, c, hl, wl)
            frames = torch.stack((nbrs[:, :, 0], frames[:, :, 1], nbrs[:, :, 1]), dim=2)
            res = res + module(frames.reshape(b, g * 3 * c, hl, wl))
        res = crop(res)
        if self.config.max_flow > 0:
            res = res.clamp(-self.config.max_flow, self.config.max_flow)
        return init + res.reshape(b, 2 * g, 2, h, w)


@dataclass(frozen=True)
class PairSpyNetConfig(ConfigMixin):
    """Hyperparameters of :class:`PairSpyNet`.

    Attributes:
        levels: pyramid levels; inputs are padded to a multiple of ``2**(levels-1)``.
        channels: hidden channels of each level's convolution stack (SpyNet: 32-64-32-16).
        kernel_size: kernel of those convolutions (SpyNet: 7).
        max_flow: final flows are clamped to +-max_flow pixels (0 disables).
    """

    levels: int = 5
    channels: tuple[int, ...] = (32, 64, 32, 16)
    kernel_size: int = 7
    max_flow: float = 200.0

    def __post_init__(self) -> None:
        if self.levels < 1 or self.kernel_size % 2 == 0 or not self.channels:
            raise ValueError(f"PairSpyNetConfig: invalid {self}")


class PairSpyNet(nn.Module):
    """SpyNet (Ranjan and Black 2017) for one frame pair, the flow network of DeAltHDR (section 3.3).

    Each pyramid level sees ``[ref, sup warped by the upsampled flow, that flow]`` (8 channels
    for RGB) and predicts the flow's residual, coarse to fine, like :class:`SpyNet` but for a pair
    rather than an exposure-matched triple: DeAltHDR feeds it exposure-normalised gamma frames.

    Shape:
        ``ref, sup (B, 3, H, W)`` in [0, 1] -> ``(B, 2, H, W)``: the flow ``ref -> sup`` (it
        backward-warps ``sup`` onto ``ref``).
    """

    def __init__(self, config: PairSpyNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or PairSpyNetConfig()
        k = cfg.kernel_size
        self.basic = nn.ModuleList()
        for _ in range(cfg.levels):
            layers: list[nn.Module] = []
            prev = 8
            for ch in cfg.channels:
                layers += [nn.Conv2d(prev, ch, k, 1, k // 2), nn.ReLU(inplace=True)]
                prev = ch
            layers.append(nn.Conv2d(prev, 2, k, 1, k // 2))
            self.basic.append(nn.Sequential(*layers))

    def forward(self, ref: Tensor, sup: Tensor) -> Tensor:
        if ref.shape != sup.shape or ref.dim() != 4 or ref.shape[1] != 3:
            raise ValueError(f"PairSpyNet: expected two (B, 3, H, W) frames, got {tuple(ref.shape)}, {tuple(sup.shape)}")
        b, _, h, w = ref.shape
        x, crop = pad_to_multiple(torch.cat((ref, sup), 1), 2 ** (self.config.levels - 1))
        pyramid = [x]  # finest last
        for _ in range(self.config.levels - 1):
            pyramid.insert(0, F.avg_pool2d(pyramid[0], 2))
        flow = x.new_zeros(b, 2, *pyramid[0].shape[-2:])
        for level, (module, img) in enumerate(zip(self.basic, pyramid)):
            if level > 0:
                flow = resize_flow(flow, img.shape[-2:])
            warped = flow_warp(img[:, 3:], flow) if level > 0 else img[:, 3:]
            flow = flow + module(torch.cat((img[:, :3], warped, flow), 1))
        flow = crop(flow)
        if self.config.max_flow > 0:
            flow = flow.clamp(-self.config.max_flow, self.config.max_flow)
        return flow
