"""``dealthdr``: DeAltHDR per frame, with the FGMA sensitivity ``s`` as the quality/cost dial."""
from __future__ import annotations

import os
from typing import Sequence

import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like, shift_clip
from ..models.blocks import radiance_to_ldr
from ..models.dealthdr import FeatureCache
from ..ops.warp import align_to_ref
from ._common import (PATTERN_PROP, check_linear, error, exposure_pattern_of, log, pick_device, recall,
                      remember, renamed_args)
from ._flows import check_flow_clips
from ._nets import RGBS, load_network, network_period
from ._window import ExposureWindow

__all__ = ["dealthdr", "RATIO_PROP"]

NODE = "dealthdr"
OFFSETS = (-2, -1, 0, 1, 2)
NEIGHBOURS = (-2, -1, 1, 2)
RATIO_PROP = "HdrAttentionRatio"
TRAINED_SPAN = 3.0  # EV -2/+1: the exposure ratio of the training data, in stops


def _check_s(s: object) -> float:
    try:
        value = float(s)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise error(NODE, f"s must be a number >= 0 (inf allowed), got {s!r}") from None
    if not value >= 0:
        raise error(NODE, f"s must be >= 0 (0: flow only, inf: attention everywhere), got {s!r}")
    return value


def _warn_ratio(pattern: list[float]) -> None:
    if len(pattern) == 2:
        span = max(pattern) - min(pattern)
        if abs(span - TRAINED_SPAN) > 1.0:
            log.warning("hdrvid.%s: the exposures are %.2g stops apart; the network was trained on %g stops "
                        "(EV -2/+1), expect lower quality", NODE, span, TRAINED_SPAN)


@renamed_args(lin="clip")
def dealthdr(clip: vs.VideoNode, s: float = 15.0, flow: Sequence[vs.VideoNode] | None = None,
             weights: str | os.PathLike | None = None, device: str = "auto", fp32: bool = False,
             num_streams: int | None = None, compile: bool | None = None, backend: str = "torch") -> vs.VideoNode:
    """HDR of every frame by DeAltHDR (flow-guided masked attention, dual exposure encoders).

    Each frame's window ``t-2..t+2`` (at the clip's ends the nearest frame of the same exposure
    stands in) is turned back into gamma-2.2 LDR, the neighbours are warped onto the reference by
    the similarity props of :func:`align` when present, and the network aligns the rest: flows
    (its SpyNet's or DIS's) everywhere, cross-attention where the forward-backward check flags the flow (``s``).
    With flow clips (given, or DIS for the shipped weights) each frame's encoder features are kept
    for the five windows it is in, so a frame encodes one new frame instead of five.

    Args:
        clip: output of :func:`linearize` (ideally through :func:`align`) with a 2-exposure
            alternating pattern; frames at least 32x32.
        s: FGMA sensitivity: ``0`` flow only (fastest), ``inf`` attention everywhere (slowest);
            in between, the share of pixels given attention grows with ``s``. Each output frame
            carries the share in ``HdrAttentionRatio``.
        flow: optional flow clips for offsets ``-2, -1, +1, +2`` in that order (from
            :func:`classical_flow` or :func:`flow`, mapping frame n to the original neighbour),
            used instead of the network's SpyNet; the reverse flows come from the same clips.
            None: the network's SpyNet, or for weights trained on the classical flows (the
            shipped ones, ``flow_source="dis"``) ``classical_flow(clip, o)`` (DIS, preset
            medium, including the :func:`align` similarity), as in training.
        weights: ``None`` for the shipped ``dealthdr-2exp``, a folder holding the weights file and
            its ``MANIFEST.json``, or the file itself.
        device, fp32, num_streams, backend: as for :func:`coarse` (no tiling: the flows and the
            attention reach across the frame).
        compile: ``torch.compile`` the blocks whose shapes depend only on the frame size
            (:meth:`~vs_hdrvid.models.dealthdr.DeAltHDR.compile_blocks`; the masked attention stays
            eager): the first frame waits for it (35-80 s at 1080p on 2 cores), the others run
            about 1.35x faster. None: on a CPU for clips of 48 frames or more, not ``fp32``.

    Returns:
        RGBS linear HDR on the input's radiance scale, with the reference frame's props.

    Raises:
        vs.Error: not a linearised clip, a pattern other than 2 exposures, frames under 32x32,
            ``s`` negative or NaN, flow clips of the wrong number or shape, weights missing or
            failing their sha256.
    """
    clip = check_linear(clip, NODE)
    s = _check_s(s)
    period = network_period(clip, NODE)
    if period != 2:
        raise error(NODE, f"DeAltHDR handles 2-exposure alternating patterns; the clip has {period} "
                          "exposures (use hv.coarse or hv.merge)")
    flows = check_flow_clips(flow, clip, NEIGHBOURS, NODE)
    known = recall(clip).get(PATTERN_PROP)  # linearize recorded it: warn now, else at the first frame
    warned = [False]
    if known is not None:
        _warn_ratio(list(known))
        warned[0] = True
    dev, dtype = pick_device(device, fp32 or backend != "torch", NODE)  # ONNX graphs run in float32
    engine = load_network("dealthdr", weights, period, dev, NODE, fp32, compile, backend=backend,
                          num_frames=clip.num_frames)
    net = engine.model
    window = ExposureWindow(clip, OFFSETS, period, NODE)
    if not flows and net.needs_flows:  # weights trained on the classical flows get them here too
        from .classical_flow import classical_flow

        flows = [classical_flow(clip, o) for o in NEIGHBOURS]
    extra: list[vs.VideoNode] = []
    if flows:  # t -> t+o from clip o at t; t+o -> t from clip -o at t+o
        back = [shift_clip(flows[NEIGHBOURS.index(-o)], o, period) for o in NEIGHBOURS]
        extra = flows + back
    runner = NodeRunner(NODE, dev, dtype, num_streams=num_streams, cache_frames=2 * len(OFFSETS) + 2,
                        network=True)
    # given flows leave the frames unwarped, so a frame's encoder features serve all five windows it is in
    features = FeatureCache(len(OFFSETS) + 3) if extra and backend == "torch" else None
    ref, gamma, k = OFFSETS.index(0), net.config.gamma, len(window.clips)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        w = window.gather(n, f, runner)
        if not warned[0]:
            warned[0] = True
            _warn_ratio(exposure_pattern_of(w.props) or [])
        ev = w.ev.to(dev, dtype)
        ldr = radiance_to_ldr(w.frames, ev, gamma)  # (T, 3, H, W)
        given = None
        if extra:
            uv = [runner.fetch(fr)[:2] for fr in f[k:]]  # (2, H, W) each, fwd then bwd
            given = (torch.stack(uv[:4])[None].float(), torch.stack(uv[4:])[None].float())
        else:
            ldr = align_to_ref(ldr, w.to_ref, ref)
        reuse = {} if features is None else {"frame_ids": w.sources, "cache": features}
        out = engine(ldr[None], ev[None], s, flows=given, **reuse)
        props = dict(w.props)
        props[RATIO_PROP] = float(out.attention_ratio)
        return runner.emit(out.hdr[0], RGBS, props)

    return remember(runner.map_frames(blank_like(clip), window.clips + extra, process), **recall(clip))

