"""RefineNet: deformable alignment and temporal attention fusion in the feature space.

Chen et al. (ICCV 2021), section 3.3 and figure 4: a shared 64-channel feature extractor for
each coarse HDR of the window, pyramid-cascading-deformable (PCD) alignment of every feature
to the reference's over three levels (EDVR; equations 2-3), temporal attention fusion, a
residual reconstruction branch with two skip connections from the reference's encoder
features, and the final blend with the well-exposed mask of equations 4-5:
``H = M * H_coarse + (1 - M) * H_refined``. Trained with equation 6 (L1 on mu-law tonemapped
HDR normalised by the badly exposed area) plus a perceptual loss.

Deviation (``coarse_residual``, on by default): the reconstruction predicts a mu-law residual
over the reference's coarse HDR instead of regressing the HDR through a sigmoid, with its last
convolution zero-initialised, so an untrained RefineNet returns CoarseNet's output and training
starts from it. The paper trains for many GPU epochs; a short CPU budget does not lift a
from-scratch sigmoid head back to CoarseNet's quality. ``coarse_residual=False`` is the paper's
head.

Deviation (``output_mask=False``): the residual replaces the coarse HDR everywhere instead of only
in the badly exposed area ``1 - M`` of equation 5. Where the reference is well exposed but noisy
(night footage), equation 5 keeps CoarseNet's output, which is a blend of noisy frames; on those
scenes most of CoarseNet's error lies there (only 13-23% of it inside ``1 - M``, measured by filling
``1 - M`` with the ground truth). The residual is added so that a zero head returns the coarse HDR
exactly.

Deviation (``mulaw_input``): the coarse HDRs enter the extractor mu-law tonemapped instead of as
linear radiance over ``H_sat``. Linear, the dark half of a frame (where RefineNet's ``1 - M`` lies,
and the night footage) reaches the first convolution as values of 1e-3 to 1e-2; in the mu-law
domain, where the loss is computed, they span a fifth of the range. Neither deviation has gained
over CoarseNet yet within a CPU session's training (README, RefineNet).

Deviation (``temporal_base``): the reference's coarse HDR, which the residual corrects and equation
5 keeps where the reference is well exposed, is replaced by the classical temporal fusion of the
window (:mod:`vs_hdrvid.ops.temporal_fuse`: the coarse HDRs of ``t-1, t+1`` aligned by DIS flow
and averaged where they agree with it to within its noise), so an untrained RefineNet returns
that fusion, and training starts from the best classical answer to the same question: what the
window's neighbours add to the reference. :meth:`RefineNet.base_window` makes the substitution,
outside :meth:`RefineNet.forward` (DIS runs on the CPU), for the node and the training stage alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vs_hdrvid.models.blocks import (
    ConfigMixin,
    ResidualBlock,
    hdr_scale,
    pad_to_multiple,
    well_exposed_mask,
)
from vs_hdrvid.models.deform_conv import DeformConvPack
from vs_hdrvid.ops.temporal_fuse import temporal_fuse
from vs_hdrvid.ops.tonemap import inverse_mulaw, mulaw


@dataclass(frozen=True)
class RefineNetConfig(ConfigMixin):
    """Hyperparameters of :class:`RefineNet`; build with :meth:`for_exposures`.

    Attributes:
        num_frames: coarse HDRs in the window (odd), reference at the centre.
        exposure_mask_input: each frame's badly-exposed mask (from its LDR, binary at
            input_low/input_high) is stacked on its HDR (6 channels in instead of 3); the
            public setting for two exposures.
        features: feature channels (64).
        deformable_groups: groups of the deformable convolutions.
        front_blocks, back_blocks: residual blocks of the extractor and the reconstruction.
        input_low, input_high: thresholds of the input exposure masks.
        mask_low, mask_high: thresholds of the output mask M (equation 5).
        coarse_residual: predict a zero-initialised mu-law residual over the reference's
            coarse HDR (see the module docstring); False: the paper's sigmoid regression.
        deformable_align: PCD alignment of the features (False: Table 5's "w/o DA", the
            features fused unaligned).
        attention_fusion: temporal attention fusion (False: Table 5's "w/o TAF", a
            convolution after the features' concatenation).
        output_mask: equation 5's blend, the coarse HDR kept where the reference is well
            exposed; False (with ``coarse_residual``): the residual applies to every pixel.
        mulaw_input: the coarse HDRs enter mu-law tonemapped (False: linear over ``H_sat``).
        temporal_base: the reference's coarse HDR is replaced by the temporal fusion of the
            window (:meth:`RefineNet.base_window`) before the network sees it.
    """

    num_frames: int = 3
    exposure_mask_input: bool = True
    features: int = 64
    deformable_groups: int = 8
    front_blocks: int = 5
    back_blocks: int = 10
    input_low: float = 0.15
    input_high: float = 0.9
    mask_low: float = 0.15
    mask_high: float = 0.9
    coarse_residual: bool = True
    deformable_align: bool = True
    attention_fusion: bool = True
    output_mask: bool = True
    mulaw_input: bool = False
    temporal_base: bool = False

    @classmethod
    def for_exposures(cls, n: int, num_frames: int = 3) -> RefineNetConfig:
        """Default config for ``n`` alternating exposures.

        Input exposure masks only for two exposures, and three coarse HDRs for both, as in the
        public implementation (its three-exposure RefineNet also takes the coarse HDRs of
        t-1, t, t+1, computed from seven LDR frames); ``num_frames=5`` is supported too.
        """
        return cls(num_frames=num_frames, exposure_mask_input=n == 2)

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.num_frames % 2 == 0:
            raise ValueError(f"RefineNetConfig: num_frames must be odd, got {self.num_frames}")
        if not (self.output_mask or self.coarse_residual):
            raise ValueError("RefineNetConfig: output_mask=False needs coarse_residual (the sigmoid head has no "
                             "coarse HDR to start from)")
        if self.features % self.deformable_groups:
            raise ValueError("RefineNetConfig: features must be a multiple of deformable_groups")


class RefineOutput(NamedTuple):
    """What :class:`RefineNet` returns."""

    hdr: Tensor  # (B, 3, H, W) final HDR, M * H_coarse + (1 - M) * H_refined
    refined: Tensor  # (B, 3, H, W) H_refined, the reconstruction branch alone
    mask: Tensor  # (B, 1, H, W) M of equation 5, 1 where the reference is well exposed


class PCDAlign(nn.Module):
    """Pyramid, cascading and deformable alignment over three levels (EDVR; section 3.3).

    Shape: ``nbr, ref``: lists ``[L1, L2, L3]`` of ``(B, C, H/2**l, W/2**l)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, nf: int = 64, groups: int = 8) -> None:
        super().__init__()
        conv = lambda c_in: nn.Conv2d(c_in, nf, 3, 1, 1)  # noqa: E731
        self.offset1 = nn.ModuleList([conv(2 * nf) for _ in range(3)])  # [nbr, ref] -> offset feature
        self.offset2 = nn.ModuleList([conv(nf), conv(2 * nf), conv(2 * nf)])  # L3 / + upsampled coarser
        self.offset3 = nn.ModuleList([conv(nf), conv(nf)])  # L2, L1
        self.dcn = nn.ModuleList([DeformConvPack(nf, nf, nf, groups) for _ in range(3)])  # L3, L2, L1
        self.fea_fuse = nn.ModuleList([conv(2 * nf), conv(2 * nf)])  # L2, L1: [aligned, upsampled coarser]
        self.cas_offset = nn.Sequential(conv(2 * nf), nn.LeakyReLU(0.1, inplace=True), conv(nf))
        self.cas_dcn = DeformConvPack(nf, nf, nf, groups)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, nbr: list[Tensor], ref: list[Tensor]) -> Tensor:
        act = self.act
        up = lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        offset = fea = None
        for i, lvl in enumerate((2, 1, 0)):  # coarse to fine: L3, L2, L1
            off = act(self.offset1[i](torch.cat((nbr[lvl], ref[lvl]), dim=1)))
            if offset is None:
                off = act(self.offset2[0](off))
            else:
                off = act(self.offset2[i](torch.cat((off, up(offset) * 2), dim=1)))
                off = act(self.offset3[i - 1](off))
            aligned = self.dcn[i](nbr[lvl], off)
            if fea is None:
                fea = act(aligned)
            else:
                fea = self.fea_fuse[i - 1](torch.cat((aligned, up(fea)), dim=1))
                fea = act(fea) if lvl > 0 else fea
            offset = off
        assert fea is not None
        off = self.cas_offset(torch.cat((fea, ref[0]), dim=1))
        return act(self.cas_dcn(fea, act(off)))


