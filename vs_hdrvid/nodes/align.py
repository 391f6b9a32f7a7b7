"""``align``: global similarity transforms between consecutive frames, stored as frame props."""
from __future__ import annotations

import threading
from collections import OrderedDict

import vapoursynth as vs

from ..bridge import NodeRunner, shift_clip
from ..ops.alignment import (alignment_pyramid, pair_clip_level, pooled_luminance, pooling_factor,
                             similarity_from_pooled)
from ..ops.warp import invert_affine, warp_similarity
from ._common import (EV_PROP, SIM_CONF_PROP, SIM_PROP, check_linear, error, exposure_pattern,
                      pick_device, recall, remember)

__all__ = ["align"]

NODE = "align"
IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def align(clip: vs.VideoNode, warp: bool = False, device: str = "auto", fp32: bool = False,
          num_streams: int | None = None) -> vs.VideoNode:
    """Estimate the similarity transform (rotation, scale, translation) between consecutive frames.

    Estimated on exposure-normalised, clipped luminance with under/over-exposed pixels masked out
    (Chen et al. 2021, section 3.1, global alignment; :mod:`vs_hdrvid.ops.alignment`). Consumers
    compose the per-frame transforms for any neighbour offset.

    Args:
        clip: output of :func:`vs_hdrvid.linearize`.
        warp: return each frame registered onto its previous frame (warped by the inverse of its
            ``HdrSimilarityPrev``) for checking the alignment in a preview; frame pixels are
            otherwise passed through untouched.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        fp32: compute in float32 on CUDA too.
        num_streams: frames processed concurrently; None: the default of every node
            (:func:`~vs_hdrvid.bridge.default_streams`: 1 on CUDA, VapourSynth's thread count on CPU).

    Returns:
        the clip with ``HdrSimilarityPrev`` (6 floats, the row-major 2x3 matrix mapping frame n-1
        onto frame n in pixel coordinates, identity for frame 0) and ``HdrSimilarityConfidence``
        (0..1; 0 for frame 0) on every frame; it keeps what linearize recorded about the clip.
    """
    clip = check_linear(clip, NODE, min_frames=1)
    if not isinstance(warp, bool):
        raise error(NODE, f"warp must be True or False, got {warp!r}")
    dev, dtype = pick_device(device, fp32, NODE)
    period = len(exposure_pattern(clip))
    runner = NodeRunner(NODE, dev, dtype, cache_frames=4, num_streams=num_streams)
    if clip.num_frames < period:
        raise error(NODE, f"needs at least {period} frames (one exposure pattern), the clip has {clip.num_frames}")
    prev_clip = shift_clip(clip, -1, period) if clip.num_frames > 1 else clip
    factor = pooling_factor((clip.height, clip.width), 480)
    # per frame, for both pairs it is in: its pooled luminance, and its pyramid at a pair's clip
    # level (every frame of a 2-exposure pattern meets both neighbours at the same level)
    pooled: OrderedDict[int, tuple] = OrderedDict()
    pyramids: OrderedDict[tuple[int, float], list] = OrderedDict()
    lock = threading.Lock()

    def cached(store: OrderedDict, key, make, keep: int = 4):
        with lock:
            hit = store.get(key)
        if hit is None:
            hit = make()
            with lock:
                store[key] = hit
                while len(store) > keep:
                    store.popitem(last=False)
        return hit

    def luminance(n: int, frame: vs.VideoFrame) -> tuple:
        def make() -> tuple:
            x = runner.fetch(frame, key=(0, n))[None].float()
            with runner.timed("luminance"):
                return pooled_luminance(x, factor)
        return cached(pooled, n, make)

    def pyramid(n: int, frame: vs.VideoFrame, level: float) -> list:
        def make() -> list:
            lum = luminance(n, frame)
            with runner.timed("pyramid"):
                return alignment_pyramid(lum, float(frame.props[EV_PROP]), level, factor)
        return cached(pyramids, (n, level), make, keep=6)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        props = dict(f[0].props)
        if n == 0:
            props.update({SIM_PROP: IDENTITY, SIM_CONF_PROP: 0.0})
            return runner.emit(runner.fetch(f[0], key=(0, n)), f[0].format, props) if warp \
                else _passthrough(f[0], props)
        ev_prev, ev_cur = float(f[1].props[EV_PROP]), float(f[0].props[EV_PROP])
        level = pair_clip_level(ev_prev, ev_cur)
        pyramids = pyramid(n - 1, f[1], level), pyramid(n, f[0], level)
        with runner.timed("similarity"):
            m, conf = similarity_from_pooled(luminance(n - 1, f[1]), luminance(n, f[0]), ev_prev, ev_cur, factor,
                                             pyramids=pyramids)
        props.update({SIM_PROP: [float(v) for v in m[0].flatten().tolist()],
                      SIM_CONF_PROP: float(conf[0])})
        if not warp:
            return _passthrough(f[0], props)
        cur = runner.fetch(f[0], key=(0, n))
        registered = warp_similarity(cur[None].float(), invert_affine(m))[0].to(cur.dtype)
        return runner.emit(registered, f[0].format, props)

    return remember(runner.map_frames(clip, [clip, prev_clip], process), **recall(clip))


def _passthrough(frame: vs.VideoFrame, props: dict) -> vs.VideoFrame:
    """The same pixels with new props (a copy-on-write copy, no pixel copy)."""
    out = frame.copy()
    out.props.update(props)
    return out
