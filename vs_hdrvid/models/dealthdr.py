"""DeAltHDR: HDR video from degraded alternating exposures (sections 3.1-3.3, Appendix C).

Input (eq. 1): the linearised frames of a 5-frame window with long exposures divided by the
exposure ratio (``L' = L**2.2 * 2**(EV_short - EV)``), concatenated with ``L'**(1/2.2)``.

Network (a Turtle-style U-Net, Appendix C and Figure B):

* two encoders of identical architecture and separate weights, one for the short- and one for
  the long-exposure frames (``dual_encoders=False`` shares one, the Table 5/C ablation): levels
  of ``enc_blocks`` blocks (ReducedAttn + FFW at levels 1-2, channel attention + gated FFW at
  level 3), 2x down-sampling between levels and into the middle;
* flows both ways between the centre frame and each neighbour and the forward-backward difference
  ``D`` of eqs. 4-5, computed once: the paper's SpyNet (:class:`PairSpyNet` on the gamma inputs,
  ``flow_source="spynet"``) or, this project's choice for CPU-trained weights
  (``flow_source="dis"``), the classical DIS flows the caller passes in (the ``dealthdr`` node
  computes them with :func:`~vs_hdrvid.nodes.classical_flow`, as ``coarse`` does): a trained
  SpyNet correction of DIS did not lower DIS's end-point error on this project's budget, and a
  SpyNet learning from zero inside the network gives FGMA a difference map of its own errors;
* a middle of ``middle_blocks`` channel blocks and three decoder levels, each starting with FGMA
  alignment of the four neighbours' encoder features onto the current feature and the
  history-router style fusion (:class:`ChannelCrossFusion`);
* an output convolution whose result is added, in the mu-law domain, to a base image (Turtle's
  global residual; zero-initialised, so an untrained network returns the base). With
  ``residual_base="reference"`` the base is the centre frame's own exposure-normalised radiance,
  as in Turtle. The default ``"merge"`` is this project's choice for networks trained on a small
  budget: a fixed, differentiable merge of the window (:func:`window_merge`): each frame's
  radiance flow-warped onto the centre by the network's own SpyNet flows, weighted by a hat on its
  LDR value times its exposure, and down-weighted where FGMA's consistency difference ``D``
  flags the flow as unreliable. The network then learns the correction (ghosts, noise, blur)
  rather than the whole merge.

``s`` (the FGMA sensitivity) is an argument of :meth:`DeAltHDR.forward`: ``0`` flow only, ``inf``
attention everywhere; training mixes the branches (30% flow, 30% attention, 40% FGMA with a random
``s``) so one set of weights serves every ``s``.

Convention: windows ``ldrs (B, 5, 3, H, W)`` gamma-2.2 LDR in [0, 1], ``evs (B, 5)``; output HDR
``(B, 3, H, W)`` on the radiance scale ``H = f^-1(L) / 2**EV`` of the rest of the project.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vs_hdrvid.models.blocks import ConfigMixin, pad_to_multiple
from vs_hdrvid.models.dealthdr_blocks import (ChannelBlock, ChannelCrossFusion, Downsample,
                                              ReducedAttnBlock, Upsample)
from vs_hdrvid.models.fgma import FGMA, consistency_difference, level_mask
from vs_hdrvid.models.spynet import PairSpyNet, PairSpyNetConfig
from vs_hdrvid.ops.color import rgb_to_luminance
from vs_hdrvid.ops.metrics import MU, mu_law
from vs_hdrvid.ops.warp import flow_warp, resize_flow

__all__ = ["CPU_SIZES", "RESIDUAL_BASES", "DeAltHDRConfig", "DeAltHDR", "DeAltHDROutput", "FeatureCache",
           "prepare_inputs", "residual_attention_state", "window_merge"]

#: What the network's zero-initialised output corrects (``DeAltHDRConfig.residual_base``).
RESIDUAL_BASES = ("merge", "tuned_merge", "bounded_merge", "reference")


@dataclass(frozen=True)
class DeAltHDRConfig(ConfigMixin):
    """Hyperparameters of :class:`DeAltHDR`.

    The defaults are the paper's (blocks 2/4/6, 8 middle blocks) with Turtle's width, heads and
    FFW expansion (64; 1/2/4/8; 2.5). ``decoder_blocks`` and ``window`` are this project's
    choices where the paper gives no number.

    Attributes:
        dim: channels of level 1 (doubling per level, ``8 * dim`` in the middle).
        enc_blocks: blocks of encoder levels 1-3.
        middle_blocks: channel blocks of the middle.
        dec_blocks: channel blocks after the fusion of decoder levels 3, 2, 1.
        heads: attention heads of levels 1, 2, 3 and the middle.
        expansion: FFW hidden width factor.
        window: FGMA key window side.
        frames: window length (odd).
        dual_encoders: separate short/long encoders (False: one shared).
        flow_source: ``"spynet"`` (the paper: the network's own SpyNet, ``flow``) or ``"dis"``
            (flows given to :meth:`DeAltHDR.forward`; no flow network).
        residual_base: ``"merge"`` (:func:`window_merge`), ``"tuned_merge"`` (the same with
            ``hv.merge``'s clipping level and fallback, ``high=0.92``), ``"bounded_merge"``
            (``tuned_merge`` that also drops a neighbour contradicting a short centre's clipped or
            bright pixels, ``hv.merge``'s tests there) or ``"reference"`` (the centre frame).
        residual_bound: ``tau`` of a trust region around the base (0: none, the output is the base
            plus the correction). With ``tau > 0`` and ``bound_power`` 1 the correction's linear
            radiance ``r`` (short-exposure units) is squashed to ``tau * (b + bound_floor) * tanh(r /
            (tau * (b + bound_floor)))`` around the base's radiance ``b``: at most a fraction ``tau`` of it in
            the highlights, where the base's well-exposed short frames are already accurate and an
            unbounded correction learnt on other highlights made them up (a deviation; the
            untrained network is still the base exactly).
        bound_floor: the radiance added to ``b`` in the bound, which leaves the shadows, where the
            short frames' noise is of the order of the signal, free to be corrected.
        bound_power: ``p`` of the bound's growth with the radiance: ``tau * f**(1 - p) * (b +
            f)**p`` with ``f = bound_floor``, the same ``tau * f`` in the shadows for every ``p``.
            ``1``: a fixed fraction of the radiance; ``0.5``: proportional to shot noise, whose
            share of the signal falls as ``1 / sqrt(b)``, so the well-exposed highlights get
            the least change; ``0``: one absolute bound.
        attention_residual: FGMA's residual design (:class:`~vs_hdrvid.models.fgma.FGMA`): where
            the mask is set the fusion sees the flow-warped features only through the attention
            (``F_att = F_flow + O(attention)``, ``O`` zero-initialised); False: eq. 8 as written,
            ``F_flow`` everywhere beside ``F_att`` (the weights shipped before it).
        gamma: camera response exponent of the LDR input.
        flow: the SpyNet's config.
    """

    dim: int = 64
    enc_blocks: tuple[int, int, int] = (2, 4, 6)
    middle_blocks: int = 8
    dec_blocks: tuple[int, int, int] = (2, 2, 2)
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    expansion: float = 2.5
    window: int = 7
    frames: int = 5
    dual_encoders: bool = True
    flow_source: str = "spynet"
    residual_base: str = "merge"
    residual_bound: float = 0.0
    bound_floor: float = 0.05
    bound_power: float = 1.0
    attention_residual: bool = False
    gamma: float = 2.2
    flow: PairSpyNetConfig = field(default_factory=PairSpyNetConfig)

    def __post_init__(self) -> None:
        if self.frames % 2 == 0 or self.frames < 3:
            raise ValueError(f"DeAltHDRConfig: frames must be odd and >= 3, got {self.frames}")
        if self.flow_source not in ("spynet", "dis"):
            raise ValueError(f"DeAltHDRConfig: flow_source must be spynet or dis, got {self.flow_source!r}")
        if self.residual_base not in RESIDUAL_BASES:
            raise ValueError(f"DeAltHDRConfig: residual_base must be one of {', '.join(RESIDUAL_BASES)}, got "
                             f"{self.residual_base!r}")
        if not (self.residual_bound >= 0 and self.bound_floor > 0 and 0 <= self.bound_power <= 1):
            raise ValueError(f"DeAltHDRConfig: residual_bound must be >= 0, bound_floor > 0 and bound_power in "
                             f"[0, 1], got {self.residual_bound}, {self.bound_floor}, {self.bound_power}")
        for lvl, h in enumerate(self.heads):
            if (self.dim * 2 ** lvl) % h:
                raise ValueError(f"DeAltHDRConfig: {self.dim * 2 ** lvl} channels of level {lvl + 1} "
                                 f"are not divisible by {h} heads")

    @classmethod
    def small(cls, **overrides) -> "DeAltHDRConfig":
        """The width and depth this project trains on a CPU (see the weights manifest)."""
        return cls.sized("small", **overrides)

    @classmethod
    def sized(cls, size: str, **overrides) -> "DeAltHDRConfig":
        """One of the CPU sizes of :data:`CPU_SIZES` (``tiny``, ``small``, ``medium``), or the
        paper's (``paper``), with ``overrides`` of any field."""
        if size == "paper":
            return cls(**overrides)
        if size not in CPU_SIZES:
            raise ValueError(f"DeAltHDRConfig: unknown size {size!r}; known: {', '.join([*CPU_SIZES, 'paper'])}")
        return cls(**{**CPU_SIZES[size], "expansion": 2.0, "window": 5,
                      "flow": PairSpyNetConfig(levels=4, channels=(16, 32, 16, 8), kernel_size=5), **overrides})


#: The widths and depths swept on the CPU (README "DeAltHDR size sweep"): ``small`` is the first
#: shipped one; ``tiny`` halves its width, ``medium`` widens it by half and deepens level 2.
CPU_SIZES: dict[str, dict] = {
    "tiny": {"dim": 8, "enc_blocks": (1, 1, 2), "middle_blocks": 2, "dec_blocks": (1, 1, 1), "heads": (1, 1, 2, 4)},
    "small": {"dim": 16, "enc_blocks": (1, 1, 2), "middle_blocks": 2, "dec_blocks": (1, 1, 1), "heads": (1, 1, 2, 4)},
    "medium": {"dim": 24, "enc_blocks": (1, 2, 2), "middle_blocks": 2, "dec_blocks": (1, 1, 1), "heads": (1, 2, 2, 4)},
}


@dataclass
class DeAltHDROutput:
    """``hdr (B, 3, H, W)`` radiance; ``attention_ratio``: masked share of all FGMA query pixels;
    ``flows (B, N, 2, H, W)``: the ``t -> neighbour`` flows (for an auxiliary flow loss)."""

    hdr: Tensor
    attention_ratio: float
    flows: Tensor


def prepare_inputs(ldrs: Tensor, evs: Tensor, gamma: float = 2.2) -> tuple[Tensor, Tensor]:
    """Equation 1: ``L' = L**gamma * 2**(EV_min - EV)`` and ``concat(L', L'**(1/gamma))``.

    Returns:
        ``(x (B, T, 6, H, W), short (B, T) bool)``: the network input and which frames are the
        window's short exposures.
    """
    ev_min = evs.min(1, keepdim=True).values
    lin = ldrs.clamp(0, 1).pow(gamma) * torch.exp2(ev_min - evs)[..., None, None, None]
    return torch.cat((lin, lin.clamp_min(1e-8).pow(1.0 / gamma)), 2), evs <= ev_min + 1e-3


def window_merge(lin: Tensor, ldrs: Tensor, evs: Tensor, fwd: Tensor, d: Tensor, center: int,
                 high: float | None = None, bounds: bool = False) -> Tensor:
    """Exposure-weighted merge of the flow-aligned window (the ``"merge"`` residual base).

    Weights: ``(1 - (2 L - 1)**12) * 2**(EV - EV_min)`` on each frame's own LDR value (a flat-top
    hat that drops at black and at clipping, times the exposure, which scales its SNR); a
    neighbour's weight is further multiplied by ``clamp(1 - 20 D, 0, 1)``. The centre keeps a
    small floor so that a pixel clipped or black everywhere falls back to it.

    With ``high`` (the ``"tuned_merge"`` base; 0.92 there, ``hv.merge``'s clipping level) a value
    counts only below ``high`` (the weight ramps to zero over ``[high - 0.1, high]``: a long frame's
    blurred or noisy highlight just under 1 is no measurement of the radiance), and the floor goes
    to the window's shortest exposures instead of the centre, so that a pixel clipped everywhere
    is at least the shortest exposure's clipping radiance.

    With ``bounds`` (the ``"bounded_merge"`` base; needs ``high``) a neighbour is also dropped
    where it contradicts the bright pixels of a short centre, ``hv.merge``'s tests restricted to
    where they are safe (:func:`_within_bounds`, spread over 3x3): where the centre is clipped the
    scene is at least ``high**gamma`` of its clipping radiance (less 0.25 stops), so a darker
    neighbour (a misaligned or motion-blurred frame) is a ghost; where it is bright (LDR luminance
    above 0.35) a neighbour must agree with it within 0.25 stops. Only a short centre: a long
    frame is integrated over the motion, and its blur spreads its highlights beyond the sharp
    scene's. Below the knee, and ``hv.merge``'s upper bound where the centre is black, stay out:
    they reject the noisy neighbours of a noisy short centre, which is where the window denoises.
    The tests look at luminance, so a neighbour of another colour can pass them: last, each channel
    a short centre clips is kept at least at the centre's own radiance (a misaligned yellow light
    would otherwise put a clipped white highlight's blue channel near zero).

    Shape: ``lin, ldrs (B, T, 3, H, W)``, ``evs (B, T)``, ``fwd (B, T-1, 2, H, W)``,
    ``d (B*(T-1), 1, H, W)`` -> ``(B, 3, H, W)`` in ``lin``'s units.
    """
    b, t = lin.shape[:2]
    nb = [i for i in range(t) if i != center]
    both = torch.cat((lin, ldrs), 2)
    moved = flow_warp(both[:, nb].flatten(0, 1), fwd.flatten(0, 1)).unflatten(0, (b, t - 1))
    frames = torch.cat((both[:, center:center + 1], moved), 1)  # centre first
    ev = torch.cat((evs[:, center:center + 1], evs[:, nb]), 1)
    gain = torch.exp2(ev - evs.min(1, keepdim=True).values)[..., None, None, None]
    ldr = frames[:, :, 3:].clamp(0, 1)
    w = (1 - (2 * ldr - 1).pow(12)) * gain  # (B, T, 3, H, W)
    trust = (1 - 20 * d).clamp(0, 1).unflatten(0, (b, t - 1))  # (B, T-1, 1, H, W)
    if high is None:
        w = torch.cat((w[:, :1] + 1e-4, w[:, 1:] * trust), 1)
    else:
        w = w * ((high - ldr) / 0.1).clamp(0, 1) * torch.cat((torch.ones_like(trust[:, :1]), trust), 1)
        w = w + 1e-4 * (ev <= evs.min(1, keepdim=True).values + 1e-3)[..., None, None, None]
        if bounds:
            w = torch.cat((w[:, :1] + 1e-8, w[:, 1:] * _within_bounds(frames, ldr, ev - evs.min(1, keepdim=True).values,
                                                                       high)), 1)
    out = (w * frames[:, :, :3]).sum(1) / w.sum(1)
    if bounds:  # a short centre's clipped channel measured at least its own radiance
        short = (ev[:, :1] <= evs.min(1, keepdim=True).values + 1e-3).view(b, 1, 1, 1)
        out = torch.maximum(out, frames[:, 0, :3] * ((ldr[:, 0] >= high) & short))
    return out


def _within_bounds(frames: Tensor, ldr: Tensor, rel_ev: Tensor, high: float, gamma: float = 2.2,
                   margin: float = 0.25, knee: float = 0.35, tolerance: float = 0.25) -> Tensor:
    """1 where a neighbour agrees with a short centre's bright pixels, else 0, spread 3x3.

    Where the centre is clipped the neighbour must not be darker than ``high**gamma`` less
    ``margin`` stops; where its luminance is above ``knee`` (LDR) and unclipped, the neighbour's
    log2 ratio to it, box-averaged over 3x3, must be within ``tolerance`` stops (``hv.merge``'s
    ghost tolerance). ``knee`` 0.35 was chosen on the extended val scenes (0.5: less PSNR-L, 0.25:
    0.5 dB less PSNR-mu, the noisy short frames' midtones losing the neighbours that denoise them).

    ``frames (B, T, 6, H, W)`` centre first (linear in short-exposure units, where a short frame
    clips at 1, then LDR), ``ldr`` their LDR values, ``rel_ev (B, T)`` each frame's EV above the
    window's shortest -> ``(B, T-1, 1, H, W)``.
    """
    b, t = frames.shape[:2]
    short = (rel_ev[:, 0] <= 1e-3).view(b, 1, 1, 1)
    if not bool(short.any()):  # a long centre: no test applies
        return frames.new_ones(b, t - 1, 1, *frames.shape[-2:])
    y = rgb_to_luminance(frames[:, :, :3])  # (B, T, 1, H, W)
    y, yc = y[:, 1:], y[:, :1]
    clipped = (ldr[:, 0].amax(1, keepdim=True) >= high) & short  # (B, 1, H, W)
    ghost = clipped[:, None] & (y < high ** gamma * 2.0 ** -margin)
    bright = (yc >= knee ** gamma) & (short & ~clipped)[:, None]  # above the knee: noise is small
    d = (torch.log2(y.clamp_min(1e-8)) - torch.log2(yc.clamp_min(1e-8))).flatten(0, 1)
    d = F.avg_pool2d(d, 3, 1, 1, count_include_pad=False).unflatten(0, (b, t - 1))  # as hv.merge smooths it
    ghost = ghost | (bright & (d.abs() > tolerance))
    ok = (~ghost).to(frames.dtype).flatten(0, 1)
    return (-F.max_pool2d(-ok, 3, 1, 1)).unflatten(0, (b, t - 1))


class FeatureCache:
    """Encoder features of a video's recent frames, for the overlapping windows that share them.

    The windows ``t-2..t+2`` and ``t-1..t+3`` have four frames in common, and a frame's encoder
    features depend only on its own input (equation 1's normalisation by the window's shortest
    exposure is part of the key): a node that keeps them encodes one new frame per window
    instead of five, with the same output. The features must come from frames that are not
    warped per window (the node caches only when the flows are given).

    Args:
        capacity: frames kept, least recently used dropped first (a 1080p frame's features are
            about 60 MB in bfloat16, 125 MB in float32).
    """

    def __init__(self, capacity: int = 8) -> None:
        self.capacity, self.hits, self.misses = capacity, 0, 0
        self._items: OrderedDict[Hashable, list[Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> list[Tensor] | None:
        with self._lock:
            feats = self._items.get(key)
            if feats is None:
                self.misses += 1
            else:
                self.hits += 1
                self._items.move_to_end(key)
            return feats

    def put(self, key: Hashable, feats: list[Tensor]) -> None:
        with self._lock:
            self._items[key] = feats
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def residual_attention_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights of eq. 8's design (``attention_residual=False``) for the residual one, as a new dict.

    Each fusion reads ``F_att`` with the columns it read ``F_flow`` with, and the mask not at all,
    and each FGMA's output projection is zero: the converted network computes for every ``s`` what
    the given one computes at ``s = 0`` (flow only), and training starts from there.
    """
    out = dict(state)
    for key, w in state.items():
        if key.endswith("fgma.proj_q.weight"):
            out[key.replace("proj_q", "proj_o")] = torch.zeros_like(w)
        elif key.endswith("fuse.reduce.weight"):
            c = (w.shape[1] - 1) // 2
            new = w.clone()
            new[:, c + 1:], new[:, c] = w[:, :c], 0
            out[key] = new
    return out


class _Encoder(nn.Module):
    def __init__(self, cfg: DeAltHDRConfig) -> None:
        super().__init__()
        d, e = cfg.dim, cfg.expansion
        self.stem = nn.Conv2d(6, d, 3, padding=1)
        self.level1 = nn.Sequential(*[ReducedAttnBlock(d, e) for _ in range(cfg.enc_blocks[0])])
        self.down1 = Downsample(d)
        self.level2 = nn.Sequential(*[ReducedAttnBlock(2 * d, e) for _ in range(cfg.enc_blocks[1])])
        self.down2 = Downsample(2 * d)
        self.level3 = nn.Sequential(*[ChannelBlock(4 * d, cfg.heads[2], e) for _ in range(cfg.enc_blocks[2])])
        self.down3 = Downsample(4 * d)

    def forward(self, x: Tensor) -> list[Tensor]:
        f1 = self.level1(self.stem(x))
        f2 = self.level2(self.down1(f1))
        f3 = self.level3(self.down2(f2))
        return [f1, f2, f3, self.down3(f3)]


class _AlignFuse(nn.Module):
    """FGMA of every neighbour, then the fusion (the start of the middle and of each decoder level)."""

    def __init__(self, dim: int, heads: int, window: int, expansion: float, residual: bool = False) -> None:
        super().__init__()
        self.fgma = FGMA(dim, heads, window, residual)
        self.fuse = ChannelCrossFusion(dim, 2 * dim + 1, heads, expansion)

    def forward(self, cur: Tensor, nbrs: Tensor, flows: Tensor, masks: Tensor) -> Tensor:
        b, n = nbrs.shape[:2]
        aligned = self.fgma(cur.repeat_interleave(n, 0), nbrs.flatten(0, 1), flows.flatten(0, 1), masks.flatten(0, 1))
        return self.fuse(cur, aligned.unflatten(0, (b, n)))


class DeAltHDR(nn.Module):
    """The DeAltHDR network for 2-exposure alternating windows (module docstring).

    Shape:
        ``ldrs (B, T, 3, H, W)``, ``evs (B, T)`` -> :class:`DeAltHDROutput` for the centre frame.
        ``flows``, if given, is ``(fwd, bwd)``: ``(B, T-1, 2, H, W)`` flows ``t -> neighbour``
        and ``neighbour -> t`` in neighbour order, used instead of the SpyNet.
    """

    def __init__(self, config: DeAltHDRConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DeAltHDRConfig()
        d, e, w = cfg.dim, cfg.expansion, cfg.window
        self.flownet = PairSpyNet(cfg.flow) if cfg.flow_source == "spynet" else None
        self.enc_short = _Encoder(cfg)
        self.enc_long = _Encoder(cfg) if cfg.dual_encoders else self.enc_short
        r = cfg.attention_residual
        self.middle_align = _AlignFuse(8 * d, cfg.heads[3], w, e, r)
        self.middle = nn.Sequential(*[ChannelBlock(8 * d, cfg.heads[3], e) for _ in range(cfg.middle_blocks)])
        self.up, self.skip, self.align, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for lvl in (2, 1, 0):  # decoder levels 3, 2, 1
            c = d * 2 ** lvl
            self.up.append(Upsample(2 * c))
            self.skip.append(nn.Conv2d(2 * c, c, 1))
            self.align.append(_AlignFuse(c, cfg.heads[lvl], w, e, r))
            self.dec.append(nn.Sequential(*[ChannelBlock(c, cfg.heads[lvl], e) for _ in range(cfg.dec_blocks[2 - lvl])]))
        self.head = nn.Conv2d(d, 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def compile_blocks(self, **options) -> None:
        """``torch.compile`` the blocks whose shapes depend only on the frame size, in place.

        The encoders, the fusions, the middle, the decoder levels and the head: the elementwise
        passes between their convolutions (LayerNorm, GELU, gates, residuals) fuse. FGMA's masked
        attention gathers a data-dependent number of pixels and the flows' warps and the merge
        base stay eager, so a new ``s`` or mask never recompiles; each frame size compiles once
        (with a feature cache the encoders see one frame at a time).
        """
        import torch._dynamo.config as dynamo

        options = {"dynamic": False, **options}
        mods = [self.enc_short, self.middle_align.fuse, self.middle, self.head,
                *self.up, *self.skip, *(a.fuse for a in self.align), *self.dec]
        if self.enc_long is not self.enc_short:
            mods.append(self.enc_long)
        # Module.compile compiles the one Module._call_impl of every module: room for each block
        # at a few frame sizes, or the blocks past dynamo's limit (8) would silently stay eager
        dynamo.cache_size_limit = max(dynamo.cache_size_limit, 4 * len(mods))
        for m in mods:
            m.compile(**options)

    @property
    def center(self) -> int:
        return self.config.frames // 2

    @property
    def multiple(self) -> int:
        """Frame sides must be multiples of this (the U-Net's and the flow pyramid's)."""
        return math.lcm(8, 2 ** (self.config.flow.levels - 1)) if self.flownet is not None else 8

    @property
    def needs_flows(self) -> bool:
        """Whether :meth:`forward` must be given the flows (``flow_source="dis"``)."""
        return self.flownet is None

    def estimate_flows(self, gam: Tensor) -> tuple[Tensor, Tensor]:
        """SpyNet flows ``t -> n`` and ``n -> t`` for every neighbour ``n`` of the centre, in one batch.

        Shape: ``gam (B, T, 3, H, W)`` -> two ``(B, T-1, 2, H, W)``.
        """
        b, t = gam.shape[:2]
        ci = self.center
        nbrs = torch.cat((gam[:, :ci], gam[:, ci + 1:]), 1).flatten(0, 1)  # (B*N, 3, H, W)
        cur = gam[:, ci].repeat_interleave(t - 1, 0)
        both = self.flownet(torch.cat((cur, nbrs)), torch.cat((nbrs, cur)))  # (2*B*N, 2, H, W)
        fwd, bwd = both.chunk(2)
        return fwd.unflatten(0, (b, t - 1)), bwd.unflatten(0, (b, t - 1))

    def _encode(self, x: Tensor, short: Tensor) -> list[list[Tensor]]:
        """Each frame through the encoder of its exposure: per level, the ``(B, C_l, H_l, W_l)``
        features of every window frame (encoded in one batch per encoder)."""
        b, t = x.shape[:2]
        flat, sel = x.flatten(0, 1), short.flatten()
        if not self.config.dual_encoders or bool(sel.all()) or not bool(sel.any()):
            enc = self.enc_short if (not self.config.dual_encoders or bool(sel.all())) else self.enc_long
            return [list(f.unflatten(0, (b, t)).unbind(1)) for f in enc(flat)]
        if bool((short == short[:1]).all()):  # one pattern (inference): each frame's features as computed
            idx = sel[:t].nonzero().squeeze(1).tolist(), (~sel[:t]).nonzero().squeeze(1).tolist()
            out: list[list[Tensor]] = [[x] * t for _ in range(4)]  # placeholders, all overwritten
            for enc, frames in zip((self.enc_short, self.enc_long), idx):
                for lvl, f in enumerate(enc(x[:, frames].flatten(0, 1))):
                    for j, fj in zip(frames, f.unflatten(0, (b, len(frames))).unbind(1)):
                        out[lvl][j] = fj
            return out
        fs, fl = self.enc_short(flat[sel]), self.enc_long(flat[~sel])  # a training batch of mixed windows
        out = []
        for a, c in zip(fs, fl):
            merged = a.new_empty(b * t, *a.shape[1:])
            merged[sel], merged[~sel] = a, c
            out.append(list(merged.unflatten(0, (b, t)).unbind(1)))
        return out

    def _encode_cached(self, x: Tensor, short: Tensor, evs: Tensor, frame_ids: Sequence[Hashable],
                       cache: FeatureCache) -> list[list[Tensor]]:
        """:meth:`_encode` reusing the features of frames that ``cache`` holds, encoding the rest."""
        if x.shape[0] != 1 or len(frame_ids) != x.shape[1]:
            raise ValueError(f"DeAltHDR: a feature cache needs one window and one id per frame, got a batch of "
                             f"{x.shape[0]} and {len(frame_ids)} ids for {x.shape[1]} frames")
        ev_min = float(evs.min())
        keys = [(fid, float(ev), ev_min, tuple(x.shape[-2:]), x.dtype) for fid, ev in zip(frame_ids, evs[0].tolist())]
        got = [cache.get(k) for k in keys]
        todo = [i for i, g in enumerate(got) if g is None]
        for i in todo:  # one frame at a time: the same features whichever frames were cached
            got[i] = [level[0] for level in self._encode(x[:, i:i + 1], short[:, i:i + 1])]
            cache.put(keys[i], got[i])
        return [[g[lvl] for g in got] for lvl in range(4)]

    def _prepare(self, ldrs: Tensor, evs: Tensor, flows: tuple[Tensor, Tensor] | None):
        """Equation 1's input padded to the multiple, its crop, the flows both ways and ``D``."""
        b, t = ldrs.shape[:2]
        if t != self.config.frames or evs.shape != (b, t):
            raise ValueError(f"DeAltHDR: expected ldrs (B, {self.config.frames}, 3, H, W) and evs (B, "
                             f"{self.config.frames}), got {tuple(ldrs.shape)}, {tuple(evs.shape)}")
        x, short = prepare_inputs(ldrs, evs, self.config.gamma)
        x, crop = pad_to_multiple(x, self.multiple)  # (B, T, 6, H', W')
        gam = x[:, :, 3:]
        if flows is None:
            if self.flownet is None:
                raise ValueError("DeAltHDR: this network (flow_source='dis') needs the flows (fwd, bwd) "
                                 "of every neighbour; it has no flow network of its own")
            fwd, bwd = self.estimate_flows(gam)
        else:
            fwd, bwd = (pad_to_multiple(f.to(x.dtype), self.multiple, mode="replicate")[0] for f in flows)
        n = t - 1
        d = consistency_difference(gam[:, self.center].repeat_interleave(n, 0), fwd.flatten(0, 1), bwd.flatten(0, 1))
        return x, short, crop, fwd, d

    def _base(self, x: Tensor, ldrs: Tensor, evs: Tensor, fwd: Tensor, d: Tensor) -> Tensor:
        """The residual base in the mu-law domain (``config.residual_base``)."""
        if self.config.residual_base == "reference":
            return mu_law(x[:, self.center, :3].clamp(0, 1), MU)
        tuned = self.config.residual_base in ("tuned_merge", "bounded_merge")
        high = 0.92 if tuned else None  # hv.merge's clipping level
        ldr_p = pad_to_multiple(ldrs, self.multiple)[0]
        bounds = self.config.residual_base == "bounded_merge"
        return mu_law(window_merge(x[:, :, :3], ldr_p, evs, fwd, d, self.center, high, bounds).clamp(0, 1), MU)

    def _to_hdr(self, base: Tensor, correction: Tensor | None, crop, evs: Tensor) -> Tensor:
        """HDR radiance of the base corrected in the mu-law domain (``config.residual_bound``)."""
        def linear(t: Tensor) -> Tensor:  # inverse mu-law: short-exposure units
            return torch.expm1(t.clamp(0, 1) * math.log1p(MU)) / MU

        lin = linear(base if correction is None else base + correction)
        tau = self.config.residual_bound
        if correction is not None and tau > 0:
            ref = linear(base)
            f, p = self.config.bound_floor, self.config.bound_power
            bound = tau * f ** (1 - p) * (ref + f) ** p
            lin = ref + bound * torch.tanh((lin - ref) / bound)
        return crop(lin) * torch.exp2(-evs.min(1).values).view(-1, 1, 1, 1)

    def merge_base(self, ldrs: Tensor, evs: Tensor, flows: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The HDR of the residual base alone: what the untrained network returns, ``(B, 3, H, W)``."""
        x, _, crop, fwd, d = self._prepare(ldrs, evs, flows)
        return self._to_hdr(self._base(x, ldrs, evs, fwd, d), None, crop, evs)

    def forward(self, ldrs: Tensor, evs: Tensor, s: float = 15.0, flows: tuple[Tensor, Tensor] | None = None,
                frame_ids: Sequence[Hashable] | None = None, cache: FeatureCache | None = None) -> DeAltHDROutput:
        if not s >= 0:  # also rejects NaN
            raise ValueError(f"DeAltHDR: s must be >= 0 (inf allowed), got {s}")
        if (cache is None) != (frame_ids is None):
            raise ValueError("DeAltHDR: frame_ids and cache go together")
        x, short, crop, fwd, d = self._prepare(ldrs, evs, flows)
        b, t = ldrs.shape[:2]
        ci, n = self.center, t - 1
        feats = (self._encode(x, short) if cache is None else
                 self._encode_cached(x, short, evs, frame_ids, cache))
        nb = [i for i in range(t) if i != ci]
        masked = total = 0.0

        def align(level: int, cur: Tensor, module: _AlignFuse) -> Tensor:
            nonlocal masked, total
            size = tuple(cur.shape[-2:])
            mask = level_mask(d, s, size)  # (B*N, 1, h, w)
            fl = resize_flow(fwd.flatten(0, 1), size)
            masked, total = masked + float(mask.sum()), total + mask.numel()
            nbrs = torch.stack([feats[level][i] for i in nb], 1)
            return module(cur, nbrs, fl.unflatten(0, (b, n)), mask.unflatten(0, (b, n)))

        y = self.middle(align(3, feats[3][ci], self.middle_align))
        for i, lvl in enumerate((2, 1, 0)):
            y = self.skip[i](torch.cat((self.up[i](y), feats[lvl][ci]), 1))
            y = self.dec[i](align(lvl, y, self.align[i]))
        hdr = self._to_hdr(self._base(x, ldrs, evs, fwd, d), self.head(y), crop, evs)
        return DeAltHDROutput(hdr, masked / max(total, 1.0), crop(fwd))
