"""Building blocks of DeAltHDR's U-Net (Appendix C, Figure B), after Turtle (NeurIPS 2024).

* :class:`ReducedAttnBlock`: encoder levels 1-2. ReducedAttn (1x1 expand, depthwise 3x3,
  1x1 project) then FFW (1x1, GELU, 1x1), each pre-normalised and residual.
* :class:`ChannelBlock`: encoder level 3, the middle and the decoder. Channel attention
  (transposed, Restormer-style: the attention map is ``C x C`` per head, so its cost is linear in
  the pixel count) then the gated FFW (1x1 expand to two branches, depthwise 3x3 on both,
  ``GELU(a) * b``, 1x1 project).
* :class:`ChannelCrossFusion`: the history-router style fusion. Queries come from the current
  frame, keys and values from the aligned neighbours; attention runs over channels, so each
  output channel is a learned mixture of the neighbours' channels weighted by their relevance to
  the current frame.

Convention: feature maps ``(B, C, H, W)``; neighbour stacks ``(B, N, C, H, W)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LayerNorm2d", "ReducedAttnBlock", "ChannelBlock", "ChannelCrossFusion", "Downsample", "Upsample"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel (with affine parameters)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return (x - mu) / torch.sqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


class _FFW(nn.Module):
    """Standard feed-forward: 1x1, GELU, 1x1 (Figure B(e))."""

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.body = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class _ReducedAttn(nn.Module):
    """1x1 expand, depthwise 3x3 spatial mixing, 1x1 back (Figure B(f))."""

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.body = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
                                  nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class _GatedFFW(nn.Module):
    """Gated FFW (Figure B(g)): two depthwise-convolved branches, ``GELU(a) * b``, 1x1 project."""

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.expand = nn.Conv2d(dim, 2 * hidden, 1)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.project = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.dw(self.expand(x)).chunk(2, dim=1)
        return self.project(F.gelu(a) * b)


def _channel_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, temperature: Tensor) -> Tensor:
    """Transposed attention: per head, ``softmax(norm(q) norm(k)^T * t) v`` over channels.

    Shape: ``q (B, C, HW)``, ``k, v (B, Ck, HW)`` -> ``(B, C, HW)``.
    """
    b, c, n = q.shape
    q = F.normalize(q.reshape(b, heads, c // heads, n), dim=-1)
    k = F.normalize(k.reshape(b, heads, -1, n), dim=-1)
    v = v.reshape(b, heads, -1, n)
    attn = (q @ k.transpose(-2, -1)) * temperature.view(1, heads, 1, 1)  # (B, h, C/h, Ck/h)
    return (attn.softmax(-1) @ v).reshape(b, c, n)


class _ChannelAttention(nn.Module):
    """Multi-head transposed self-attention with depthwise-convolved q, k, v (Restormer MDTA)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.dw = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim)
        self.project = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.dw(self.qkv(x)).flatten(2).chunk(3, dim=1)
        return self.project(_channel_attention(q, k, v, self.heads, self.temperature).reshape(b, c, h, w))


class ReducedAttnBlock(nn.Module):
    """Encoder block of levels 1-2: ``x + RA(LN(x))``, then ``x + FFW(LN(x))``."""

    def __init__(self, dim: int, expansion: float = 2.0) -> None:
        super().__init__()
        self.norm1, self.attn = LayerNorm2d(dim), _ReducedAttn(dim, expansion)
        self.norm2, self.ffw = LayerNorm2d(dim), _FFW(dim, expansion)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffw(self.norm2(x))


class ChannelBlock(nn.Module):
    """Level-3, middle and decoder block: ``x + CA(LN(x))``, then ``x + GFFW(LN(x))``."""

    def __init__(self, dim: int, heads: int, expansion: float = 2.0) -> None:
        super().__init__()
        self.norm1, self.attn = LayerNorm2d(dim), _ChannelAttention(dim, heads)
        self.norm2, self.ffw = LayerNorm2d(dim), _GatedFFW(dim, expansion)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffw(self.norm2(x))


class ChannelCrossFusion(nn.Module):
    """Fusion of the aligned neighbours into the current frame (history-router style).

    Each neighbour's aligned feature (``in_dim`` channels: FGMA's ``concat(F_flow, M, F_att)``)
    is reduced to ``dim`` channels; queries from the current frame attend over the channels of
    all neighbours together, and the result is added to the current frame and passed through a
    gated FFW.

    Shape: ``cur (B, dim, H, W)``, ``nbrs (B, N, in_dim, H, W)`` -> ``(B, dim, H, W)``.
    """

    def __init__(self, dim: int, in_dim: int, heads: int, expansion: float = 2.0) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads))
        self.reduce = nn.Conv2d(in_dim, dim, 1)
        self.norm_q, self.norm_kv = LayerNorm2d(dim), LayerNorm2d(dim)
        self.q = nn.Conv2d(dim, dim, 1)
        self.kv = nn.Conv2d(dim, 2 * dim, 1)
        self.project = nn.Conv2d(dim, dim, 1)
        self.norm2, self.ffw = LayerNorm2d(dim), _GatedFFW(dim, expansion)

    def forward(self, cur: Tensor, nbrs: Tensor) -> Tensor:
        b, n, _, h, w = nbrs.shape
        c = cur.shape[1]
        kv = self.kv(self.norm_kv(self.reduce(nbrs.flatten(0, 1))))  # (B*N, 2C, H, W)
        k, v = kv.reshape(b, n, 2, self.heads, c // self.heads, h * w).unbind(2)  # (B, N, h, C/h, HW)
        # keys/values of all neighbours side by side per head: (B, h * N * C/h, HW)
        k = k.transpose(1, 2).reshape(b, -1, h * w)
        v = v.transpose(1, 2).reshape(b, -1, h * w)
        q = self.q(self.norm_q(cur)).flatten(2)
        x = cur + self.project(_channel_attention(q, k, v, self.heads, self.temperature).reshape(b, c, h, w))
        return x + self.ffw(self.norm2(x))


class Downsample(nn.Module):
    """Halve the resolution, double the channels (3x3 conv then pixel-unshuffle)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1), nn.PixelUnshuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution, halve the channels (3x3 conv then pixel-shuffle)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim * 2, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)
