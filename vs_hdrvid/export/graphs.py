"""The networks as ONNX-exportable graphs: one packed input of planes, the HDR out.

vs-mlrt (``core.ort.Model``, ``core.ov.Model``, ``core.trt.Model``) runs a network of exactly one
input ``(1, C, H, W)``, the planes of the clips it is given stacked in order, and one output of 1 or
3 planes. Each graph here wraps a loaded torch network (sharing its parameters), unpacks such an
input into the arguments of the network's ``forward`` exactly as the node does, and returns the
HDR ``(1, 3, H, W)`` (``outputs="all"``: every field of the network's output, for
:class:`~vs_hdrvid.export.runtime.OnnxNetwork`).

Per-frame exposures, which a plane-only interface cannot pass as scalars, come as one constant
plane per window frame (a ``std.BlankClip`` in a script); the graph reads their top-left pixel.
The LDR frames are made inside the graph from the linear radiance (``radiance_to_ldr``), as the
nodes make them, so a script feeds the clips that ``hv.linearize`` and ``hv.classical_flow`` give.

Where torch.onnx cannot express a module as written, the graph computes the same values another way
(the parity check of :mod:`vs_hdrvid.export.onnx` compares them with the module's own forward):

- RefineNet's modulated deformable convolution (``torchvision.ops.deform_conv2d``) has no ONNX
  translation in torch.onnx. ``deform="op"`` emits ONNX's ``DeformConv`` (opset 19; onnxruntime's
  CPU provider runs it, OpenVINO's ONNX reader has no rule for it), ``deform="grid"`` the same
  arithmetic as nine ``GridSample`` taps and 1x1 convolutions (:func:`deform_conv_grid`), which
  every runtime runs.
- DeAltHDR's masked attention gathers the masked pixels (``nonzero``, a data-dependent loop) and
  chooses each frame's encoder by its exposure (a data-dependent branch). The graph computes the
  window attention for every pixel and multiplies it by the mask (:func:`dense_window_attention`,
  equal where the mask is set and zero elsewhere, as the module's), and is built for one pattern
  of short and long frames in the window and one sensitivity ``s``: both are fixed per graph.

Convention: planes in the order of :func:`layout`; frames in time order, reference at the centre;
flow clips RGBS (u, v, confidence) from the reference to each neighbour, neighbours in time order.
"""
from __future__ import annotations

import math
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.blocks import DeformConvPack, pad_to_multiple, radiance_to_ldr
from ..ops.metrics import MU, mu_law
from ..ops.warp import flow_warp, resize_flow

__all__ = ["KINDS", "DEFORMS", "Plane", "layout", "multiple_of", "build_graph", "deform_conv_grid",
           "dense_window_attention", "output_names"]

KINDS = ("coarse", "refine", "dealthdr")
DEFORMS = ("grid", "op")


@dataclass(frozen=True)
class Plane:
    """A group of input planes: ``name``, its first plane and its number of planes."""

    name: str
    start: int
    count: int

    @property
    def stop(self) -> int:
        return self.start + self.count


def _window(model: nn.Module, kind: str) -> tuple[int, int]:
    """``(T, K)``: frames of the window and neighbours with a flow clip (0 when none)."""
    if kind == "coarse":
        t = model.window
        return t, (t - 1 if model.needs_init_flows else 0)
    if kind == "refine":
        return model.config.num_frames, 0
    return model.config.frames, 0


