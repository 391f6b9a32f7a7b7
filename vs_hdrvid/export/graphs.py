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

- RefineNet's modulated deformable convolution: ``torchvision.ops.deform_conv2d`` has no ONNX
  translation in torch.onnx. ``deform="grid"`` exports the network's own
  :func:`~vs_hdrvid.models.deform_conv.deform_conv2d` (the same arithmetic as one ``GridSample`` of the
  nine taps and a matrix product), which every runtime runs; ``deform="op"`` calls torchvision's
  and emits ONNX's ``DeformConv`` for it (opset 19; onnxruntime's CPU provider runs it, OpenVINO's
  ONNX reader has no rule for it).
- DeAltHDR tests its mask (``if mask.any()``), loops over chunks of the masked pixels and chooses
  each frame's encoder by its exposure (``bool(short.all())``): branches on values, which
  ``torch.export`` refuses. The graph gathers the masked pixels in one go
  (:func:`~vs_hdrvid.export.rewrites.window_attention`, ``NonZero``: its cost still follows ``s``) and is built for one
  pattern of short and long frames in the window and one sensitivity ``s``, both fixed per graph.

Convention: planes in the order of :func:`layout`; frames in time order, reference at the centre;
flow clips RGBS (u, v, confidence) from the reference to each neighbour, neighbours in time order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.blocks import pad_to_multiple, radiance_to_ldr
from ..ops.warp import flow_warp
from .rewrites import (exportable_pair_spynet, resize_flow_exportable, use_torchvision_deform,
                       window_attention)

__all__ = ["KINDS", "DEFORMS", "Plane", "layout", "multiple_of", "build_graph", "output_names"]

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
        return math.lcm(model.flow_multiple, model.weightnet.multiple)
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
        from ..models.dealthdr import prepare_inputs
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
            fl = fwd.flatten(0, 1) if level == 0 else resize_flow_exportable(fwd.flatten(0, 1), size)
            masked.append(mask.sum())
            total = total + mask.numel()
            nbrs = feats[level][:, nb]
            aligned = _fgma(module.fgma, cur.repeat_interleave(n, 0), nbrs.flatten(0, 1), fl, mask, s)
            return module.fuse(cur, aligned.unflatten(0, (b, n)))

        y = net.middle(align(3, feats[3][:, ci], net.middle_align))
        for i, lvl in enumerate((2, 1, 0)):
            y = net.skip[i](torch.cat((net.up[i](y), feats[lvl][:, ci]), 1))
            y = net.dec[i](align(lvl, y, net.align[i]))
        hdr = net._to_hdr(net._base(inp, ldrs, evs, fwd, d), net.head(y), crop, evs)
        if self.outputs == "hdr":
            return hdr
        return hdr, torch.stack(masked).sum() / total, crop(fwd)


def _fgma(fgma: nn.Module, cur: Tensor, nbr: Tensor, flow: Tensor, mask: Tensor, s: float) -> Tensor:
    """:class:`~vs_hdrvid.models.fgma.FGMA` without data-dependent branches (``s = 0``: no attention,
    ``s = inf``: every pixel, else the masked pixels)."""
    warped = flow_warp(nbr, flow)
    if s == 0:
        att = torch.zeros_like(cur)
    elif fgma.residual:  # the window of the warped neighbour around the query, then the output projection
        att = fgma.proj_o(window_attention(cur, fgma.proj_k(warped), fgma.proj_v(warped), torch.zeros_like(flow),
                                           fgma.heads, fgma.window, fgma.bias, None if math.isinf(s) else mask,
                                           fgma.proj_q))
    else:
        att = window_attention(cur, fgma.proj_k(nbr), fgma.proj_v(nbr), flow, fgma.heads, fgma.window, fgma.bias,
                               None if math.isinf(s) else mask, fgma.proj_q)
    return fgma.compose(warped, mask, att)


def build_graph(model: nn.Module, kind: str, outputs: str = "hdr", deform: str = "grid",
                short: tuple[bool, ...] | None = None, s: float = 15.0, flows: bool = False) -> nn.Module:
    """The exportable graph of ``model`` (a CoarseNet, RefineNet or DeAltHDR, left unchanged).

    Args:
        model: the loaded network.
        kind: ``"coarse"``, ``"refine"`` or ``"dealthdr"``.
        outputs: ``"hdr"`` (one output, vs-mlrt's form) or ``"all"`` (every field of the output).
        deform: RefineNet only: ``"grid"`` (GridSample, the network's own) or ``"op"`` (ONNX DeformConv).
        short: DeAltHDR only: which window frames are short exposures (default: the centre's
            exposure alternating, the centre short).
        s: DeAltHDR only: the FGMA sensitivity the graph is built for.
        flows: DeAltHDR only: the flows come as input planes instead of from its SpyNet (always
            for weights with ``flow_source="dis"``).

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
        return RefineGraph(use_torchvision_deform(model) if deform == "op" else model, kind, outputs)
    t = model.config.frames
    short = tuple(i % 2 == t // 2 % 2 for i in range(t)) if short is None else tuple(short)
    if model.flownet is None:  # flow_source="dis": the flows are always input planes
        return DeAltHDRGraph(model, outputs, short, s, True)
    exportable_pair_spynet(model.flownet)
    return DeAltHDRGraph(model, outputs, short, s, flows)
