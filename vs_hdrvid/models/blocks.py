"""Shared primitives of the Chen et al. (ICCV 2021) networks.

Configs that reject unknown keys, padding to a network's size multiple, the gamma-2.2
radiometry of section 3.1, the well-exposed masks of section 3.3 (equation 5, figure 5),
and residual blocks; the modulated deformable convolution of RefineNet is in
:mod:`vs_hdrvid.models.deform_conv`.

Convention: images are ``(B, C, H, W)``, windows ``(B, T, C, H, W)``; exposures are EVs in
stops, one per frame, as tensors ``(B,)`` or ``(B, T)``; radiance is ``H = L**gamma / 2**EV``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GAMMA = 2.2


class ConfigMixin:
    """``from_dict``/``to_dict`` for the network config dataclasses.

    ``from_dict`` rejects unknown keys (a typo must not become a silent default), rebuilds
    nested config dataclasses from mappings and turns JSON lists back into tuples.
    """

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known keys: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            hint = hints[key]
            if isinstance(hint, type) and issubclass(hint, ConfigMixin) and isinstance(value, Mapping):
                value = hint.from_dict(value)
            elif typing.get_origin(hint) is tuple and isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def pad_to_multiple(x: Tensor, m: int, mode: str = "reflect") -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Pad the last two dims of ``x`` at the bottom/right up to multiples of ``m``.

    Reflect padding needs the pad to be smaller than the side; where it is not (tiny inputs)
    replicate padding is used instead.

    Args:
        x: tensor ``(..., H, W)`` with at least 3 dims.
        m: the multiple.
        mode: ``"reflect"``, ``"replicate"`` or ``"constant"``.

    Returns:
        ``(x_padded, crop)`` where ``crop(y)`` cuts any ``(..., H', W')`` tensor at the padded
        size back to ``(..., H, W)``.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % m, -w % m

    def crop(y: Tensor) -> Tensor:
        return y[..., :h, :w]

    if ph == 0 and pw == 0:
        return x, crop
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])  # (N, C, H, W): pad wants 3-4 dims
    out = F.pad(flat, (0, pw, 0, ph), mode=mode)
    return out.reshape(*lead, *out.shape[-3:]), crop


# ---------------------------------------------------------------- radiometry (section 3.1)


def _ev(ev: Tensor | float, ref: Tensor) -> Tensor:
    """EV as a tensor broadcastable against ``ref`` ``(B, C, H, W)``: ``(B, 1, 1, 1)``."""
    ev = torch.as_tensor(ev, dtype=ref.dtype, device=ref.device)
    return ev.reshape(-1, 1, 1, 1)


def ldr_to_hdr(ldr: Tensor, ev: Tensor | float, gamma: float = GAMMA) -> Tensor:
    """Linearise a gamma LDR image: ``H = clip(L, 0, 1)**gamma / 2**EV``.

    Shape: ``ldr (B, C, H, W)``, ``ev`` scalar or ``(B,)``.
    """
    return ldr.clamp(0, 1).pow(gamma) * torch.exp2(-_ev(ev, ldr))


def radiance_to_ldr(h: Tensor, ev: Tensor, gamma: float = GAMMA) -> Tensor:
    """The networks' LDR input from linear radiance: ``L = clip(H * 2**EV, 0, 1) ** (1/gamma)``.

    The exact inverse of ``linearize``'s gamma response. For a clip linearised with another
    response (a lookup table or a Debevec estimate) it yields the frame as a gamma-2.2 camera would
    have recorded it: the CRF is normalised to gamma 2.2, the preprocessing of section 3.1, which
    the networks were trained with.

    Shape:
        ``h (T, 3, H, W)``, ``ev (T,)`` -> ``(T, 3, H, W)`` in [0, 1].
    """
    return (h * torch.exp2(ev.to(h.dtype)).view(-1, 1, 1, 1)).clamp(0, 1).pow(1.0 / gamma)


def reexpose(ldr: Tensor, ev_from: Tensor | float, ev_to: Tensor | float, gamma: float = GAMMA) -> Tensor:
    """Re-expose an LDR image from ``ev_from`` to ``ev_to``: ``clip(L * (e_to/e_from)**(1/gamma), 0, 1)``.

    ``e = 2**EV``. Used to bring the reference to its neighbours' exposure before flow
    estimation (section 3.2, following Kalantari and Ramamoorthi 2019).

    Shape: ``ldr (B, C, H, W)``, EVs scalar or ``(B,)``.
    """
    gain = torch.exp2((_ev(ev_to, ldr) - _ev(ev_from, ldr)) / gamma)
    return (ldr.clamp(0, 1) * gain).clamp(0, 1)


def well_exposed_mask(
    ldr: Tensor,
    ev: Tensor | float,
    evs: Tensor,
    low: float = 0.15,
    high: float = 0.9,
    soft: bool = True,
    per_channel: bool = False,
) -> Tensor:
    """Mask of the regions a frame records well, given the exposures it is merged with (eq. 5).

    Dark regions count as badly exposed only if some frame in ``evs`` is brighter (a larger EV)
    and saturated regions only if some frame is darker, so a low exposure is judged by its darks
    (``L < low``), a high one by its highlights (``L > high``) and a middle one by both
    (figure 5). ``soft`` gives equation 5: ``(L/low)**2`` below ``low`` and
    ``((1-L)/(1-high))**2`` above ``high``; otherwise the mask is binary. Without
    ``per_channel`` a pixel is judged by its largest channel (dark when all channels are dark,
    saturated when any channel is).

    Args:
        ldr: reference LDR ``(B, C, H, W)`` in [0, 1].
        ev: its EV, scalar or ``(B,)``.
        evs: EVs of all frames it is merged with ``(B, T)`` (may include ``ev`` itself).

    Returns:
        ``(B, 1, H, W)`` (or ``(B, C, H, W)`` with ``per_channel``), 1 where well exposed.
    """
    ev_b = _ev(ev, ldr)  # (B, 1, 1, 1)
    evs = torch.as_tensor(evs, dtype=ldr.dtype, device=ldr.device).reshape(ldr.shape[0], -1)
    brighter = (evs.amax(1).reshape(-1, 1, 1, 1) > ev_b).to(ldr.dtype)  # darks are bad
    darker = (evs.amin(1).reshape(-1, 1, 1, 1) < ev_b).to(ldr.dtype)  # highlights are bad
    lum = ldr.clamp(0, 1) if per_channel else ldr.clamp(0, 1).amax(1, keepdim=True)
    if soft:
        dark_ok = (lum / low).clamp(max=1).square()
        bright_ok = ((1 - lum) / (1 - high)).clamp(max=1).square()
    else:
        dark_ok = (lum >= low).to(ldr.dtype)
        bright_ok = (lum <= high).to(ldr.dtype)
    dark_ok = brighter * dark_ok + (1 - brighter)
    bright_ok = darker * bright_ok + (1 - darker)
    return dark_ok * bright_ok


def hdr_scale(evs: Tensor) -> Tensor:
    """``1 / H_sat = 2**min(EV)`` per sample ``(B, T) -> (B, 1, 1, 1)``.

    Multiplying radiance by it maps the brightest value any frame can record to 1, the
    normalised range the networks work in (the public implementation's exposure 1 for the
    darkest frame).
    """
    return torch.exp2(evs.amin(1)).reshape(-1, 1, 1, 1)


# ---------------------------------------------------------------- layers


def conv_act(
    c_in: int, c_out: int, k: int = 3, stride: int = 1, bn: bool = False, slope: float = 0.1
) -> nn.Sequential:
    """Conv (+ BatchNorm) + LeakyReLU."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, k // 2)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(slope, inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Conv-ReLU-Conv plus identity, no normalisation (EDVR); initialised at 0.1x Kaiming."""

    def __init__(self, nf: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))