def layout(model: nn.Module, kind: str, flows: bool = False) -> list[Plane]:
    """The packed input of ``model``'s graph, plane group by plane group.

    - coarse: ``radiance`` (3 per frame), ``flow`` (u, v, confidence per neighbour; blend="merge"
      only), ``ev`` (1 per frame).
    - refine: ``coarse_hdr`` (3 per frame: CoarseNet's output of each frame of the window),
      ``radiance`` (3 per frame), ``ev``.
    - dealthdr: ``radiance``, with ``flows`` also ``flow_fwd`` and ``flow_bwd`` (u, v, unused
      third plane per neighbour: the flow clips reference -> neighbour, and neighbour -> reference
      shifted onto the reference), ``ev``.
    """
    t, k = _window(model, kind)
    groups = [("coarse_hdr", 3 * t)] if kind == "refine" else []
    groups.append(("radiance", 3 * t))
    if k:
        groups.append(("flow", 3 * k))
    if kind == "dealthdr" and flows:
        groups += [("flow_fwd", 3 * (t - 1)), ("flow_bwd", 3 * (t - 1))]
    groups.append(("ev", t))
    planes, start = [], 0
    for name, count in groups:
        planes.append(Plane(name, start, count))
        start += count
    return planes


def multiple_of(model: nn.Module, kind: str) -> int:
    """Frame sides the graph takes without padding (``--dynamic`` graphs take only these)."""
    if kind == "coarse":
        flow = 2 ** (model.config.flow.levels - 1) if model.flownet is not None else 1
        return math.lcm(flow, model.weightnet.multiple)
    if kind == "refine":
        return 8
    return model.multiple


def output_names(kind: str, outputs: str) -> list[str]:
    """The graph's output names: ``["output"]`` (the HDR) or every field of the network's output."""
    if outputs == "hdr":
        return ["output"]
    return {"coarse": ["hdr", "flows", "warped", "weights", "mask"], "refine": ["hdr", "refined", "mask"],
            "dealthdr": ["hdr", "attention_ratio", "flows"]}[kind]


