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
- DeAltHDR tests its mask (``if mask.any()``), loops over chunks of the masked pixels and chooses
  each frame's encoder by its exposure (``bool(short.all())``): branches on values, which
  ``torch.export`` refuses. The graph gathers the masked pixels in one go
  (:func:`window_attention`, ``NonZero``: its cost still follows ``s``) and is built for one
  pattern of short and long frames in the window and one sensitivity ``s``, both fixed per graph.

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
from ..ops.warp import flow_warp

__all__ = ["KINDS", "DEFORMS", "Plane", "layout", "multiple_of", "build_graph", "deform_conv_grid",
           "window_attention", "output_names"]

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
            fl = fwd.flatten(0, 1) if level == 0 else _resize_flow(fwd.flatten(0, 1), size)
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


def _resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """:func:`~vs_hdrvid.ops.warp.resize_flow` (bilinear, pixel-area convention) to another size,
    without turning symbolic sizes into numbers (``int(size)``), so that a graph keeps them dynamic."""
    h, w = flow.shape[-2:]
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    return torch.cat((out[:, :1] * (size[1] / w), out[:, 1:] * (size[0] / h)), 1)


def _pair_spynet_forward(self: nn.Module, ref: Tensor, sup: Tensor) -> Tensor:
    """:meth:`PairSpyNet.forward <vs_hdrvid.models.spynet.PairSpyNet.forward>` with :func:`_resize_flow`."""
    x, crop = pad_to_multiple(torch.cat((ref, sup), 1), 2 ** (self.config.levels - 1))
    pyramid = [x]  # finest last
    for _ in range(self.config.levels - 1):
        pyramid.insert(0, F.avg_pool2d(pyramid[0], 2))
    flow = x.new_zeros(ref.shape[0], 2, *pyramid[0].shape[-2:])
    for level, (module, img) in enumerate(zip(self.basic, pyramid)):
        if level > 0:
            flow = _resize_flow(flow, img.shape[-2:])
        warped = flow_warp(img[:, 3:], flow) if level > 0 else img[:, 3:]
        flow = flow + module(torch.cat((img[:, :3], warped, flow), 1))
    flow = crop(flow)
    if self.config.max_flow > 0:
        flow = flow.clamp(-self.config.max_flow, self.config.max_flow)
    return flow


def _fgma(fgma: nn.Module, cur: Tensor, nbr: Tensor, flow: Tensor, mask: Tensor, s: float) -> Tensor:
    """:class:`~vs_hdrvid.models.fgma.FGMA` without data-dependent branches (``s = 0``: no attention,
    ``s = inf``: every pixel, else the masked pixels)."""
    warped = flow_warp(nbr, flow)
    if s == 0:
        att = torch.zeros_like(cur)
    else:
        att = window_attention(cur, fgma.proj_k(nbr), fgma.proj_v(nbr), flow, fgma.heads, fgma.window, fgma.bias,
                               None if math.isinf(s) else mask, fgma.proj_q)
    return torch.cat((warped, mask, att), dim=1)


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
    if mask is None:
        sel = dest = torch.arange(n, device=q.device)
    else:
        hits = mask.flatten().nonzero().squeeze(1)
        sel = torch.cat((hits, hits.new_zeros(1)))
        dest = torch.cat((hits, hits.new_full((1,), n)))
    m = sel.shape[0]
    bi, pix = sel // (h * w), sel % (h * w)
    f = fl[sel]
    cy = (pix // w + f[:, 1].round().long()).clamp(0, h - 1)
    cx = (pix % w + f[:, 0].round().long()).clamp(0, w - 1)
    base = bi * (hp * wp) + cy * wp + cx  # (M,): window top-left in the padded map
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


def deform_conv_grid(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor,
                     padding: int) -> Tensor:
    """``torchvision.ops.deform_conv2d`` (stride 1, dilation 1, one weight group) from ``grid_sample``.

    Every kernel tap samples its offset group's channels bilinearly at ``p - padding + tap + offset``
    (zero outside the frame, as torchvision's kernel), all taps in one ``grid_sample`` (stacked
    along the height), is multiplied by its mask, and one 1x1 convolution of the ``C * k * k``
    samples applies the weight: a graph of a few nodes, holding ``k * k`` feature maps at once.

    Shape: ``x (B, C, H, W)``, ``offset (B, 2*G*k*k, H, W)`` (per group and tap: dy, dx),
    ``weight (O, C, k, k)``, ``mask (B, G*k*k, H, W)`` -> ``(B, O, H, W)``.
    """
    b, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    taps = kh * kw
    g = offset.shape[1] // (2 * taps)
    off = offset.reshape(b, g, taps, 2, h, w)
    tap_y = torch.arange(kh, device=x.device, dtype=x.dtype).repeat_interleave(kw).view(1, 1, taps, 1, 1) - padding
    tap_x = torch.arange(kw, device=x.device, dtype=x.dtype).repeat(kh).view(1, 1, taps, 1, 1) - padding
    py = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, 1, h, 1) + tap_y + off[:, :, :, 0]
    px = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, 1, w) + tap_x + off[:, :, :, 1]
    grid = torch.stack((px * (2.0 / max(w - 1, 1)) - 1, py * (2.0 / max(h - 1, 1)) - 1), -1)  # (B, G, K, H, W, 2)
    sampled = F.grid_sample(x.reshape(b * g, c // g, h, w), grid.reshape(b * g, taps * h, w, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=True)  # (B*G, C/G, K*H, W)
    sampled = sampled.reshape(b, g, c // g, taps, h, w) * mask.reshape(b, g, 1, taps, h, w)
    return F.conv2d(sampled.reshape(b, c * taps, h, w), weight.reshape(o, c * taps, 1, 1), bias)


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
    model.flownet.forward = types.MethodType(_pair_spynet_forward, model.flownet)
    return DeAltHDRGraph(model, outputs, short, s, flows)
