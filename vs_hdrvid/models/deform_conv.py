"""Modulated deformable convolution (DCNv2, as in EDVR's PCD alignment) without custom kernels.

The arithmetic of ``torchvision.ops.deform_conv2d`` (the same bilinear taps, zero outside the
frame; equal up to rounding, ``tests/models/test_deform_conv.py``) by ``grid_sample`` and a
matrix product, in two schedules of the same sums:

* :func:`deform_conv2d` whole-frame: every tap of every offset group sampled in one
  ``grid_sample``, one matrix product. Differentiable by autograd, traceable (ONNX export,
  ``torch.compile``): the training and export path.
* in bands of rows (:func:`_deform_conv2d_bands`), which :func:`deform_conv2d` takes in CPU
  inference, eagerly also inside a compiled network (inductor's own code for the sampling ran
  RefineNet 2.5x slower at 1080p): the sampled columns of a few rows (a few MiB) are weighted by
  their mask, written once in the matrix product's dtype and multiplied while they are in the
  cache, into a channels-last output. The whole-frame columns are 9x the input (1.2 GB in
  float32 per call at 1080p); writing, weighting, casting and reading them again from memory
  made the deformable convolutions half of RefineNet's time on a 2-core CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DeformConvPack", "deform_conv2d", "float_nchw", "BAND_BYTES"]

#: Bytes of float32 sampled columns per band of the CPU inference path (about an L2 cache's worth).
BAND_BYTES = 2 << 20


class DeformConvPack(nn.Module):
    """Modulated deformable 3x3 convolution whose offsets and mask come from a guide feature.

    Section 3.3, equations 2-3: ``F~ = DConv(F, dp)`` with ``dp`` predicted from ``[F, F_ref]``
    (here from the PCD offset feature ``guide``). The offset/mask convolution starts at zero,
    so the pack starts as a plain convolution with mask 0.5.

    Shape: ``x (B, C_in, H, W)``, ``guide (B, C_guide, H, W)`` -> ``(B, C_out, H, W)``.
    """

    def __init__(self, c_in: int, c_out: int, c_guide: int, groups: int = 8, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.weight = nn.Parameter(torch.empty(c_out, c_in, k, k))
        self.bias = nn.Parameter(torch.zeros(c_out))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.offset_mask = nn.Conv2d(c_guide, groups * 3 * k * k, 3, 1, 1)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: Tensor, guide: Tensor) -> Tensor:
        om = self.offset_mask(guide)  # (B, 3*G*k*k, H, W): the offsets (dy, dx), the mask's logits
        if _cpu_inference(x, om, self.weight):  # each band converts and squashes its own rows
            return _deform_conv2d_bands(x, om, self.weight, self.bias, None, self.k // 2)
        om = float_nchw(om)
        n = om.shape[1] * 2 // 3
        return deform_conv2d(x, om[:, :n], self.weight, self.bias, om[:, n:].sigmoid(), self.k // 2)


def float_nchw(x: Tensor) -> Tensor:
    """``x (B, C, H, W)`` as contiguous float32 (NCHW).

    Channels-last memory (a view of it, such as a slice of its channels) is transposed as one
    2-D ``(H*W, C) -> (C, H*W)`` matrix per sample before the cast: torch's CPU copy is 2-3x
    slower at the same transpose as a 4-D strided copy, and a cast after it moves half the bytes
    when ``x`` is bfloat16. Under autograd the plain differentiable copy.
    """
    if x.is_contiguous() or x.stride(1) != 1 or x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()):
        return x.float().contiguous()
    b, c, h, w = x.shape
    out = torch.empty(b, c, h, w, dtype=x.dtype)
    for src, dst in zip(x, out):
        dst.view(c, h * w).copy_(src.permute(1, 2, 0).reshape(h * w, c).t())
    return out.float()


def deform_conv2d(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor,
                  padding: int) -> Tensor:
    """Modulated deformable convolution (stride 1, dilation 1) by ``grid_sample`` and matrix products.

    The sampling positions are computed in float32 (in bfloat16 a position of 1000 pixels would
    be rounded by 4) and the bilinear samples taken in float32; the matrix product runs in the
    dtype of ``x`` (bfloat16 under autocast). Every input is first made float32 NCHW
    (:func:`float_nchw`): from channels-last convolutions each later pass would gather its
    operands with a stride of the channel count (2.2x the time of the whole function at 640x360,
    64 channels). CPU inference (no autograd, not traced for export) runs in bands of rows
    (:func:`_deform_conv2d_bands`; the output is then channels-last), everything else as one
    whole-frame pass.

    Shape: ``x (B, C, H, W)``, ``offset (B, 2*G*k*k, H, W)`` (per offset group and tap: dy, dx),
    ``weight (O, C, k, k)``, ``mask (B, G*k*k, H, W)`` -> ``(B, O, H, W)``.
    """
    if _cpu_inference(x, offset, weight, mask):
        return _deform_conv2d_bands(x, offset, weight, bias, mask, padding)
    b, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    taps = kh * kw
    g = offset.shape[1] // (2 * taps)
    grid = _grid(float_nchw(offset), kh, kw, padding, 0, h, w)  # (B*G, k*k*H, W, 2)
    with torch.autocast(x.device.type, enabled=False):
        cols = F.grid_sample(float_nchw(x).reshape(b * g, c // g, h, w), grid, mode="bilinear",
                             padding_mode="zeros", align_corners=True)  # (B*G, C/G, k*k*H, W)
    cols, m = cols.reshape(b, g, c // g, taps, h, w), float_nchw(mask).reshape(b, g, 1, taps, h, w)
    cols = cols * m if torch.is_grad_enabled() else cols.mul_(m)
    out = torch.matmul(weight.reshape(o, c * taps).to(x.dtype), cols.reshape(b, c * taps, h * w).to(x.dtype))
    out = out.reshape(b, o, h, w)
    return out if bias is None else out + bias.to(out.dtype).view(1, -1, 1, 1)


def _cpu_inference(*tensors: Tensor) -> bool:
    """No autograd graph is built, no exporter traces the call, and it runs on a CPU."""
    if tensors[0].device.type != "cpu" or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _grid(offset: Tensor, kh: int, kw: int, padding: int, y0: int, h: int, w: int, into: bool = False) -> Tensor:
    """``grid_sample``'s grid (align_corners) of every tap of rows ``y0 .. y0 + r`` of ``offset``.

    ``(x + kx + dx) * 2 / (w - 1) - 1`` as ``base_x + dx * 2 / (w - 1)``, written into the grid's
    interleaved (x, y) pairs by two additions with ``into`` (inference), else by a stack
    (differentiable and exportable).

    Shape: ``offset (B, 2*G*k*k, r, W)`` float32, rows ``y0..`` of a frame of ``h x w`` ->
    ``(B*G, k*k*r, W, 2)``.
    """
    b, _, r, _ = offset.shape
    taps = kh * kw
    off = offset.reshape(b, -1, taps, 2, r, w)
    sx, sy = 2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)
    tap = torch.arange(taps, device=offset.device, dtype=torch.float32)
    ky = (torch.div(tap, kw, rounding_mode="floor") - padding).view(1, 1, taps, 1, 1)
    kx = (tap % kw - padding).view(1, 1, taps, 1, 1)
    ys = torch.arange(y0, y0 + r, device=offset.device, dtype=torch.float32).view(1, 1, 1, r, 1)
    xs = torch.arange(w, device=offset.device, dtype=torch.float32).view(1, 1, 1, 1, w)
    base_x, base_y = (xs + kx) * sx - 1, (ys + ky) * sy - 1  # (1, 1, k*k, 1, W), (1, 1, k*k, r, 1)
    if not into:
        grid = torch.stack((base_x + off[:, :, :, 1] * sx, base_y + off[:, :, :, 0] * sy), -1)
        return grid.reshape(-1, taps * r, w, 2)
    grid = torch.empty(b, off.shape[1], taps, r, w, 2, device=offset.device)
    torch.add(base_x, off[:, :, :, 1], alpha=sx, out=grid[..., 0])  # (B, G, k*k, r, W)
    torch.add(base_y, off[:, :, :, 0], alpha=sy, out=grid[..., 1])
    return grid.reshape(-1, taps * r, w, 2)


@torch.compiler.disable  # a graph break: compiled networks run it eagerly (inductor's fused sampling is slower)
def _deform_conv2d_bands(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None,
                         padding: int) -> Tensor:
    """:func:`deform_conv2d` in bands of rows, the output channels-last (``(B, H, W, O)`` memory).

    Per band: its rows of the offsets and the mask made float32 NCHW, the grid, one
    ``grid_sample`` from the whole frame, the mask's weighting written straight in the matrix
    product's dtype, and ``addmm`` of its transposed columns by the weight into the band's rows
    of the output (bias included). ``mask=None``: ``offset`` is :class:`DeformConvPack`'s
    ``(B, 3*G*k*k, H, W)`` offsets and mask logits, in any layout. Inference only.
    """
    b, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    taps = kh * kw
    g = offset.shape[1] // ((3 if mask is None else 2) * taps)  # offset groups
    n = 2 * g * taps  # offset channels (dy, dx per group and tap)
    dtype = x.dtype
    src = float_nchw(x).reshape(b * g, c // g, h, w)
    wmat = weight.reshape(o, c * taps).t().to(dtype)  # (C*k*k, O), rows ordered (group, channel, tap)
    bias = torch.zeros(o, dtype=dtype, device=x.device) if bias is None else bias.to(dtype)
    out = torch.empty(b, h, w, o, dtype=dtype, device=x.device)
    rows = max(1, min(h, BAND_BYTES // (4 * c * taps * w)))
    scratch = torch.empty(b * c * taps * rows * w, dtype=dtype, device=x.device)  # every band's weighted columns
    with torch.autocast(x.device.type, enabled=False):
        for y0 in range(0, h, rows):
            r = min(rows, h - y0)
            band = float_nchw(offset[:, :, y0:y0 + r])
            m = band[:, n:].sigmoid_() if mask is None else float_nchw(mask[:, :, y0:y0 + r])
            grid = _grid(band[:, :n], kh, kw, padding, y0, h, w, into=True)
            cols = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=True)  # (B*G, C/G, k*k*r, W)
            m = m.reshape(b, g, 1, taps, r, w)
            weighted = scratch[:b * c * taps * r * w].view(b, g, c // g, taps, r, w)
            torch.mul(cols.view(b, g, c // g, taps, r, w), m, out=weighted)
            for i in range(b):
                torch.addmm(bias, weighted[i].view(c * taps, r * w).t(), wmat, out=out[i, y0:y0 + r].view(r * w, o))
    return out.permute(0, 3, 1, 2)
