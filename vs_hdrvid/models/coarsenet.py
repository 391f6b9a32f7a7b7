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
import torch.nn.functional as F
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
from vs_hdrvid.models.flow_fill import FlowFill, FlowFillConfig
from vs_hdrvid.models.spynet import SpyNet, SpyNetConfig
from vs_hdrvid.ops.merge import blend_exposures, merge_weights
from vs_hdrvid.ops.tonemap import inverse_mulaw, mulaw
from vs_hdrvid.ops.warp import flow_warp

BLENDS = ("paper", "merge")
FLOW_NETS = ("spynet", "fill")


@dataclass(frozen=True)
class WeightNetConfig(ConfigMixin):
    """Hyperparameters of :class:`WeightNet`.

    Attributes:
        num_images: merge candidates M (5 for two exposures, 9 for three); 6M channels in
            (LDR + HDR of each), 3M weights out.
        encoder: channels of the three stride-2 stages (each stage conv s2 + conv).
        decoder: channels of the three transposed-conv stages back to full resolution.
        batch_norm: BatchNorm after each hidden conv (the public two-exposure setting).
        in_channels, out_channels: 0 for the paper's ``6M`` in and ``3M`` out; set by
            :class:`CoarseNetConfig` for ``blend="merge"``.
        residual_head: no sigmoid and a zero-initialised output convolution: the network then
            predicts a correction that starts at exactly zero (``blend="merge"``).
        skip: channels of a full-resolution branch (one 3x3 convolution of the input) joined to the
            decoder's output before the output convolution (0: none, the paper's network). A
            correction of the merge's result needs per-pixel detail (noise) that the stride-2
            encoder-decoder alone cannot place.
    """

    num_images: int = 5
    encoder: tuple[int, ...] = (64, 128, 256)
    decoder: tuple[int, ...] = (128, 128, 128)
    batch_norm: bool = True
    in_channels: int = 0
    out_channels: int = 0
    residual_head: bool = False
    skip: int = 0

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
        prev = cfg.in_channels or 6 * cfg.num_images
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
        self.skip = conv_act(cfg.in_channels or 6 * cfg.num_images, cfg.skip, bn=False) if cfg.skip else None
        head = nn.Conv2d(prev + cfg.skip, cfg.out_channels or 3 * cfg.num_images, 3, 1, 1)
        if cfg.residual_head:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        if self.skip is None:  # the paper's layout (and its checkpoints' keys): the head ends the body
            layers.append(head)
            self.body = nn.Sequential(*layers)
        else:
            self.body, self.head = nn.Sequential(*layers), head
        self.multiple = 2 ** len(cfg.encoder)

    @property
    def out_conv(self) -> nn.Conv2d:
        """The output convolution (zero-initialised with ``residual_head``)."""
        return self.body[-1] if self.skip is None else self.head

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        xp, crop = pad_to_multiple(x, self.multiple)
        if self.skip is None:
            out = crop(self.body(xp))
        else:
            # head(cat(body, skip)) as two convolutions summed: the same arithmetic without
            # writing a (B, C + skip, H', W') copy of two full-resolution feature maps
            body, c = self.body(xp), self.config.decoder[-1]
            w = self.head.weight
            out = F.conv2d(body, w[:, :c], self.head.bias, padding=1) + F.conv2d(self.skip(xp), w[:, c:], padding=1)
            out = crop(out)  # (B, out, H, W)
        if self.config.residual_head:
            return out
        return torch.sigmoid(out).reshape(b, self.config.num_images, 3, h, w)


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
        blend: ``"paper"``: the flow network estimates the flows and the weight network the
            blending weights from scratch (section 3.2). ``"merge"`` (this project's deviation,
            the shipped design): the network corrects the classical answer. It is given the
            classical flows (``init_flows``, DIS, with their confidence), the flow network (with
            ``flow.refine_init``) corrects them, and the weight network predicts, with a
            zero-initialised head, a per-channel log-weight residual over the weights of the
            weight-free merge (:func:`~vs_hdrvid.ops.merge.merge_weights`) of the flow-aligned
            window and a mu-law residual over the blend. Untrained, it is that merge exactly.
        flow_refine: ``blend="merge"`` only: run the flow network on the classical flows (False:
            use them as they are; the network then has no flow network).
        flow_net: ``blend="merge"`` with ``flow_refine`` only: which network corrects the
            classical flows. ``"spynet"``: the DIS-initialised SpyNet of ``flow``; ``"fill"``: the
            confidence-gated fill of ``fill`` (:class:`~vs_hdrvid.models.flow_fill.FlowFill`, this
            project's deviation: it learns within a CPU budget where the SpyNet did not).
        fill: config of that fill network.
        merge_radius: ``blend="merge"`` only: the merge being corrected is that of the frames
            within this distance of the reference (1: ``t-1..t+1``, which holds every exposure of a
            2- or 3-exposure pattern and, with DIS flows, merges 3-exposure footage better than the
            whole 5-frame window); the network sees the whole window.
    """

    num_exposures: int = 2
    flow: SpyNetConfig = field(default_factory=SpyNetConfig)
    weight: WeightNetConfig = field(default_factory=WeightNetConfig)
    keep_low: float = 0.4
    keep_high: float = 0.9
    gamma: float = GAMMA
    blend: str = "paper"
    flow_refine: bool = True
    merge_radius: int = 1
    flow_net: str = "spynet"
    fill: FlowFillConfig = field(default_factory=FlowFillConfig)

    @classmethod
    def for_exposures(cls, n: int, blend: str = "merge", flow_refine: bool = True,
                      flow_net: str = "spynet") -> CoarseNetConfig:
        """Default config for ``n`` alternating exposures (batch norm only for two, as published).

        ``blend="paper"`` is the network of the paper; ``"merge"`` the shipped correction of the
        weight-free merge (see the attributes), without batch norm: with the small CPU batches its
        train/eval statistics differ enough to move a correction that must start at exactly zero.
        """
        if blend == "paper":
            return cls(num_exposures=n, flow=SpyNetConfig(num_triples=n - 1),
                       weight=WeightNetConfig(num_images=4 * n - 3, batch_norm=n == 2))
        t, m = 2 * n - 1, 3  # window, frames merged (merge_radius 1)
        return cls(num_exposures=n, flow=SpyNetConfig(num_triples=n - 1, refine_init=True),
                   weight=WeightNetConfig(num_images=m, batch_norm=False, in_channels=6 * t + m + 3,
                                          out_channels=3 * m + 3, residual_head=True, skip=32),
                   blend="merge", flow_refine=flow_refine, merge_radius=1, flow_net=flow_net)

    def __post_init__(self) -> None:
        n = self.num_exposures
        if n not in (2, 3):
            raise ValueError(f"CoarseNetConfig: num_exposures must be 2 or 3, got {n}")
        if self.blend not in BLENDS:
            raise ValueError(f"CoarseNetConfig: blend must be one of {BLENDS}, got {self.blend!r}")
        if self.flow_net not in FLOW_NETS or (self.flow_net == "fill" and self.blend != "merge"):
            raise ValueError(f"CoarseNetConfig: flow_net must be one of {FLOW_NETS} ('fill' with blend='merge'), "
                             f"got {self.flow_net!r}")
        t, m = 2 * n - 1, 2 * self.merge_radius + 1
        if not 1 <= self.merge_radius <= n - 1:
            raise ValueError(f"CoarseNetConfig: merge_radius must be in 1..{n - 1}, got {self.merge_radius}")
        want = (4 * n - 3, 0, 0, False, False) if self.blend == "paper" else (m, 6 * t + m + 3, 3 * m + 3, True, True)
        w = self.weight
        if self.flow.num_triples != n - 1 or (w.num_images, w.in_channels, w.out_channels, w.residual_head,
                                              self.flow.refine_init) != want:
            raise ValueError(
                f"CoarseNetConfig: {n} exposures with blend={self.blend!r} need flow.num_triples={n - 1}, "
                f"(weight.num_images, in_channels, out_channels, residual_head, flow.refine_init)={want}; "
                f"use CoarseNetConfig.for_exposures({n}, {self.blend!r})"
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
        self.flownet: SpyNet | FlowFill | None = None
        if cfg.blend == "paper" or cfg.flow_refine:
            self.flownet = FlowFill(cfg.fill) if cfg.flow_net == "fill" else SpyNet(cfg.flow)
        self.weightnet = WeightNet(cfg.weight)
        self.window = 2 * n - 1
        self.center = n - 1
        self.pairs = [(j, j + n) for j in range(n - 1)]  # same exposure: (0, 2) or (0, 3), (1, 4)
        flow_order = [i for pair in self.pairs for i in pair]  # SpyNet's output order
        self.neighbours = sorted(flow_order)
        self.flow_perm = [flow_order.index(i) for i in self.neighbours]  # pair order -> time order
        self.pair_perm = [self.neighbours.index(i) for i in flow_order]  # time order -> pair order

    @property
    def needs_init_flows(self) -> bool:
        """Whether :meth:`forward` needs the classical flows (``blend="merge"``)."""
        return self.config.blend == "merge"

    def _check(self, ldrs: Tensor, evs: Tensor, init_flows: Tensor | None) -> Tensor:
        b, t, c, h, w = ldrs.shape
        if t != self.window or c != 3:
            raise ValueError(f"CoarseNet: expected (B, {self.window}, 3, H, W), got {tuple(ldrs.shape)}")
        if self.needs_init_flows and (init_flows is None or init_flows.shape != (b, t - 1, 2, h, w)):
            got = None if init_flows is None else tuple(init_flows.shape)
            raise ValueError(f"CoarseNet(blend='merge'): init_flows must be ({b}, {t - 1}, 2, {h}, {w}), got {got}")
        return torch.as_tensor(evs, dtype=ldrs.dtype, device=ldrs.device).expand(b, t)

    @property
    def flow_multiple(self) -> int:
        """What the frame size must be a multiple of for the flow network (padded to it)."""
        if isinstance(self.flownet, SpyNet):
            return 2 ** (self.config.flow.levels - 1)
        return 2 if self.flownet is not None else 1

    def flows(self, ldrs: Tensor, evs: Tensor, init_flows: Tensor | None = None,
              init_conf: Tensor | None = None) -> Tensor:
        """Flows from the reference to each neighbour, in time order (BasicSR's ``get_flow``).

        Per exposure pair the triple ``[N_a, C re-exposed to N_a, N_b]`` goes to the flow network;
        with ``blend="merge"`` it corrects ``init_flows`` (returned as they are without a flow
        network). ``flow_net="fill"`` corrects each flow on its own, from the reference and the
        neighbour brought to the brighter of their exposures and the flows' confidence
        ``init_conf`` (1 where not given).

        Shape: ``ldrs (B, T, 3, H, W)``, ``evs (B, T)``, ``init_flows (B, T-1, 2, H, W)``,
        ``init_conf (B, T-1, 1, H, W)`` -> ``(B, T-1, 2, H, W)``.
        """
        evs = self._check(ldrs, evs, init_flows)
        if self.flownet is None:
            return init_flows
        gamma, ci = self.config.gamma, self.center
        ref = ldrs[:, ci]  # (B, 3, H, W)
        if isinstance(self.flownet, FlowFill):
            b, k = ldrs.shape[0], len(self.neighbours)
            ev_ref, ev_nb = evs[:, ci:ci + 1].expand(b, k), evs[:, self.neighbours]
            ev_hi = torch.maximum(ev_ref, ev_nb).flatten()
            refs = reexpose(ref[:, None].expand(-1, k, -1, -1, -1).flatten(0, 1), ev_ref.flatten(), ev_hi, gamma)
            nbrs = reexpose(ldrs[:, self.neighbours].flatten(0, 1), ev_nb.flatten(), ev_hi, gamma)
            conf = torch.ones_like(init_flows[:, :, :1]) if init_conf is None else init_conf[:, :, :1].to(ldrs.dtype)
            return self.flownet(refs, nbrs, init_flows.flatten(0, 1), conf.flatten(0, 1)).unflatten(0, (b, k))
        triples = torch.stack([
            torch.stack((ldrs[:, a], reexpose(ref, evs[:, ci], evs[:, a], gamma), ldrs[:, bb]), dim=1)
            for a, bb in self.pairs
        ], dim=1)  # (B, G, 3, 3, H, W)
        init = None if init_flows is None or not self.config.flow.refine_init else init_flows[:, self.pair_perm]
        return self.flownet(triples, init)[:, self.flow_perm]  # pair order -> time order

    def forward(self, ldrs: Tensor, evs: Tensor, init_flows: Tensor | None = None,
                init_conf: Tensor | None = None, hdrs: Tensor | None = None) -> CoarseOutput:
        """Coarse HDR of the reference.

        ``blend="merge"`` needs ``init_flows`` and takes ``init_conf`` ``(B, T-1, 2|1, H, W)``
        (time order): the classical flows and their confidence. ``hdrs (B, T, 3, H, W)``: the
        window's linear radiance when the caller has it (a node), instead of ``ldr_to_hdr(ldrs)``.
        """
        evs = self._check(ldrs, evs, init_flows)
        flows = self.flows(ldrs, evs, init_flows, init_conf)  # (B, K, 2, H, W), time order
        if self.config.blend == "merge":
            return self._merge_forward(ldrs, evs, flows, init_conf, hdrs)
        b, t, c, h, w = ldrs.shape
        gamma, ci = self.config.gamma, self.center
        ref = ldrs[:, ci]
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

    def _merge_forward(self, ldrs: Tensor, evs: Tensor, flows: Tensor, init_conf: Tensor | None,
                       hdrs: Tensor | None) -> CoarseOutput:
        """``blend="merge"``: the weight-free merge of the flow-aligned window, corrected."""
        b, t, c, h, w = ldrs.shape
        gamma, ci, k = self.config.gamma, self.center, t - 1
        if hdrs is None:
            hdrs = ldr_to_hdr(ldrs.reshape(b * t, c, h, w), evs.reshape(-1), gamma).reshape(b, t, c, h, w)
        nbrs = hdrs[:, self.neighbours].reshape(b * k, c, h, w)
        warped = flow_warp(nbrs, flows.reshape(b * k, 2, h, w)).reshape(b, k, c, h, w)
        frames = torch.cat((warped[:, :ci], hdrs[:, ci:ci + 1], warped[:, ci:]), dim=1)  # (B, T, 3, H, W)
        conf = ldrs.new_ones(b, k, 1, h, w) if init_conf is None else init_conf.to(ldrs.dtype)
        valid = torch.cat((conf[:, :ci], ldrs.new_ones(b, 1, 1, h, w), conf[:, ci:]), dim=1)
        r = self.config.merge_radius
        sub, m = slice(ci - r, ci + r + 1), 2 * r + 1  # the frames merged
        with torch.no_grad():  # the classical weights are the base, not a path for gradients
            base_w, all_clipped = merge_weights(frames[:, sub].detach(), evs[:, sub], valid[:, sub], r)  # (B, M, 1, H, W)
        scale = hdr_scale(evs)[:, None]  # (B, 1, 1, 1, 1) = 1 / H_sat
        base = blend_exposures(frames[:, sub], base_w, evs[:, sub], all_clipped)  # (B, 3, H, W)
        lin = (frames * scale).clamp(0, 1)  # (B, T, 3, H, W) normalised radiance
        frame_ldr = (frames * torch.exp2(evs)[..., None, None, None]).clamp(0, 1).pow(1 / gamma)
        share = (base_w / base_w.sum(1, keepdim=True)).reshape(b, m, h, w)
        net_in = torch.cat((torch.cat((frame_ldr, lin), dim=2).reshape(b, 6 * t, h, w), share,
                            mulaw((base * scale[:, 0]).clamp(0, 1))), dim=1)  # (B, 6T+M+3, H, W)
        out = self.weightnet(net_in)  # (B, 3M+3, H, W), zero at initialisation
        log_w = out[:, :3 * m].reshape(b, m, 3, h, w).clamp(-8.0, 8.0)
        weights = base_w * torch.exp(log_w)  # (B, M, 3, H, W)
        # the merge's weights reach 1e-45 where it trusts no frame; there a negative correction
        # underflows to zero everywhere (0 / 0), so those pixels keep the merge's own weights
        weights = torch.where((weights.sum(1, keepdim=True) > 0), weights, base_w)
        hdr = blend_exposures(frames[:, sub], weights, evs[:, sub], all_clipped)
        hdr = mulaw_residual(hdr, out[:, 3 * m:], scale[:, 0])
        norm = weights / weights.sum(1, keepdim=True)
        return CoarseOutput(hdr=hdr, flows=flows, warped=warped, weights=norm, mask=torch.zeros_like(ldrs[:, 0, :1]))


def mulaw_residual(hdr: Tensor, residual: Tensor, scale: Tensor) -> Tensor:
    """``hdr`` moved by ``residual`` in the mu-law domain of ``clip(hdr * scale, 0, 1)``.

    Written as ``hdr + (T^-1(T(x) + r) - T^-1(T(x))) / scale`` so that a zero residual returns
    ``hdr`` bit for bit (``T^-1(T(x))`` alone is not exactly ``x`` in floating point).

    Shape: ``hdr, residual (B, 3, H, W)``, ``scale (B, 1, 1, 1)`` -> ``(B, 3, H, W)``.
    """
    t = mulaw((hdr * scale).clamp(0, 1))
    return hdr + (inverse_mulaw((t + residual).clamp(0, 1)) - inverse_mulaw(t)) / scale
