"""The operations torch.onnx cannot export as the networks write them, computed another way.

Each function here gives the values of the module code it replaces (the tests compare them):

- :func:`use_torchvision_deform`: RefineNet's deformable convolution through
  ``torchvision.ops.deform_conv2d``, for a graph with ONNX ``DeformConv`` (``deform="op"``); the
  module's own :func:`~vs_hdrvid.models.deform_conv.deform_conv2d` (one ``GridSample`` of all taps and
  a matrix product) exports as it is (``deform="grid"``).
- :func:`window_attention`: FGMA's masked window attention
  (:func:`~vs_hdrvid.models.fgma.masked_window_attention`) without its data-dependent branch and
  chunk loop: one ``NonZero`` gather.
- :func:`resize_flow_exportable`, :func:`exportable_pair_spynet`: flow resizing that keeps symbolic frame sizes
  symbolic (``ops.warp.resize_flow`` turns them into numbers), for graphs of any size.

Convention: as :mod:`vs_hdrvid.models.fgma` and :mod:`vs_hdrvid.ops.warp`: features
``(B, C, H, W)``, flows ``(B, 2, H, W)`` in pixels.
"""
from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.blocks import pad_to_multiple
from ..models.deform_conv import DeformConvPack
from ..ops.warp import flow_warp

__all__ = ["use_torchvision_deform", "window_attention", "resize_flow_exportable",
           "exportable_pair_spynet"]


