"""``temporal_fuse``: each HDR frame averaged with its DIS-aligned neighbours where they agree with it."""
from __future__ import annotations

import math

import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like, shift_clip
from ..ops import temporal_fuse as ops
from ..ops.warp import align_to_ref
from ._common import check_hdr_of, error, pick_device, recall, remember
from ._nets import RGBS, network_period
from ._window import ExposureWindow

__all__ = ["temporal_fuse"]

NODE = "temporal_fuse"


def temporal_fuse(clip: vs.VideoNode, lin: vs.VideoNode, strength: float = 4.0, device: str = "auto",
                  num_streams: int | None = None) -> vs.VideoNode:
    """Classical temporal fusion of an HDR clip (:mod:`vs_hdrvid.ops.temporal_fuse`).

    Frames ``n - 1`` and ``n + 1`` of ``clip`` (exposure-aware at the ends, as the network nodes'
    windows) are aligned on frame ``n`` by the similarity props of :func:`align`, then by DIS flow
    between the mu-law encoded HDRs, and averaged with it where they agree with it to within its
    noise, estimated from the frame. Noisy footage (short exposures, night) gains most; clean
    footage keeps its frames where a misaligned neighbour would cost detail. RefineNet weights
    with ``temporal_base`` (the shipped ones) correct this node's output; it also follows
    :func:`merge` or :func:`coarse` alone, with no weights.

    Args:
        clip: RGBS linear HDR of ``lin`` (:func:`merge`, :func:`coarse`, :func:`refine`), same
            length and size.
        lin: the linearised (and aligned) clip ``clip`` was made from: its exposures and
            similarity props.
        strength: ghost tolerance in units of the frame's noise level (> 0); the default was
            tuned on the training and validation scenes.
        device: ``auto``/``cpu``/``cuda[:N]``; the flows run on the CPU (OpenCV DIS) in any case.
        num_streams: frames in flight (``None``: the core's thread count).

    Returns:
        RGBS linear HDR on ``clip``'s scale, with ``lin``'s props of each frame.

    Raises:
        vs.Error: the clips differ in length or size, ``clip`` is not RGBS, the pattern is not 2
            or 3 exposures, a bad ``strength``.

    Example::

        hdr = hv.temporal_fuse(hv.merge(lin, flow="dis"), lin)
    """
    clip, lin = check_hdr_of(clip, lin, NODE, "hv.merge or hv.coarse")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
            or strength <= 0:
        raise error(NODE, f"strength must be a finite number > 0, got {strength!r}")
    period = network_period(lin, NODE)
    config = ops.TemporalFuseConfig(strength=float(strength))
    dev, _ = pick_device(device, True, NODE)
    offsets = [-1, 0, 1]
    window = ExposureWindow(lin, offsets, period, NODE)
    hdr_clips = [shift_clip(clip, o, period) for o in offsets]  # same sources as the window
    runner = NodeRunner(NODE, dev, torch.float32, num_streams=num_streams, cache_frames=4 * len(offsets) + 4)
    ref, k = offsets.index(0), len(window.clips)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        w = window.gather(n, f[:k], runner)
        hdrs = torch.stack([runner.fetch(fr, key=(1, m)) for fr, m in zip(f[k:], w.sources)])  # (3, 3, H, W)
        hdrs = align_to_ref(hdrs, w.to_ref, ref)[None].float()
        h_sat = torch.exp2(-w.ev.min()).reshape(1).to(hdrs)
        return runner.emit(ops.temporal_fuse(hdrs, h_sat, config)[0], RGBS, w.props)

    return remember(runner.map_frames(blank_like(lin), window.clips + hdr_clips, process), **recall(lin))
