"""``merge``: the weight-free HDR reconstruction (global alignment, optional flow, ghost rejection)."""
from __future__ import annotations

from typing import Sequence

import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like
from ..ops.merge import MergeConfig, merge_exposures
from ..ops.merge_window import merge_window
from ..ops.warp import flow_warp, warp_similarity
from ._common import check_linear, error, exposure_pattern, pick_device, recall, remember
from ._flows import check_flow_clips
from ._window import ExposureWindow

__all__ = ["merge"]

NODE = "merge"
_IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def merge(clip: vs.VideoNode, radius: int = 1, flow: Sequence[vs.VideoNode] | None = None,
          config: MergeConfig | None = None, device: str = "auto", fp32: bool = False,
          num_streams: int | None = None, compile: bool = False) -> vs.VideoNode:
    """Merge each frame with its aligned neighbours into HDR, rejecting ghosts.

    Neighbours are aligned to the reference by the composed global similarity props of
    :func:`align` (or, when given, by a flow clip per neighbour), then merged in linear radiance with
    exposure-aware weights; a neighbour is dropped where it disagrees with the reference inside the
    reference's well-exposed range (see :mod:`vs_hdrvid.ops.merge`).

    Args:
        clip: output of :func:`linearize`, ideally through :func:`align`.
        radius: neighbours on each side (window ``2 * radius + 1``). 1 sees every exposure of a
            2- or 3-exposure pattern; larger radii also average same-exposure frames.
        flow: optional flow clips, one per neighbour offset in order
            ``-radius..-1, 1..radius``, each from frame n to that neighbour (RGBS u, v, confidence);
            they replace the global alignment for that neighbour.
        config: thresholds of the merge (:class:`~vs_hdrvid.ops.merge.MergeConfig`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        fp32: compute in float32 on CUDA too.
        num_streams: frames processed concurrently; None: the default of every node
            (:func:`~vs_hdrvid.bridge.default_streams`: 1 on CUDA, VapourSynth's thread count on CPU).
        compile: fuse the merge with ``torch.compile`` on CUDA. Refused on CPU: there the
            compiled merge aborts the process inside a VapourSynth callback with a double free
            (torch 2.15), while the same compiled function runs correctly outside one.

    Returns:
        RGBS linear HDR on the radiometric scale of the input.
    """
    if not isinstance(radius, int) or not 1 <= radius <= 4:
        raise error(NODE, f"radius must be an integer in 1..4, got {radius!r}")
    clip = check_linear(clip, NODE)
    period = len(exposure_pattern(clip))
    if period < 2:
        raise error(NODE, "the clip has a single exposure; merge needs an alternating pattern")
    offsets = list(range(-radius, radius + 1))
    neighbours = [o for o in offsets if o != 0]
    flows = check_flow_clips(flow, clip, neighbours, NODE)
    window = ExposureWindow(clip, offsets, period, NODE)
    dev, dtype = pick_device(device, fp32, NODE)
    if compile and dev.type == "cpu":
        raise error(NODE, "compile=True is not available on CPU (the compiled merge aborts the process "
                          "inside VapourSynth); use compile=False")
    runner = NodeRunner(NODE, dev, dtype, cache_frames=2 * len(offsets) + 2, num_streams=num_streams)
    cfg = config or MergeConfig()
    merge_fn = torch.compile(merge_exposures, dynamic=False) if compile else None
    ref = offsets.index(0)
    k = len(window.clips)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        w = window.gather(n, f[:k], runner, stack=False)
        c, h, wd = w.slots[0].shape
        # each slot as cached, with the similarity that aligns it (warped band by band inside the
        # merge), or warped by its flow here with the flow's confidence
        frames, warps, valid = [], [], []
        for i, o in enumerate(offsets):
            x, to_ref = w.slots[i][None], w.to_ref[i]
            if o == 0 or (not flows and torch.equal(to_ref, _IDENTITY)):
                frames.append(x), warps.append(None), valid.append(None)
            elif flows:
                fl = runner.fetch(f[k + neighbours.index(o)])[None]
                frames.append(flow_warp(x, fl[:, :2].to(x.dtype)))
                warps.append(None), valid.append(fl[:, 2:3].clamp(0, 1))
            else:
                frames.append(x), warps.append(to_ref[None].to(dev)), valid.append(None)
        out = runner.output((1, c, h, wd))
        if compile:
            stack, usable = _stacked_window(runner, frames, warps, valid)
            out = merge_fn(stack, w.ev.to(dev), usable, ref, cfg, out=out)
        else:
            out = merge_window(frames, w.ev, ref, warps, valid, cfg, out=out, timed=runner.timed,
                               work=runner.workspace("merge_window"))
        return runner.emit(out[0], f[ref].format, w.props)

    return remember(runner.map_frames(blank_like(clip), window.clips + flows, process), **recall(clip))


def _stacked_window(runner: NodeRunner, frames: list[torch.Tensor], warps: list[torch.Tensor | None],
                    valid: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """The aligned window ``(1, T, C, H, W)`` and its validity ``(1, T, 1, H, W)`` in the slot's
    scratch, for the compiled :func:`~vs_hdrvid.ops.merge.merge_exposures` (what merge_window equals)."""
    t, (_, c, h, wd) = len(frames), frames[0].shape
    stack = runner.scratch("window", (1, t, c, h, wd), frames[0].dtype)
    usable = runner.scratch("valid", (1, t, 1, h, wd))
    for i, (x, m, v) in enumerate(zip(frames, warps, valid)):
        if m is not None:
            warp_similarity(x, m, return_mask=True, out=stack[:, i], mask_out=usable[:, i])
        else:
            stack[:, i] = x
            usable[:, i] = 1 if v is None else v
    return stack, usable