def resize_flow_exportable(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """:func:`~vs_hdrvid.ops.warp.resize_flow` (bilinear, pixel-area convention) to another size,
    without turning symbolic sizes into numbers (``int(size)``), so that a graph keeps them dynamic."""
    h, w = flow.shape[-2:]
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    return torch.cat((out[:, :1] * (size[1] / w), out[:, 1:] * (size[0] / h)), 1)


def _pair_spynet_forward(self: nn.Module, ref: Tensor, sup: Tensor) -> Tensor:
    """:meth:`PairSpyNet.forward <vs_hdrvid.models.spynet.PairSpyNet.forward>` with :func:`resize_flow_exportable`."""
    x, crop = pad_to_multiple(torch.cat((ref, sup), 1), 2 ** (self.config.levels - 1))
    pyramid = [x]  # finest last
    for _ in range(self.config.levels - 1):
        pyramid.insert(0, F.avg_pool2d(pyramid[0], 2))
    flow = x.new_zeros(ref.shape[0], 2, *pyramid[0].shape[-2:])
    for level, (module, img) in enumerate(zip(self.basic, pyramid)):
        if level > 0:
            flow = resize_flow_exportable(flow, img.shape[-2:])
        warped = flow_warp(img[:, 3:], flow) if level > 0 else img[:, 3:]
        flow = flow + module(torch.cat((img[:, :3], warped, flow), 1))
    flow = crop(flow)
    if self.config.max_flow > 0:
        flow = flow.clamp(-self.config.max_flow, self.config.max_flow)
    return flow


def window_attention(q: Tensor, k: Tensor, v: Tensor, flow: Tensor, heads: int, window: int,
                     bias: Tensor | None = None, mask: Tensor | None = None, q_proj: nn.Conv2d | None = None) -> Tensor:
    """:func:`~vs_hdrvid.models.fgma.masked_window_attention` as an exportable graph.

    The masked query pixels (all of them when ``mask`` is None) are gathered with ``NonZero`` in one
    go (no chunk loop, no test for an empty mask: one spare query, pixel 0, is always added and its
    result written to a row that is dropped, since onnxruntime fails on an empty gather), and the
    ``window x window`` keys around each flow target (rounded, clamped to the frame; zero outside it)
    are read one window row at a time, so that memory stays at ``window`` rows per masked pixel.

    Shape: ``q, k, v (B, C, H, W)`` (``q`` unprojected when ``q_proj`` is given), ``flow (B, 2, H, W)``,
    ``mask (B, 1, H, W)`` 0/1 -> ``(B, C, H, W)``, zero where the mask is 0.
    """
    b, c, h, w = q.shape
    r, d, n = window // 2, c // heads, b * h * w
    hp, wp = h + 2 * r, w + 2 * r
    kp = F.pad(k, (r, r, r, r)).permute(0, 2, 3, 1).reshape(b * hp * wp, c)
    vp = F.pad(v, (r, r, r, r)).permute(0, 2, 3, 1).reshape(b * hp * wp, c)
    qf = q.permute(0, 2, 3, 1).reshape(n, c)
    fl = flow.permute(0, 2, 3, 1).reshape(n, 2)
    # pixel coordinates as tensors gathered by index: no % or // by a frame size, which a graph
    # with symbolic sizes cannot translate (aten.remainder of a symbolic scalar)
    dev = q.device
    ys = torch.arange(h, device=dev).view(1, h, 1).expand(b, h, w).reshape(n)
    xs = torch.arange(w, device=dev).view(1, 1, w).expand(b, h, w).reshape(n)
    bs = torch.arange(b, device=dev).view(b, 1, 1).expand(b, h, w).reshape(n)
    if mask is None:
        sel = dest = torch.arange(n, device=dev)
    else:
        hits = mask.flatten().nonzero().squeeze(1)
        sel = torch.cat((hits, hits.new_zeros(1)))
        dest = torch.cat((hits, torch.arange(n + 1, device=dev)[n:]))  # the spare row, n
    m = sel.shape[0]
    f = fl[sel]
    last_y, last_x = torch.arange(h, device=dev)[h - 1:], torch.arange(w, device=dev)[w - 1:]  # (1,): H-1, W-1
    cy = torch.clamp(ys[sel] + f[:, 1].round().long(), max=last_y).clamp_min(0)
    cx = torch.clamp(xs[sel] + f[:, 0].round().long(), max=last_x).clamp_min(0)
    base = bs[sel] * (hp * wp) + cy * wp + cx  # (M,): window top-left in the padded map
    qs = qf[sel]
    if q_proj is not None:
        qs = F.linear(qs, q_proj.weight.reshape(c, c), q_proj.bias)
    qs = qs.reshape(m, heads, d)
    cols = torch.arange(window, device=q.device)
    rows = [base[:, None] + (i * wp + cols)[None] for i in range(window)]  # (M, window) each
    logits = torch.cat([torch.einsum("mhd,mkhd->mhk", qs, kp[idx].reshape(m, window, heads, d)) for idx in rows],
                       -1) / math.sqrt(d)  # (M, heads, K)
    if bias is not None:
        logits = logits + bias[None]
    att = logits.softmax(-1)
    out = sum(torch.einsum("mhk,mkhd->mhd", att[..., i * window:(i + 1) * window], vp[idx].reshape(m, window, heads, d))
              for i, idx in enumerate(rows)).reshape(m, c)
    if mask is not None:
        out = q.new_zeros(n + 1, c).index_copy(0, dest, out)[:n]
    return out.reshape(b, h, w, c).permute(0, 3, 1, 2)


def _torchvision_deform_forward(self: DeformConvPack, x: Tensor, guide: Tensor) -> Tensor:
    from torchvision.ops import deform_conv2d

    o1, o2, mask = self.offset_mask(guide).chunk(3, dim=1)
    offset = torch.cat((o1, o2), dim=1)
    return deform_conv2d(x, offset, self.weight, self.bias, padding=self.k // 2, mask=mask.sigmoid())


def use_torchvision_deform(model: nn.Module) -> nn.Module:
    """Make every :class:`DeformConvPack` of ``model`` call ``torchvision.ops.deform_conv2d``, which
    :func:`vs_hdrvid.export.onnx.export_graph` translates to ONNX ``DeformConv`` (on this instance:
    copy the model first to keep the original)."""
    for mod in model.modules():
        if isinstance(mod, DeformConvPack):
            mod.forward = types.MethodType(_torchvision_deform_forward, mod)
    return model


def exportable_pair_spynet(flownet: nn.Module) -> nn.Module:
    """Make the :class:`~vs_hdrvid.models.spynet.PairSpyNet` ``flownet`` resize its flows with
    :func:`resize_flow_exportable` (on this instance: copy the model first to keep the original)."""
    flownet.forward = types.MethodType(_pair_spynet_forward, flownet)
    return flownet
