"""``flow``: the trained flow network of CoarseNet (FlowFill over DIS, or a SpyNet pyramid) as a flow-clip node."""
from __future__ import annotations

import os

import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like
from ..models.blocks import pad_to_multiple, radiance_to_ldr
from ..models.inference import Inference
from ..ops.warp import align_to_ref, compose_affine, forward_backward_confidence, invert_affine, through_similarity
from ._common import check_linear, error, pick_device, renamed_args
from ._nets import RGBS, load_network, network_period
from ._window import ExposureWindow

__all__ = ["flow"]

NODE = "flow"


@renamed_args(lin="clip")
def flow(clip: vs.VideoNode, offset: int = 1, weights: str | os.PathLike | None = None,
         device: str = "auto", fp32: bool = False, num_streams: int | None = None) -> vs.VideoNode:
    """Flow from frame n to frame n + ``offset`` by CoarseNet's trained flow network.

    The neighbour is the exposure-aware one of :func:`merge` (at the clip's ends the nearest frame
    with the same exposure). Both windows are globally aligned first (the similarity props of
    :func:`align`), the network estimates the residual motion, and the similarity is composed back
    in, so the flow maps frame n to the ORIGINAL neighbour: backward-warping frame n + ``offset``
    by (u, v) aligns it on frame n, as ``merge(flow=...)`` expects. The confidence comes from a
    forward-backward check against the flow the network finds from the neighbour back to n.
    With the shipped weights (``blend="merge"``) it is the flow ``coarse`` aligns its window with:
    the DIS flow of :func:`classical_flow` as CoarseNet's FlowFill corrects it (2 exposures) or
    as it is (3 exposures), with DIS's confidence.

    Args:
        clip: output of :func:`linearize`, ideally through :func:`align`; 2 or 3 exposures.
        offset: neighbour offset within CoarseNet's window: +-1 for 2 exposures, +-1 or +-2 for 3.
        weights: the CoarseNet weights whose flow network to use (as in :func:`coarse`).
        device, fp32, num_streams: as for :func:`coarse`.

    Returns:
        RGBS clip: planes u, v (pixels, x then y) and the forward-backward confidence in [0, 1].

    Example::

        hdr = hv.merge(lin, flow=[hv.flow(lin, -1), hv.flow(lin, 1)])
    """
    clip = check_linear(clip, NODE)
    period = network_period(clip, NODE)
    reach = period - 1
    if not isinstance(offset, int) or offset == 0 or abs(offset) > reach:
        raise error(NODE, f"offset must be a non-zero integer within +-{reach} (the {period}-exposure "
                          f"CoarseNet window the flow network was trained on), got {offset!r}; "
                          "use hv.classical_flow for other offsets")
    dev, dtype = pick_device(device, fp32, NODE)
    engine = load_network("coarse", weights, period, dev, NODE, fp32)
    net, precision = engine.model, engine.precision
    if net.needs_init_flows:
        return _corrected_classical_flow(clip, offset, engine, dev, dtype, num_streams)
    slots = list(range(-reach, reach + 1))  # CoarseNet's window
    union = sorted(set(slots) | {offset + o for o in slots})  # forward window, and the one around n+offset
    window = ExposureWindow(clip, union, period, NODE)
    fw_idx = [union.index(o) for o in slots]
    bw_idx = [union.index(offset + o) for o in slots]
    # CoarseNet.flows() gives the flows to the window's neighbours in time order
    out_fw, out_bw = net.neighbours.index(slots.index(offset)), net.neighbours.index(slots.index(-offset))
    runner = NodeRunner(NODE, dev, dtype, num_streams=num_streams, cache_frames=2 * len(union) + 2, network=True)
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
        with precision.context(dev):
            flows = crop(net.flows(x, torch.stack((ev[fw_idx], ev[bw_idx])))).float()  # (2, T-1, 2, H, W)
        total_fw = through_similarity(flows[0:1, out_fw], to_n[nbr:nbr + 1])  # n -> m
        total_bw = through_similarity(flows[1:2, out_bw], to_m[ref:ref + 1])  # m -> n
        conf = forward_backward_confidence(total_fw, total_bw)  # (1, 1, H, W)
        return runner.emit(torch.cat((total_fw, conf), 1)[0], RGBS, w.props)

    return runner.map_frames(blank_like(clip), window.clips, process)


def _corrected_classical_flow(clip: vs.VideoNode, offset: int, engine: Inference, dev: torch.device,
                              dtype: torch.dtype, num_streams: int | None) -> vs.VideoNode:
    """``flow`` for CoarseNet weights of the ``blend="merge"`` design: the DIS flow of
    :func:`classical_flow` as the network's flow network corrects it (the DIS flow itself when
    the network has none). The confidence is that of the DIS flow's forward-backward check."""
    from .classical_flow import classical_flow

    net = engine.model
    if net.flownet is None:
        return classical_flow(clip, offset)
    reach = net.config.num_exposures - 1
    slots = list(range(-reach, reach + 1))
    nbrs = [o for o in slots if o]
    init_clips = [classical_flow(clip, o) for o in nbrs]
    window = ExposureWindow(clip, slots, net.config.num_exposures, NODE)
    runner = NodeRunner(NODE, dev, dtype, num_streams=num_streams, cache_frames=2 * len(slots) + 2, network=True)
    k, out = len(window.clips), nbrs.index(offset)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        w = window.gather(n, f[:k], runner)
        ev = w.ev.to(dev, dtype)
        init = torch.stack([runner.fetch(fr) for fr in f[k:]]).to(dtype)[None]  # (1, K, 3, H, W)
        with engine.precision.context(dev):
            flows = net.flows(radiance_to_ldr(w.frames, ev, net.config.gamma)[None], ev[None], init[:, :, :2],
                              init[:, :, 2:3])
        return runner.emit(torch.cat((flows[0, out].float(), init[0, out, 2:3].float().clamp(0, 1))), RGBS, w.props)

    return runner.map_frames(blank_like(clip), window.clips + init_clips, process)
