"""``coarse``: Chen et al. (ICCV 2021) CoarseNet per frame."""
from __future__ import annotations

import math
import os
from typing import Sequence

import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like
from ..models.blocks import pad_to_multiple, radiance_to_ldr
from ..ops.warp import align_to_ref
from ._common import check_linear, error, pick_device, recall, remember, renamed_args
from ._flows import check_flow_clips
from ._nets import RGBS, load_network, network_period
from ._window import ExposureWindow

__all__ = ["coarse"]

NODE = "coarse"


@renamed_args(lin="clip")
def coarse(clip: vs.VideoNode, weights: str | os.PathLike | None = None, device: str = "auto",
           fp32: bool = False, num_streams: int | None = None, flow: Sequence[vs.VideoNode] | None = None,
           compile: bool | None = None, tile: int | None = None, max_memory: float | None = None,
           backend: str = "torch") -> vs.VideoNode:
    """Coarse HDR of every frame by CoarseNet (Chen et al. 2021, sections 3.1-3.2).

    Each frame's window (``t-1..t+1`` for a 2-exposure pattern, ``t-2..t+2`` for 3; at the clip's
    ends missing neighbours are replaced by the nearest frame of the same exposure) is turned back
    into gamma-2.2 LDR (:func:`radiance_to_ldr`).

    The shipped weights (``blend="merge"``, see :class:`~vs_hdrvid.models.coarsenet.CoarseNetConfig`)
    start from the classical answer: the window is aligned by the DIS flows of
    :func:`classical_flow` (which include the :func:`align` similarity), its flow network corrects
    them, and the network corrects the weights of the weight-free :func:`merge` of the aligned
    window and its result. Untrained, it equals ``merge(clip, flow=classical_flow clips)`` of the
    same window. Weights of the paper's design (``blend="paper"``) warp the neighbours by the
    similarity props and estimate the flows and weights themselves.

    Args:
        clip: output of :func:`linearize`, ideally through :func:`align`; 2 or 3 exposures, frames
            at least 32x32 (padded by reflection to the network's multiple and cropped back).
        weights: ``None`` for the shipped ``coarse-2exp``/``coarse-3exp`` matching the pattern, a
            registry name, a folder holding the weights files and their ``MANIFEST.json``, or
            one such file.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        fp32: the exact float32 path. Default: float16 on CUDA; on a CPU with AMX or AVX512-BF16
            (detected at run time) the convolutions in bfloat16 under autocast, the rest in
            float32; elsewhere float32. Both in channels_last
            (:class:`~vs_hdrvid.models.inference.Inference`).
        num_streams: frames processed concurrently; None: the default of every node
            (:func:`~vs_hdrvid.bridge.default_streams`: one frame at a time for a network).
        flow: ``blend="merge"`` weights only: the flow clips to start from, one per neighbour
            offset ``-(n-1)..-1, 1..n-1`` (RGBS u, v, confidence from frame n to that neighbour);
            None: ``classical_flow(clip, offset)`` (DIS, preset medium), as in training.
        compile: ``torch.compile`` the network: the first frame waits for the compilation (up to a
            minute on a 2-core CPU), the others run about 3x faster there (``vs-hdrvid bench-nets
            --compile``). None: on a CPU for clips of 48 frames or more, untiled, not ``fp32``.
        tile: run the weight network on tiles of this side (a multiple of 8, at least 64) that
            overlap by its receptive field: the same output up to rounding, in a fraction of the
            memory. None: whole frames, unless ``max_memory`` asks for tiles.
        max_memory: GiB the forward pass may take; larger frames are tiled to fit.
        backend: ``"torch"``; ``"ort"``, ``"ov"`` or ``"trt"`` run the network's ONNX graph
            (``vs-hdrvid export-onnx``, docs/onnx.md) through onnxruntime, OpenVINO or TensorRT in
            float32, exported and checked against torch at the first frame of each size.

    Returns:
        RGBS linear HDR (``H = f^-1(L) / 2**EV``, the scale of the input) with the reference
        frame's props, ready for :func:`tonemap`, :func:`write_exr` or :func:`refine`.

    Raises:
        vs.Error: not a linearised clip, a pattern other than 2 or 3 exposures, frames under
            32x32, weights for another pattern length, weights missing or failing their sha256,
            a ``tile`` off the network's grid or under its minimum, a ``backend`` whose runtime is
            not installed (the message names the package to install).
    """
    clip = check_linear(clip, NODE)
    period = network_period(clip, NODE)
    dev, dtype = pick_device(device, fp32 or backend != "torch", NODE)  # ONNX graphs run in float32
    engine = load_network("coarse", weights, period, dev, NODE, fp32, compile, tile, max_memory,
                          (clip.width, clip.height), backend, clip.num_frames)
    net = engine.model
    if net.config.num_exposures != period:
        raise error(NODE, f"the weights hold a {net.config.num_exposures}-exposure CoarseNet but the clip "
                          f"has a {period}-exposure pattern")
    offsets = list(range(-(period - 1), period))
    neighbours = [o for o in offsets if o]
    if net.needs_init_flows:
        from .classical_flow import classical_flow

        flows = check_flow_clips(flow, clip, neighbours, NODE) or [classical_flow(clip, o) for o in neighbours]
    elif flow is not None:
        raise error(NODE, "flow= is for weights of the blend='merge' design; these weights estimate their own flow")
    else:
        flows = []
    window = ExposureWindow(clip, offsets, period, NODE)
    runner = NodeRunner(NODE, dev, dtype, num_streams=num_streams, cache_frames=2 * len(offsets) + 2, network=True)
    multiple = math.lcm(net.flow_multiple, net.weightnet.multiple)
    ref, gamma, k = offsets.index(0), net.config.gamma, len(window.clips)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        w = window.gather(n, f[:k], runner)
        ev = w.ev.to(dev, dtype)
        ldr = radiance_to_ldr(w.frames, ev, gamma)  # (T, 3, H, W)
        if flows:  # the flows include the similarity: the networks pad for themselves
            init = torch.stack([runner.fetch(fr) for fr in f[k:]]).to(dtype)[None]  # (1, K, 3, H, W)
            hdr = engine(ldr[None], ev[None], init[:, :, :2], init[:, :, 2:3].clamp(0, 1), w.frames[None]).hdr[0]
            return runner.emit(hdr, RGBS, w.props)
        ldr = align_to_ref(ldr, w.to_ref, ref)
        x, crop = pad_to_multiple(ldr[None], multiple)  # (1, T, 3, H', W')
        hdr = crop(engine(x, ev[None]).hdr)[0]  # (3, H, W)
        return runner.emit(hdr, RGBS, w.props)

    return remember(runner.map_frames(blank_like(clip), window.clips + flows, process), **recall(clip))