def _frames(x: Tensor, plane: Plane, per: int) -> Tensor:
    """Planes ``(1, C, H, W)`` -> ``(1, count / per, per, H, W)``."""
    part = x[:, plane.start:plane.stop]
    return part.reshape(x.shape[0], plane.count // per, per, x.shape[-2], x.shape[-1])


class _Graph(nn.Module):
    """Unpacks the planes; subclasses call the network."""

    def __init__(self, model: nn.Module, kind: str, outputs: str, flows: bool = False) -> None:
        super().__init__()
        if outputs not in ("hdr", "all"):
            raise ValueError(f"outputs must be 'hdr' or 'all', got {outputs!r}")
        self.net, self.kind, self.outputs = model, kind, outputs
        self.planes = {p.name: p for p in layout(model, kind, flows)}
        self.channels = sum(p.count for p in self.planes.values())
        self.eval()

    def unpack(self, x: Tensor, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(radiance (1, T, 3, H, W), ldr (1, T, 3, H, W), evs (1, T))``."""
        ev = self.planes["ev"]
        evs = x[:, ev.start:ev.stop, 0, 0]  # (1, T): the planes are constant
        lin = _frames(x, self.planes["radiance"], 3)
        ldr = radiance_to_ldr(lin[0], evs[0], gamma)[None]
        return lin, ldr, evs

    def module_args(self, x: Tensor) -> tuple[tuple, dict]:
        """The arguments of the network's ``forward`` that the planes ``x`` stand for."""
        raise NotImplementedError

    def result(self, out) -> Tensor | tuple[Tensor, ...]:
        """The graph's outputs from the network's output."""
        if self.outputs == "hdr":
            return out.hdr
        if self.kind == "dealthdr":
            return out.hdr, torch.as_tensor(out.attention_ratio, dtype=out.hdr.dtype), out.flows
        return tuple(out)

    def reference(self, model: nn.Module, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        """What ``model``'s own forward gives for the planes ``x``, in the graph's outputs."""
        args, kwargs = self.module_args(x)
        return self.result(model(*args, **kwargs))

    def forward(self, x: Tensor):
        args, kwargs = self.module_args(x)
        return self.result(self.net(*args, **kwargs))


class CoarseGraph(_Graph):
    def module_args(self, x: Tensor) -> tuple[tuple, dict]:
        lin, ldr, evs = self.unpack(x, self.net.config.gamma)
        if not self.net.needs_init_flows:
            return (ldr, evs), {}
        flow = _frames(x, self.planes["flow"], 3)  # (1, K, 3, H, W)
        return (ldr, evs, flow[:, :, :2], flow[:, :, 2:3], lin), {}


class RefineGraph(_Graph):
    def module_args(self, x: Tensor) -> tuple[tuple, dict]:
        _, ldr, evs = self.unpack(x, 2.2)
        return (_frames(x, self.planes["coarse_hdr"], 3), ldr, evs), {}


class DeAltHDRGraph(_Graph):
    """:meth:`DeAltHDR.forward <vs_hdrvid.models.dealthdr.DeAltHDR.forward>` with a fixed pattern of
    short frames ``short`` (one bool per window frame) and sensitivity ``s``."""

    def __init__(self, model: nn.Module, outputs: str, short: tuple[bool, ...], s: float,
                 flows: bool = False) -> None:
        super().__init__(model, "dealthdr", outputs, flows)
        if len(short) != model.config.frames or not (s >= 0):
            raise ValueError(f"DeAltHDRGraph: short needs {model.config.frames} entries and s >= 0, "
                             f"got {short}, {s}")
        self.short, self.s, self.flows = tuple(bool(v) for v in short), float(s), flows

    def _encode(self, x: Tensor) -> list[Tensor]:
        """Each frame through the encoder of its exposure (the pattern is fixed per graph)."""
        net, b, t = self.net, x.shape[0], x.shape[1]
        flat = x.flatten(0, 1)
        groups = [(net.enc_short, [i for i in range(t) if self.short[i]]),
                  (net.enc_long, [i for i in range(t) if not self.short[i]])]
        if not net.config.dual_encoders:
            groups = [(net.enc_short, list(range(t)))]
        parts, order = [], []
        for enc, idx in groups:
            if idx:
                parts.append(enc(flat[idx]))
                order += idx
        back = [order.index(i) for i in range(t)]
        return [torch.cat([p[lvl] for p in parts])[back].unflatten(0, (b, t)) for lvl in range(4)]

    def _given_flows(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        if not self.flows:
            return None
        return (_frames(x, self.planes["flow_fwd"], 3)[:, :, :2], _frames(x, self.planes["flow_bwd"], 3)[:, :, :2])

    def module_args(self, x: Tensor) -> tuple[tuple, dict]:
        _, ldr, evs = self.unpack(x, self.net.config.gamma)
        return (ldr, evs, self.s), {"flows": self._given_flows(x)}

    def forward(self, x: Tensor):
        from ..models.dealthdr import prepare_inputs, window_merge
        from ..models.fgma import consistency_difference, level_mask

        net, cfg, s = self.net, self.net.config, self.s
        _, ldrs, evs = self.unpack(x, cfg.gamma)
        b, t, _, h, w = ldrs.shape
        inp, _ = prepare_inputs(ldrs, evs, cfg.gamma)
        inp, crop = pad_to_multiple(inp, net.multiple)  # (B, T, 6, H', W')
        ci, n = net.center, t - 1
        gam = inp[:, :, 3:]
        given = self._given_flows(x)
        if given is None:
            fwd, bwd = net.estimate_flows(gam)
        else:
            fwd, bwd = (pad_to_multiple(f, net.multiple, mode="replicate")[0] for f in given)
        d = consistency_difference(gam[:, ci].repeat_interleave(n, 0), fwd.flatten(0, 1), bwd.flatten(0, 1))
        feats = self._encode(inp)
        nb = [i for i in range(t) if i != ci]
        masked, total = [], 0

        def align(level: int, cur: Tensor, module: nn.Module) -> Tensor:
            nonlocal total
            size = tuple(cur.shape[-2:])
            mask = level_mask(d, s, size)  # (B*N, 1, h, w)
            fl = resize_flow(fwd.flatten(0, 1), size)
            masked.append(mask.sum())
            total = total + mask.numel()
            nbrs = feats[level][:, nb]
            aligned = _fgma(module.fgma, cur.repeat_interleave(n, 0), nbrs.flatten(0, 1), fl, mask, s)
            return module.fuse(cur, aligned.unflatten(0, (b, n)))

        y = net.middle(align(3, feats[3][:, ci], net.middle_align))
        for i, lvl in enumerate((2, 1, 0)):
            y = net.skip[i](torch.cat((net.up[i](y), feats[lvl][:, ci]), 1))
            y = net.dec[i](align(lvl, y, net.align[i]))
        if cfg.residual_base == "merge":
            ldr_p = pad_to_multiple(ldrs, net.multiple)[0]
            base = mu_law(window_merge(inp[:, :, :3], ldr_p, evs, fwd, d, ci).clamp(0, 1), MU)
        else:
            base = mu_law(inp[:, ci, :3].clamp(0, 1), MU)
        t_out = (base + net.head(y)).clamp(0, 1)
        lin = torch.expm1(t_out * math.log1p(MU)) / MU
        hdr = crop(lin) * torch.exp2(-evs.min(1).values).view(b, 1, 1, 1)
        if self.outputs == "hdr":
            return hdr
        return hdr, torch.stack(masked).sum() / total, crop(fwd)


def _fgma(fgma: nn.Module, cur: Tensor, nbr: Tensor, flow: Tensor, mask: Tensor, s: float) -> Tensor:
    """:class:`~vs_hdrvid.models.fgma.FGMA` with the attention dense and masked (``s = 0``: none)."""
    warped = flow_warp(nbr, flow)
    if s == 0:
        att = torch.zeros_like(cur)
    else:
        att = dense_window_attention(fgma.proj_q(cur), fgma.proj_k(nbr), fgma.proj_v(nbr), flow, fgma.heads,
                                     fgma.window, fgma.bias)
        att = att if math.isinf(s) else att * mask
    return torch.cat((warped, mask, att), dim=1)


def dense_window_attention(q: Tensor, k: Tensor, v: Tensor, flow: Tensor, heads: int, window: int,
                           bias: Tensor | None = None) -> Tensor:
    """:func:`~vs_hdrvid.models.fgma.masked_window_attention` for every pixel, without ``nonzero``.

    Each query attends to the ``window x window`` keys around its flow target (rounded, clamped to
    the frame; keys outside it are zero), one gather per window position, so that memory stays at a
    few feature maps. ``q`` is already projected.

    Shape: ``q, k, v (B, C, H, W)``, ``flow (B, 2, H, W)`` -> ``(B, C, H, W)``.
    """
    b, c, h, w = q.shape
    r, d = window // 2, c // heads
    hp, wp = h + 2 * r, w + 2 * r
    kp = F.pad(k, (r, r, r, r)).permute(0, 2, 3, 1).reshape(b * hp * wp, c)
    vp = F.pad(v, (r, r, r, r)).permute(0, 2, 3, 1).reshape(b * hp * wp, c)
    qs = q.permute(0, 2, 3, 1).reshape(b * h * w, heads, d)
    ys = torch.arange(h, device=q.device).view(1, h, 1)
    xs = torch.arange(w, device=q.device).view(1, 1, w)
    cy = (ys + flow[:, 1].round().long()).clamp(0, h - 1)  # (B, H, W)
    cx = (xs + flow[:, 0].round().long()).clamp(0, w - 1)
    base = (torch.arange(b, device=q.device).view(b, 1, 1) * (hp * wp) + cy * wp + cx).reshape(-1)
    offsets = [i * wp + j for i in range(window) for j in range(window)]
    logits = torch.stack([(qs * kp[base + o].reshape(-1, heads, d)).sum(-1) for o in offsets], -1) / math.sqrt(d)
    if bias is not None:
        logits = logits + bias[None]
    att = logits.softmax(-1)  # (B*H*W, heads, K)
    out = sum(att[..., j, None] * vp[base + o].reshape(-1, heads, d) for j, o in enumerate(offsets))
    return out.reshape(b, h, w, c).permute(0, 3, 1, 2)


def deform_conv_grid(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor,
                     padding: int) -> Tensor:
    """``torchvision.ops.deform_conv2d`` (stride 1, dilation 1, one weight group) from ``grid_sample``.

    Each kernel tap samples its offset group's channels bilinearly at ``p - padding + tap + offset``
    (zero outside the frame, as torchvision's kernel), is multiplied by its mask and goes through
    that tap's slice of the weight as a 1x1 convolution; the taps are summed.

    Shape: ``x (B, C, H, W)``, ``offset (B, 2*G*k*k, H, W)`` (per group and tap: dy, dx),
    ``weight (O, C, k, k)``, ``mask (B, G*k*k, H, W)`` -> ``(B, O, H, W)``.
    """
    b, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    taps = kh * kw
    g = offset.shape[1] // (2 * taps)
    off = offset.reshape(b, g, taps, 2, h, w)
    m = mask.reshape(b, g, taps, 1, h, w)
    xg = x.reshape(b * g, c // g, h, w)
    ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    sx, sy = 2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)
    out = None
    for tap in range(taps):
        i, j = divmod(tap, kw)
        py = ys + (i - padding) + off[:, :, tap, 0]  # (B, G, H, W)
        px = xs + (j - padding) + off[:, :, tap, 1]
        grid = torch.stack((px * sx - 1, py * sy - 1), -1).reshape(b * g, h, w, 2)
        sampled = F.grid_sample(xg, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        sampled = (sampled.reshape(b, g, c // g, h, w) * m[:, :, tap]).reshape(b, c, h, w)
        term = F.conv2d(sampled, weight[:, :, i:i + 1, j:j + 1])
        out = term if out is None else out + term
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _grid_deform_forward(self: DeformConvPack, x: Tensor, guide: Tensor) -> Tensor:
    o1, o2, mask = self.offset_mask(guide).chunk(3, dim=1)
    offset = torch.cat((o1, o2), dim=1)
    return deform_conv_grid(x, offset, self.weight, self.bias, mask.sigmoid(), self.k // 2)


def use_grid_deform(model: nn.Module) -> nn.Module:
    """Make every :class:`DeformConvPack` of ``model`` compute through :func:`deform_conv_grid`
    (on this instance: copy the model first to keep the original)."""
    for mod in model.modules():
        if isinstance(mod, DeformConvPack):
            mod.forward = types.MethodType(_grid_deform_forward, mod)
    return model


def build_graph(model: nn.Module, kind: str, outputs: str = "hdr", deform: str = "grid",
                short: tuple[bool, ...] | None = None, s: float = 15.0, flows: bool = False) -> nn.Module:
    """The exportable graph of ``model`` (a CoarseNet, RefineNet or DeAltHDR, left unchanged).

    Args:
        model: the loaded network.
        kind: ``"coarse"``, ``"refine"`` or ``"dealthdr"``.
        outputs: ``"hdr"`` (one output, vs-mlrt's form) or ``"all"`` (every field of the output).
        deform: RefineNet only: ``"grid"`` (:func:`deform_conv_grid`) or ``"op"`` (ONNX DeformConv).
        short: DeAltHDR only: which window frames are short exposures (default: the centre's
            exposure alternating, the centre short).
        s: DeAltHDR only: the FGMA sensitivity the graph is built for.
        flows: DeAltHDR only: the flows come as input planes instead of from its SpyNet.

    Raises:
        ValueError: an unknown kind, outputs or deform.
    """
    import copy

    if kind not in KINDS or deform not in DEFORMS:
        raise ValueError(f"kind must be one of {KINDS} and deform one of {DEFORMS}, got {kind!r}, {deform!r}")
    model = copy.deepcopy(model).eval().requires_grad_(False)
    if kind == "coarse":
        return CoarseGraph(model, kind, outputs)
    if kind == "refine":
        return RefineGraph(use_grid_deform(model) if deform == "grid" else model, kind, outputs)
    t = model.config.frames
    short = tuple(i % 2 == t // 2 % 2 for i in range(t)) if short is None else tuple(short)
    return DeAltHDRGraph(model, outputs, short, s, flows)
