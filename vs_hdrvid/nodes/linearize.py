"""``linearize``: LDR frames -> linear radiance ``H = f^-1(L) / 2**EV`` with exposure props."""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import numpy as np
import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like, row_bands
from ..ops.crf import CRF, estimate_crf_debevec, gamma_to_linear
from ..ops.exposure import ExposureDetection, detect_exposure_pattern
from ._common import (COUNT_PROP, EV_PROP, INDEX_PROP, PATTERN_PROP, check_clip, error, log,
                      pick_device, to_rgb_float, validate_exposures)

__all__ = ["linearize", "estimate_crf", "detect_exposures"]

NODE = "linearize"


def _resolve_crf(crf: str | os.PathLike | CRF, gamma: float, node: str) -> tuple[Callable, str]:
    """A function LDR -> linear and a description, from ``"gamma"``, a CRF file or a CRF."""
    if isinstance(crf, CRF):
        return crf.to_linear, repr(crf)
    if crf == "gamma":
        if not (np.isfinite(gamma) and 1.0 <= gamma <= 4.0):
            raise error(node, f"gamma must be within [1, 4], got {gamma}")
        return (lambda L: gamma_to_linear(L, gamma)), f"gamma {gamma:g}"
    try:
        table = CRF.from_file(crf)
    except (OSError, ValueError) as e:
        raise error(node, f"cannot use crf={str(crf)!r}: {e}") from None
    return table.to_linear, f"lookup table {crf}"


def _sample_frames(rgb: vs.VideoNode, count: int, width: int = 320) -> list[np.ndarray]:
    """The first ``count`` frames, downscaled, as ``(H, W, 3)`` arrays in [0, 1]."""
    height = max(2, round(rgb.height * width / rgb.width / 2) * 2)
    # nearest-neighbour subsampling keeps the histogram: averaging would mix clipped and unclipped pixels
    small = vs.core.resize.Point(rgb, width=width, height=height) if rgb.width > width else rgb
    return [np.clip(np.stack([np.asarray(f[p]) for p in range(3)], -1), 0, 1)
            for f in (small.get_frame(i) for i in range(min(count, rgb.num_frames)))]


def detect_exposures(clip: vs.VideoNode, frames: int = 24, crf: str | CRF = "gamma",
                     gamma: float = 2.2) -> ExposureDetection:
    """Detect the alternating exposure pattern of ``clip`` from the brightness of its first frames.

    Returns:
        an :class:`~vs_hdrvid.ops.exposure.ExposureDetection` (EVs from frame 0, confidence).
    """
    rgb = to_rgb_float(check_clip(clip, "detect_exposures"), "detect_exposures")
    to_linear, _ = _resolve_crf(crf, gamma, "detect_exposures")
    ldr = _sample_frames(rgb, frames)
    lin = [to_linear(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))).amax(0).numpy() + 1e-7
           for x in ldr]
    try:
        return detect_exposure_pattern(lin, [x.max(-1) for x in ldr])
    except ValueError as e:
        raise error("linearize", f"cannot detect the exposure pattern: {e}; pass exposures=[...]") from None


def _props_pattern(clip: vs.VideoNode) -> list[float] | None:
    """The EV pattern carried by the source's own ``HdrExposureEV`` props, if any."""
    props = clip.get_frame(0).props
    if EV_PROP not in props:
        return None
    evs = [float(clip.get_frame(i).props[EV_PROP]) for i in range(min(6, clip.num_frames))]
    for period in (1, 2, 3):
        if all(evs[i] == evs[i % period] for i in range(len(evs))):
            return evs[:period]
    raise error(NODE, f"the clip's {EV_PROP} props {evs} do not repeat with period 2 or 3")


def _choose_exposures(rgb: vs.VideoNode, exposures: Sequence[float] | None, crf, gamma: float
                      ) -> list[float]:
    if exposures is not None:
        evs = validate_exposures(exposures, NODE)
        if len(evs) > 1 and rgb.num_frames >= 6:
            try:
                found = detect_exposures(rgb, crf=crf, gamma=gamma)
            except vs.Error:
                return evs
            steps = np.diff(evs + evs[:1])
            found_steps = np.diff(found.exposures + found.exposures[:1])
            if len(found.exposures) != len(evs) or np.max(np.abs(found_steps - steps)) > 0.75:
                log.warning("hdrvid.linearize: exposures=%s contradict the footage: detection found %s",
                            evs, found.describe())
        return evs
    from_props = _props_pattern(rgb)
    if from_props is not None:
        log.info("hdrvid.linearize: exposures %s from the frames' %s props", from_props, EV_PROP)
        return validate_exposures(from_props, NODE)
    found = detect_exposures(rgb, crf=crf, gamma=gamma)
    log.warning("hdrvid.linearize: detected %s", found.describe())
    return validate_exposures(found.exposures, NODE)


