"""``refine``: Chen et al. (ICCV 2021) RefineNet over consecutive coarse HDR frames."""
from __future__ import annotations

import os

import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like, shift_clip
from ..models.blocks import GAMMA, pad_to_multiple, radiance_to_ldr
from ..ops.warp import align_to_ref
from ._common import check_hdr_of, pick_device, recall, remember, renamed_args
from ._nets import RGBS, load_network, network_period
from ._window import ExposureWindow
from .temporal_fuse import temporal_fuse

__all__ = ["refine"]

NODE = "refine"


@renamed_args(coarse_clip="clip")
def refine(clip: vs.VideoNode, lin: vs.VideoNode, weights: str | os.PathLike | None = None,
           device: str = "auto", fp32: bool = False, num_streams: int | None = None,
           compile: bool | None = None, tile: int | None = None, max_memory: float | None = None,
           backend: str = "torch") -> vs.VideoNode:
    """Final HDR of every frame by RefineNet (Chen et al. 2021, section 3.3).

    The window of coarse HDRs ``t-1, t, t+1`` (exposure-aware at the clip's ends, as in
    :func:`coarse`) and the LDRs of the same frames, re-derived from ``lin`` by
    :func:`~vs_hdrvid.models.blocks.radiance_to_ldr`, are aligned on the reference by the similarity
    props of :func:`align`; the network aligns their features by deformable convolutions, fuses
    them with temporal attention and keeps the coarse HDR where the reference is well exposed
    (equations 4-5). With weights that have ``temporal_base`` (the shipped ones), the reference's
    coarse HDR is first replaced by :func:`temporal_fuse` of ``clip``, which the network corrects.

    Args:
        clip: output of :func:`coarse` for ``lin`` (RGBS, same length and size).
        lin: the linearised (and aligned) clip given to :func:`coarse`.
        weights: ``None`` for the shipped ``refine-2exp``/``refine-3exp`` matching the pattern, a
            registry name, a folder holding the weights files and their ``MANIFEST.json``, or one
            such file.
        device, fp32, num_streams, compile, backend: as for :func:`coarse`.
        tile, max_memory: as for :func:`coarse`; RefineNet runs whole on each tile (overlap 64 pixels).

    Returns:
        RGBS linear HDR on the input's radiometric scale, with the reference frame's props.

    Raises:
        vs.Error: the clips differ in length or size, ``clip`` is not RGBS, the pattern is
            not 2 or 3 exposures, frames under 32x32, unfit, missing or corrupt weights.

    Example::

        hdr = hv.refine(hv.coarse(lin), lin)
    """
    clip, lin = check_hdr_of(clip, lin, NODE, "hv.coarse")
    period = network_period(lin, NODE)
    dev, dtype = pick_device(device, fp32 or backend != "torch", NODE)  # ONNX graphs run in float32
    engine = load_network("refine", weights, period, dev, NODE, fp32, compile, tile, max_memory,
                          (clip.width, clip.height), backend, clip.num_frames)
    net = engine.model
    half = net.config.num_frames // 2
    offsets = list(range(-half, half + 1))
    window = ExposureWindow(lin, offsets, period, NODE)
    hdr_clips = [shift_clip(clip, o, period) for o in offsets]  # same sources as the window
    fused = net.config.temporal_base
    if fused:  # the reference's coarse HDR, as RefineNet.base_window replaces it
        hdr_clips[offsets.index(0)] = temporal_fuse(clip, lin, device=device)
    runner = NodeRunner(NODE, dev, dtype, num_streams=num_streams, cache_frames=4 * len(offsets) + 4, network=True)
    ref, k = offsets.index(0), len(window.clips)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        w = window.gather(n, f[:k], runner)
        hdrs = torch.stack([runner.fetch(fr, key=(1 + (i == ref and fused), m))  # the fused reference: its own key
                            for i, (fr, m) in enumerate(zip(f[k:], w.sources))])  # (N, 3, H, W)
        ev = w.ev.to(dev, dtype)
        ldrs = align_to_ref(radiance_to_ldr(w.frames, ev, GAMMA), w.to_ref, ref)
        hdrs = align_to_ref(hdrs, w.to_ref, ref)
        x, crop = pad_to_multiple(torch.stack((hdrs, ldrs)), 8)  # (2, N, 3, H', W')
        out = crop(engine(x[:1], x[1:], ev[None]).hdr)[0]  # (3, H, W)
        return runner.emit(out, RGBS, w.props)

    return remember(runner.map_frames(blank_like(lin), window.clips + hdr_clips, process), **recall(lin))
