"""``flow``: the trained flow network of CoarseNet (a SpyNet pyramid) as a flow-clip node."""
from __future__ import annotations

import os

import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like
from ..models.blocks import pad_to_multiple, reexpose
from ..ops.warp import (compose_affine, flow_warp, forward_backward_confidence, invert_affine,
                        similarity_to_flow)
from ._common import check_linear, error, pick_device
from ._window import ExposureWindow
from ._nets import align_to_ref, load_network, network_period, radiance_to_ldr

__all__ = ["flow", "spynet_flows", "through_similarity"]

NODE = "flow"
_RGBS = vs.core.get_video_format(vs.RGBS)


def spynet_flows(flownet: torch.nn.Module, pairs: list[tuple[int, int]], center: int, ldrs: torch.Tensor,
                 evs: torch.Tensor, gamma: float) -> torch.Tensor:
    """Flows from the centre of each LDR window to every neighbour in ``pairs``, as CoarseNet runs them.

    For each pair ``(a, b)`` of same-exposure slots the triple ``[N_a, C re-exposed to N_a's EV,
    N_b]`` goes to the flow network (Chen et al. 2021, section 3.2).

    Shape:
        ``ldrs (B, T, 3, H, W)``, ``evs (B, T)`` -> ``(B, 2 * len(pairs), 2, H, W)`` in pair order
        ``[C->N_a0, C->N_b0, C->N_a1, ...]``.
    """
    ref = ldrs[:, center]  # (B, 3, H, W)
    triples = [torch.stack((ldrs[:, a], reexpose(ref, evs[:, center], evs[:, a], gamma), ldrs[:, b]), 1)
               for a, b in pairs]
    return flownet(torch.stack(triples, 1))  # (B, G, 3, 3, H, W) in


