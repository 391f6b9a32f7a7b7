"""Flow-guided masked attention alignment (DeAltHDR, section 3.3, equations 4-8).

1. :func:`consistency_difference` (eqs. 4-5): warp the current frame ``L_t`` into the neighbour by
   the flow ``n -> t`` and back by ``t -> n``; ``D = |L_{t->n->t} - L_t|`` (mean over channels)
   is large where the two flows disagree: occlusions and flow failures.
2. :func:`occlusion_mask` (eq. 6): ``M = s * D / 255 > 0.5`` for ``D`` on the 8-bit scale, i.e.
   ``s * D > 0.5`` for ``D`` in [0, 1]. ``s = 0`` marks nothing (flow only), ``s = inf``
   everything (attention only); between, ``s`` sets the attention ratio at inference.
3. :class:`FGMA` (eqs. 7-8): flow-warped neighbour features, plus cross-attention for the masked
   query pixels only. The masked positions are gathered, so the attention costs
   ``O(masked pixels)``: that is what makes ``s`` a quality/cost dial. Output
   ``concat(F_flow, M, F_att)`` (``F_att = 0`` where the mask is 0).

``residual=True`` (the design of the shipped weights and the one ``train dealthdr`` trains) reads the
paper's "attention within the masked regions, flow-based warping for the rest" literally: where the mask is set ``F_flow`` is zeroed
and ``F_att = F_flow + O(attention)``, an attention over the window of the *warped* neighbour
around the query (its centre is ``F_flow`` itself) through a zero-initialised output projection
``O``. With eq. 8's ``F_flow`` kept everywhere, the fusion never needed ``F_att`` and the branch got
0.025% of the gradient (README); here the masked pixels can only be reached through it, and at
initialisation it is the flow warp, so every ``s`` starts as flow only.

Where the paper is not specific this implementation chooses (and says so): each masked query
attends to a ``window x window`` neighbourhood of the neighbour's key/value map centred on its
flow-displaced position (a global attention over all neighbour pixels is quadratic in the frame
size and cannot run at 1080p), with a learned relative-position bias per head; the mask of a
feature level is the difference map averaged down to that level, then thresholded.

Convention: features ``(B, C, H, W)``; flows ``(B, 2, H, W)`` in pixels, the flow "from a to b"
backward-warps b onto a (:func:`vs_hdrvid.ops.warp.flow_warp`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vs_hdrvid.ops.warp import flow_warp

__all__ = ["consistency_difference", "occlusion_mask", "level_mask", "masked_window_attention", "FGMA"]


def consistency_difference(l_t: Tensor, flow_t2n: Tensor, flow_n2t: Tensor) -> Tensor:
    """Forward-backward warping difference ``D`` of equations 4-5, averaged over channels.

    Args:
        l_t: the current frame (gamma-encoded, exposure-normalised LDR in [0, 1]).
        flow_t2n: ``O_{t->n}`` (warps the neighbour onto t).
        flow_n2t: ``O_{n->t}`` (warps t onto the neighbour).

    Shape: ``l_t (B, C, H, W)``, flows ``(B, 2, H, W)`` -> ``(B, 1, H, W)``.
    """
    to_n = flow_warp(l_t, flow_n2t)           # L_{t->n}: t seen from the neighbour
    back = flow_warp(to_n, flow_t2n)          # L_{t->n->t}
    return (back - l_t).abs().mean(1, keepdim=True)


def occlusion_mask(d: Tensor, s: float) -> Tensor:
    """Equation 6 with ``D`` in [0, 1]: ``M = s * D > 0.5`` as float (``s = inf``: all ones).

    Example:
        >>> occlusion_mask(torch.tensor([0.0, 0.02, 0.1]), 15.0).tolist()
        [0.0, 0.0, 1.0]
    """
    if math.isinf(s):
        return torch.ones_like(d)
    return (s * d > 0.5).to(d.dtype)


def level_mask(d: Tensor, s: float, size: tuple[int, int]) -> Tensor:
    """The occlusion mask of a feature level: ``D`` area-averaged to ``size``, then eq. 6."""
    if tuple(d.shape[-2:]) != tuple(size):
        d = F.adaptive_avg_pool2d(d, size)
    return occlusion_mask(d, s)


def _window_offsets(window: int, row: int, device: torch.device) -> Tensor:
    r = torch.arange(window, device=device)
    return (r[:, None] * row + r[None, :]).flatten()  # (K,), top-left based


def masked_window_attention(q: Tensor, k: Tensor, v: Tensor, flow: Tensor | None, mask: Tensor, heads: int,
                            window: int, bias: Tensor | None = None, chunk_elems: int = 1 << 23,
                            q_proj: nn.Conv2d | None = None, o_proj: nn.Conv2d | None = None) -> Tensor:
    """Cross-attention of the masked query pixels onto a window of the neighbour around their flow target.

    Only the positions where ``mask`` is set are gathered and computed; the output is zero
    elsewhere. Keys outside the frame are zero-padded.

    Args:
        q: projected queries of the current frame.
        k, v: projected keys and values of the neighbour.
        flow: ``t -> n`` flow at this resolution (the window centre is ``p + flow(p)``, rounded), or
            None: centred on ``p`` (keys and values of an already warped neighbour).
        mask: ``(B, 1, H, W)`` 0/1.
        heads: attention heads (``C`` must divide).
        window: odd side of the key window.
        bias: ``(heads, window**2)`` relative-position bias added to the logits, or None.
        chunk_elems: bound on the gathered key elements per chunk (memory).
        q_proj: a 1x1 convolution applied to the gathered query pixels only (``q`` is then the
            unprojected feature map), so that the query projection also costs O(masked pixels).
        o_proj: a bias-free 1x1 convolution applied to the attention's output rows, likewise.

    Shape: ``q, k, v (B, C, H, W)`` -> ``(B, C, H, W)``.
    """
    b, c, h, w = q.shape
    out = q.new_zeros(b * h * w, c)
    idx = mask.flatten().nonzero().squeeze(1)  # positions in (B, H, W) order
    if idx.numel() == 0:
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2)
    r = window // 2
    hp, wp = h + 2 * r, w + 2 * r
    kp = F.pad(k, (r, r, r, r)).permute(0, 2, 3, 1).reshape(b * hp * wp, c)
    vp = F.pad(v, (r, r, r, r)).permute(0, 2, 3, 1).reshape(b * hp * wp, c)
    qf = q.permute(0, 2, 3, 1).reshape(b * h * w, c)
    fl = None if flow is None else flow.permute(0, 2, 3, 1).reshape(b * h * w, 2)
    offs = _window_offsets(window, wp, q.device)
    d = c // heads
    step = max(1, chunk_elems // (window * window * c))
    for a in range(0, idx.numel(), step):
        sel = idx[a:a + step]
        bi, pix = sel // (h * w), sel % (h * w)
        y, x = pix // w, pix % w
        if fl is None:
            cy, cx = y, x
        else:
            f = fl[sel].detach()
            cy = (y + f[:, 1].round().long()).clamp(0, h - 1)
            cx = (x + f[:, 0].round().long()).clamp(0, w - 1)
        gather = (bi * (hp * wp) + cy * wp + cx)[:, None] + offs[None]  # (M, K): window top-left = centre - r (padded)
        kw = kp[gather].reshape(-1, window * window, heads, d)  # (M, K, h, d)
        vw = vp[gather].reshape(-1, window * window, heads, d)
        qs = qf[sel]
        if q_proj is not None:
            qs = F.linear(qs, q_proj.weight.reshape(c, c), q_proj.bias)
        qs = qs.reshape(-1, heads, d)
        logits = torch.einsum("mhd,mkhd->mhk", qs, kw) / math.sqrt(d)
        if bias is not None:
            logits = logits + bias[None]
        att = torch.einsum("mhk,mkhd->mhd", logits.softmax(-1), vw).reshape(-1, c)
        if o_proj is not None:
            att = F.linear(att, o_proj.weight.reshape(c, c))
        out = out.index_copy(0, sel, att)
    return out.reshape(b, h, w, c).permute(0, 3, 1, 2)


class FGMA(nn.Module):
    """Flow-guided masked attention alignment of one neighbour's features (equations 7-8).

    Args:
        dim: feature channels.
        heads: attention heads.
        window: odd side of the key window around the flow target.
        residual: the residual design of the module docstring (``F_flow`` zeroed where masked,
            ``F_att = F_flow + O(attention over the warped neighbour)``); False: eq. 8 as written.

    Shape:
        ``cur (B, C, H, W)`` (``F_t^in``), ``nbr (B, C, H, W)`` (``F_n``), ``flow (B, 2, H, W)``
        (``t -> n`` at this resolution), ``mask (B, 1, H, W)`` -> ``(B, 2C + 1, H, W)``.
    """

    def __init__(self, dim: int, heads: int, window: int = 7, residual: bool = False) -> None:
        super().__init__()
        if window % 2 == 0 or dim % heads:
            raise ValueError(f"FGMA: window must be odd and dim divisible by heads, got {window}, {dim}/{heads}")
        self.heads, self.window, self.residual = heads, window, residual
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.bias = nn.Parameter(torch.zeros(heads, window * window))
        if residual:
            self.proj_o = nn.Conv2d(dim, dim, 1, bias=False)
            nn.init.zeros_(self.proj_o.weight)

    def forward(self, cur: Tensor, nbr: Tensor, flow: Tensor, mask: Tensor) -> Tensor:
        warped = flow_warp(nbr, flow)
        if not mask.any():
            return self.compose(warped, mask, torch.zeros_like(cur))
        if self.residual:
            att = masked_window_attention(cur, self.proj_k(warped), self.proj_v(warped), None, mask, self.heads,
                                          self.window, self.bias, q_proj=self.proj_q, o_proj=self.proj_o)
        else:
            att = masked_window_attention(cur, self.proj_k(nbr), self.proj_v(nbr), flow, mask,
                                          self.heads, self.window, self.bias, q_proj=self.proj_q)
        return self.compose(warped, mask, att)

    def compose(self, warped: Tensor, mask: Tensor, att: Tensor) -> Tensor:
        """``concat(F_flow, M, F_att)`` from the warped features and the attention's output (zero
        where the mask is 0): as they are, or with the residual design's split by the mask."""
        if not self.residual:
            return torch.cat((warped, mask, att), dim=1)
        return torch.cat((warped * (1 - mask), mask, warped * mask + att), dim=1)