def linearize(clip: vs.VideoNode, exposures: Sequence[float] | None = None,
              crf: str | os.PathLike | CRF = "gamma", gamma: float = 2.2,
              device: str = "auto", fp32: bool = False) -> vs.VideoNode:
    """LDR footage -> linear radiance ``H = f^-1(L) / 2**EV`` (DESIGN.md, radiometry).

    Args:
        clip: any constant-format RGB, YUV or GRAY clip; integers are normalised to [0, 1] and YUV
            is converted with its ``_Matrix``/``_Range`` props.
        exposures: EV (stops) of each frame of the repeating pattern starting at frame 0, e.g.
            ``[-1.5, 1.5]`` or ``[-2, 0, 2]``. ``None`` takes them from the frames' own
            ``HdrExposureEV`` props, else detects them from frame brightness (and logs the result).
        crf: ``"gamma"`` (a power curve of ``gamma``), a lookup-table file written by
            :func:`estimate_crf` or :meth:`CRF.save`, or a :class:`~vs_hdrvid.ops.crf.CRF`.
        gamma: exponent of the ``"gamma"`` response.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        fp32: compute in float32 on CUDA too (default fp16 there).

    Returns:
        RGBS clip of linear radiance, ``_Transfer`` 8 (linear), with ``HdrExposureEV``,
        ``HdrExposureIndex``, ``HdrExposureCount`` and ``HdrExposurePattern`` on every frame.

    Raises:
        vs.Error: bad format, exposures that are not finite or span over 12 stops, an unreadable
            CRF file, or a pattern that cannot be detected.
    """
    clip = check_clip(clip, NODE)
    rgb = to_rgb_float(clip, NODE)
    to_linear, crf_desc = _resolve_crf(crf, gamma, NODE)
    evs = _choose_exposures(rgb, exposures, crf, gamma)
    dev, dtype = pick_device(device, fp32, NODE)
    period = len(evs)
    is_float_input = clip.format.sample_type == vs.FLOAT
    runner = NodeRunner(NODE, dev, dtype, num_streams=None)  # frame-parallel on CPU
    scales = [2.0 ** -e for e in evs]
    power = float(gamma) if isinstance(crf, str) and crf == "gamma" else None
    log.info("hdrvid.linearize: %d-exposure pattern %s, CRF %s, on %s", period, evs, crf_desc, dev)

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        x = runner.fetch(f[0], own=True)  # a tensor of our own: computed on in place, then published
        if is_float_input and not all(math.isfinite(float(v)) for v in torch.aminmax(x)):  # NaN propagates
            raise error(NODE, f"frame {n} has NaN or infinite pixels; clean the source first")
        if power is not None:  # clamp(x, 0, 1) ** gamma / 2**EV as exp2(gamma log2 x - EV): vectorised
            # (within 2e-6 relative of the float64 power law, a tenth of a 16-bit step), band by band
            for rows in row_bands(x.shape[-2], x.shape[-1], x.device):
                x[:, rows].clamp_(0, 1).log2_().mul_(power).sub_(evs[n % period]).exp2_()
            h = x
        else:
            h = to_linear(x.clamp_(0, 1)).mul_(scales[n % period])
        props = dict(f[0].props)
        props.update({EV_PROP: evs[n % period], INDEX_PROP: n % period, COUNT_PROP: period,
                      PATTERN_PROP: evs, "_Transfer": 8, "_Matrix": 0, "_Range": 1})
        return runner.emit(h, vs.core.get_video_format(vs.RGBS), props)

    return runner.map_frames(blank_like(rgb), [rgb], process)


def estimate_crf(clip: vs.VideoNode, exposures: Sequence[float], output: str | os.PathLike,
                 frames: Sequence[int] | None = None, samples: int = 2000, smoothness: float = 50.0
                 ) -> CRF:
    """Estimate the camera response (Debevec & Malik 1997) from the footage's own exposures.

    The frames used should show a static scene (a tripod shot, or a still stretch of the clip):
    the method compares the same pixels across exposures.

    Args:
        clip: the LDR footage (any format :func:`linearize` takes).
        exposures: the EV pattern starting at frame 0.
        output: JSON file to write the response to; pass it to ``linearize(crf=...)`` later.
        frames: frame numbers to use (default: the first ``2 * len(exposures)`` frames).
        samples: pixel positions sampled per channel.
        smoothness: weight of the curvature penalty.

    Returns:
        the estimated :class:`~vs_hdrvid.ops.crf.CRF`, also saved to ``output``.
    """
    node = "estimate_crf"
    rgb = to_rgb_float(check_clip(clip, node, min_frames=2), node)
    evs = validate_exposures(exposures, node)
    frames = list(frames) if frames is not None else list(range(min(rgb.num_frames, 2 * len(evs))))
    if any(not 0 <= i < rgb.num_frames for i in frames):
        raise error(node, f"frames {frames} are outside the clip (0..{rgb.num_frames - 1})")
    images = [np.stack([np.asarray(rgb.get_frame(i)[p]) for p in range(3)], -1) for i in frames]
    crf = estimate_crf_debevec([np.clip(x, 0, 1) for x in images], [evs[i % len(evs)] for i in frames],
                               n_samples=samples, smoothness=smoothness)
    try:
        crf.save(output)
    except OSError as e:
        raise error(node, f"cannot write {output}: {e}") from None
    return crf