def through_similarity(res: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Flow to the original frame from a residual flow to that frame warped by similarity ``m``.

    ``res`` goes from frame n to the neighbour after ``warp_similarity(neighbour, m)``; the result
    backward-warps the unwarped neighbour onto n: ``total(p) = res(p) + S(p + res(p))`` with
    ``S = similarity_to_flow(m)``.

    Shape:
        ``res (B, 2, H, W)``, ``m (B, 2, 3)`` -> ``(B, 2, H, W)`` float32.
    """
    res = res.float()
    return res + flow_warp(similarity_to_flow(m.to(res.device), *res.shape[-2:]), res)


def flow(lin: vs.VideoNode, offset: int = 1, weights: str | os.PathLike | None = None,
         device: str = "auto", fp32: bool = False, num_streams: int = 1) -> vs.VideoNode:
    """Flow from frame n to frame n + ``offset`` by CoarseNet's trained flow network.

    The neighbour is the exposure-aware one of :func:`merge` (at the clip's ends the nearest frame
    with the same exposure). Both windows are globally aligned first (the similarity props of
    :func:`align`), the network estimates the residual motion, and the similarity is composed back
    in, so the flow maps frame n to the ORIGINAL neighbour: backward-warping frame n + ``offset``
    by (u, v) aligns it on frame n, as ``merge(flow=...)`` expects. The confidence comes from a
    forward-backward check against the flow the network finds from the neighbour back to n.

    Args:
        lin: output of :func:`linearize`, ideally through :func:`align`; 2 or 3 exposures.
        offset: neighbour offset within CoarseNet's window: +-1 for 2 exposures, +-1 or +-2 for 3.
        weights: the CoarseNet weights whose flow network to use (as in :func:`coarse`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        fp32: compute in float32 on CUDA too (default fp16 there).
        num_streams: frames processed concurrently (one CUDA stream each).

    Returns:
        RGBS clip: planes u, v (pixels, x then y) and the forward-backward confidence in [0, 1].

    Example::

        hdr = hv.merge(lin, flow=[hv.flow(lin, -1), hv.flow(lin, 1)])
    """
    lin = check_linear(lin, NODE)
    period = network_period(lin, NODE)
    reach = period - 1
    if not isinstance(offset, int) or offset == 0 or abs(offset) > reach:
        raise error(NODE, f"offset must be a non-zero integer within +-{reach} (the {period}-exposure "
                          f"CoarseNet window the flow network was trained on), got {offset!r}; "
                          "use hv.classical_flow for other offsets")
    dev, dtype = pick_device(device, fp32, NODE)
    net = load_network("coarse", weights, period, dev, dtype, NODE)
    if net.needs_init_flows:
        return _corrected_classical_flow(lin, offset, net, dev, dtype, num_streams)
    slots = list(range(-reach, reach + 1))  # CoarseNet's window
    union = sorted(set(slots) | {offset + o for o in slots})  # forward window, and the one around n+offset
    window = ExposureWindow(lin, union, period, NODE)
    fw_idx = [union.index(o) for o in slots]
    bw_idx = [union.index(offset + o) for o in slots]
    order = [i for pair in net.pairs for i in pair]  # the flow network's output order, as window slots
    out_fw, out_bw = order.index(slots.index(offset)), order.index(slots.index(-offset))
    runner = NodeRunner(NODE, dev, dtype, num_streams=num_streams, cache_frames=2 * len(union) + 2)
    multiple, gamma, center = 2 ** (net.flownet.config.levels - 1), net.config.gamma, net.center
    nbr, ref = union.index(offset), union.index(0)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        w = window.gather(n, f, runner)
        to_n = w.to_ref  # (U, 2, 3) each slot onto n
        n_to_m = invert_affine(to_n[nbr:nbr + 1].double()).float()
        to_m = compose_affine(to_n, n_to_m)  # each slot onto the neighbour m
        ev = w.ev.to(dev, dtype)
        ldr = radiance_to_ldr(w.frames, ev, gamma)  # (U, 3, H, W)
        fw = align_to_ref(ldr[fw_idx], to_n[fw_idx], center)
        bw = align_to_ref(ldr[bw_idx], to_m[bw_idx], center)
        x, crop = pad_to_multiple(torch.stack((fw, bw)), multiple)  # (2, T, 3, H', W')
        flows = crop(spynet_flows(net.flownet, net.pairs, center, x, torch.stack((ev[fw_idx], ev[bw_idx])),
                                  gamma))  # (2, 2K, 2, H, W)
        total_fw = through_similarity(flows[0:1, out_fw], to_n[nbr:nbr + 1])  # n -> m
        total_bw = through_similarity(flows[1:2, out_bw], to_m[ref:ref + 1])  # m -> n
        conf = forward_backward_confidence(total_fw, total_bw)  # (1, 1, H, W)
        return runner.emit(torch.cat((total_fw, conf), 1)[0], _RGBS, w.props)

    return runner.map_frames(blank_like(lin), window.clips, process)


def _corrected_classical_flow(lin: vs.VideoNode, offset: int, net: torch.nn.Module, dev: torch.device,
                              dtype: torch.dtype, num_streams: int) -> vs.VideoNode:
    """``flow`` for CoarseNet weights of the ``blend="merge"`` design: the DIS flow of
    :func:`classical_flow` as the network's flow network corrects it (the DIS flow itself when
    the network has none). The confidence is that of the DIS flow's forward-backward check."""
    from .classical_flow import classical_flow

    if net.flownet is None:
        return classical_flow(lin, offset)
    reach = net.config.num_exposures - 1
    slots = list(range(-reach, reach + 1))
    nbrs = [o for o in slots if o]
    init_clips = [classical_flow(lin, o) for o in nbrs]
    window = ExposureWindow(lin, slots, net.config.num_exposures, NODE)
    runner = NodeRunner(NODE, dev, dtype, num_streams=num_streams, cache_frames=2 * len(slots) + 2)
    k, out = len(window.clips), nbrs.index(offset)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        w = window.gather(n, f[:k], runner)
        ev = w.ev.to(dev, dtype)
        init = torch.stack([runner.fetch(fr) for fr in f[k:]]).to(dtype)[None]  # (1, K, 3, H, W)
        flows = net.flows(radiance_to_ldr(w.frames, ev, net.config.gamma)[None], ev[None], init[:, :, :2])
        return runner.emit(torch.cat((flows[0, out].float(), init[0, out, 2:3].float().clamp(0, 1))), _RGBS, w.props)

    return runner.map_frames(blank_like(lin), window.clips + init_clips, process)