class TemporalAttentionFusion(nn.Module):
    """Temporal attention fusion (section 3.3, figure 4b).

    Each aligned feature is concatenated with the reference feature; two convolutions give an
    attention map of the feature's size (sigmoid), the features are weighted by their maps,
    concatenated and fused by a 1x1 convolution.

    Shape: ``(B, N, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, nf: int = 64, num_frames: int = 3) -> None:
        super().__init__()
        self.att1 = nn.Conv2d(2 * nf, nf, 3, 1, 1)
        self.att2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.fuse = nn.Conv2d(num_frames * nf, nf, 1)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, feats: Tensor) -> Tensor:
        b, n, c, h, w = feats.shape
        ref = feats[:, n // 2 : n // 2 + 1].expand(-1, n, -1, -1, -1)  # (B, N, C, H, W)
        pairs = torch.cat((ref, feats), dim=2).reshape(b * n, 2 * c, h, w)
        att = torch.sigmoid(self.att2(self.act(self.att1(pairs)))).reshape(b, n, c, h, w)
        return self.act(self.fuse((feats * att).reshape(b, n * c, h, w)))


class ConcatFusion(nn.Module):
    """Table 5's fusion without temporal attention: a 3x3 convolution of the concatenated features.

    Shape: ``(B, N, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, nf: int = 64, num_frames: int = 3) -> None:
        super().__init__()
        self.fuse = nn.Conv2d(num_frames * nf, nf, 3, 1, 1)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, feats: Tensor) -> Tensor:
        return self.act(self.fuse(feats.flatten(1, 2)))


class RefineNet(nn.Module):
    """Refines the coarse HDR of the reference frame from the coarse HDRs of its window.

    The extractor runs at full resolution (skip 1), then stride 2 (skip 2) and
    ``front_blocks`` residual blocks give pyramid level L1 at 1/2; L2 and L3 follow at 1/4
    and 1/8. After PCD alignment and fusion at 1/2, ``back_blocks`` residual blocks, the
    reference's skip 2, a transposed convolution to full resolution, skip 1 and two
    convolutions regress the HDR (see ``coarse_residual``), scaled to ``H_sat = 2**-min(EV)``.
    Inputs are padded (reflect) to a multiple of 8 and cropped back.

    Shape:
        - hdrs: ``(B, N, 3, H, W)`` coarse HDRs (``H = L**gamma / 2**EV``), reference at N//2.
        - ldrs: ``(B, N, 3, H, W)`` the LDR frames of the same window in [0, 1] (the
          reference's gives M; all give the input exposure masks).
        - evs: ``(B, N)`` or ``(N,)`` exposures in stops.
        - output: :class:`RefineOutput`.
    """

    def __init__(self, config: RefineNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or RefineNetConfig()
        nf = cfg.features
        c_in = 6 if cfg.exposure_mask_input else 3
        self.conv_first1 = nn.Conv2d(c_in, nf, 3, 1, 1)
        self.conv_first2 = nn.Conv2d(nf, nf, 3, 2, 1)
        self.front = nn.Sequential(*[ResidualBlock(nf) for _ in range(cfg.front_blocks)])
        self.down, self.align = None, None  # Table 5's "w/o DA": neither the pyramid nor PCD
        if cfg.deformable_align:
            self.down = nn.ModuleList(  # L1 -> L2 -> L3: stride-2 conv, LeakyReLU, conv
                nn.Sequential(nn.Conv2d(nf, nf, 3, 2, 1), nn.LeakyReLU(0.1, True), nn.Conv2d(nf, nf, 3, 1, 1))
                for _ in range(2)
            )
            self.align = PCDAlign(nf, cfg.deformable_groups)
        self.fusion = (TemporalAttentionFusion if cfg.attention_fusion else ConcatFusion)(nf, cfg.num_frames)
        self.trunk = nn.Sequential(*[ResidualBlock(nf) for _ in range(cfg.back_blocks)])
        self.upconv = nn.ConvTranspose2d(2 * nf, nf, 4, 2, 1)
        self.hr_conv = nn.Conv2d(2 * nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)
        if cfg.coarse_residual:
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def base_window(self, hdrs: Tensor, evs: Tensor) -> Tensor:
        """The window :meth:`forward` takes: the coarse HDRs, the reference's replaced by the temporal
        fusion of the window when ``config.temporal_base`` (else ``hdrs`` itself).

        Shape: ``hdrs (B, N, 3, H, W)``, ``evs (B, N)`` or ``(N,)`` -> ``(B, N, 3, H, W)``.
        """
        if not self.config.temporal_base:
            return hdrs
        b, n = hdrs.shape[:2]
        evs = torch.as_tensor(evs, dtype=torch.float32, device=hdrs.device).expand(b, n)
        fused = temporal_fuse(hdrs.float(), 1 / hdr_scale(evs).flatten()).to(hdrs.dtype)
        return torch.cat((hdrs[:, :n // 2], fused[:, None], hdrs[:, n // 2 + 1:]), dim=1)

    def forward(self, hdrs: Tensor, ldrs: Tensor, evs: Tensor) -> RefineOutput:
        b, n, c, h, w = hdrs.shape
        cfg = self.config
        if n != cfg.num_frames or c != 3 or ldrs.shape != hdrs.shape:
            raise ValueError(
                f"RefineNet: expected hdrs and ldrs (B, {cfg.num_frames}, 3, H, W), "
                f"got {tuple(hdrs.shape)} and {tuple(ldrs.shape)}"
            )
        evs = torch.as_tensor(evs, dtype=hdrs.dtype, device=hdrs.device).expand(b, n)
        scale = hdr_scale(evs)  # (B, 1, 1, 1) = 1 / H_sat
        x = hdrs * scale[:, None]  # (B, N, 3, H, W) in [0, 1]
        if cfg.mulaw_input:
            x = mulaw(x.clamp(0, 1))
        if cfg.exposure_mask_input:
            flat_evs = evs.repeat_interleave(n, dim=0)  # (B*N, N): each frame's window
            bad = 1 - well_exposed_mask(
                ldrs.reshape(b * n, c, h, w), evs.reshape(-1), flat_evs,
                cfg.input_low, cfg.input_high, soft=False, per_channel=True,
            )
            x = torch.cat((bad.reshape(b, n, c, h, w), x), dim=2)  # (B, N, 6, H, W)
        x, crop = pad_to_multiple(x, 8)

        act = self.act
        ci = n // 2
        pyr, skip1_ref, skip2_ref = [], None, None  # pyr[i]: frame i's [L1, L2, L3], (B, C, H/2**l, W/2**l)
        for i in range(n):  # frame by frame: of the full-resolution features only the reference's are kept
            skip1 = act(self.conv_first1(x[:, i]))  # (B, C, H, W)
            skip2 = act(self.conv_first2(skip1))  # (B, C, H/2, W/2)
            levels = [self.front(skip2)]
            for down in self.down or ():
                levels.append(act(down(levels[-1])))  # L2 (B, C, H/4, W/4), L3 (B, C, H/8, W/8)
            pyr.append(levels)
            if i == ci:
                skip1_ref, skip2_ref = skip1, skip2
        if self.align is None:  # Table 5's "w/o DA": the features as they are
            aligned = torch.stack([levels[0] for levels in pyr], dim=1)
        else:
            aligned = torch.stack([self.align(pyr[i], pyr[ci]) for i in range(n)], dim=1)

        out = self.trunk(self.fusion(aligned))  # (B, C, H/2, W/2)
        out = self.upconv(torch.cat((skip2_ref, out), dim=1))  # (B, C, H, W)
        out = act(self.hr_conv(torch.cat((skip1_ref, out), dim=1)))
        head = self.conv_last(out)
        mask = well_exposed_mask(ldrs[:, ci], evs[:, ci], evs, cfg.mask_low, cfg.mask_high, soft=True)
        if cfg.coarse_residual:
            base = x[:, ci, -3:] if cfg.mulaw_input else mulaw(x[:, ci, -3:].clamp(0, 1))  # the reference's, padded
            refined = inverse_mulaw((base + head).clamp(0, 1))
            if not cfg.output_mask:  # the residual's change, added to the exact coarse HDR: a zero head returns it
                refined = hdrs[:, ci] + crop(refined - inverse_mulaw(base)) / scale
                return RefineOutput(hdr=refined, refined=refined, mask=mask)
        else:
            refined = torch.sigmoid(head)
        refined = crop(refined) / scale  # (B, 3, H, W), absolute radiance
        hdr = mask * hdrs[:, ci] + (1 - mask) * refined
        return RefineOutput(hdr=hdr, refined=refined, mask=mask)
