"""``linearize``: LDR frames -> linear radiance ``H = f^-1(L) / 2**EV`` with exposure props."""
from __future__ import annotations

import math
import os
import threading
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like, counters
from ..ops.bands import BAND_PIXELS, row_bands
from ..ops.crf import CRF, estimate_crf_debevec, gamma_to_linear
from ..ops.exposure import ExposureDetection, detect_exposure_pattern
from ._common import (COUNT_PROP, EV_PROP, INDEX_PROP, PATTERN_PROP, check_clip, error, log,
                      pick_device, recall, remember, to_rgb_float, validate_exposures)

__all__ = ["linearize", "estimate_crf", "detect_exposures", "check_exposures"]

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


def _sample_frames(rgb: vs.VideoNode, count: int, width: int = 320) -> list[tuple[np.ndarray, bool]]:
    """The first ``count`` frames, downscaled, as ``(H, W, 3)`` arrays, each with whether it is
    linear float (``_Transfer`` 8) rather than a camera's encoded signal."""
    height = max(2, round(rgb.height * width / rgb.width / 2) * 2)
    # nearest-neighbour subsampling keeps the histogram: averaging would mix clipped and unclipped pixels
    small = vs.core.resize.Point(rgb, width=width, height=height) if rgb.width > width else rgb
    out = []
    for f in (small.get_frame(i) for i in range(min(count, rgb.num_frames))):
        x = np.stack([np.asarray(f[p]) for p in range(3)], -1)
        out.append((x, _is_linear(f, rgb)))
    return out


def _is_linear(frame: vs.VideoFrame, clip: vs.VideoNode) -> bool:
    """A float frame tagged linear (``_Transfer`` 8, as EXR sequences are) holds radiance already."""
    return clip.format.sample_type == vs.FLOAT and int(frame.props.get("_Transfer", 0)) == 8


def detect_exposures(clip: vs.VideoNode, frames: int = 24, crf: str | CRF = "gamma",
                     gamma: float = 2.2) -> ExposureDetection:
    """Detect the alternating exposure pattern of ``clip`` from the brightness of its first frames.

    Linear float frames (``_Transfer`` 8, e.g. an EXR sequence) are compared as they are; other
    frames through the camera response ``crf``.

    Returns:
        an :class:`~vs_hdrvid.ops.exposure.ExposureDetection` (EVs from frame 0, confidence).
    """
    rgb = to_rgb_float(check_clip(clip, "detect_exposures"), "detect_exposures")
    to_linear, _ = _resolve_crf(crf, gamma, "detect_exposures")
    lin, ldr = [], []
    for x, linear in _sample_frames(rgb, frames):
        if linear:  # radiance as recorded; the 0..1 range a sensor clips at decides what is usable
            lin.append(np.maximum(x, 0).max(-1) + 1e-7)
            ldr.append(np.clip(x, 0, 1).max(-1) ** (1 / 2.2))
        else:
            x = np.clip(x, 0, 1)
            lin.append(to_linear(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))).amax(0).numpy()
                       + 1e-7)
            ldr.append(x.max(-1))
    try:
        return detect_exposure_pattern(lin, ldr)
    except ValueError as e:
        raise error("linearize", f"cannot detect the exposure pattern: {e}; pass exposures=[...]") from None


def check_exposures(clip: vs.VideoNode, exposures: Sequence[float], crf: str | CRF = "gamma",
                    gamma: float = 2.2) -> str | None:
    """Compare given ``exposures`` with what detection finds in the first frames of ``clip``.

    Decodes up to 24 frames, so :func:`linearize` does not call it; ``vs-hdrvid reconstruct``
    does, before it renders the whole clip anyway.

    Returns:
        a one-line warning when the steps between exposures (or their phase) contradict the
        footage, else None (also when detection finds nothing to compare).
    """
    evs = validate_exposures(exposures, NODE)
    rgb = to_rgb_float(check_clip(clip, NODE), NODE)
    if len(evs) < 2 or rgb.num_frames < 6:
        return None
    try:
        found = detect_exposures(rgb, crf=crf, gamma=gamma)
    except vs.Error:
        return None
    steps = np.diff(evs + evs[:1])
    found_steps = np.diff(found.exposures + found.exposures[:1])
    if len(found.exposures) != len(evs) or np.max(np.abs(found_steps - steps)) > 0.75:
        return f"exposures={evs} contradict the footage: detection found {found.describe()}"
    return None


def _pattern_of(evs: Sequence[float], where: str) -> list[float]:
    """The period-1, 2 or 3 pattern that per-frame ``evs`` repeat."""
    evs = [float(e) for e in evs]
    for period in (1, 2, 3):
        if all(evs[i] == evs[i % period] for i in range(len(evs))):
            return evs[:period]
    raise error(NODE, f"{where} {evs[:12]}{' ...' if len(evs) > 12 else ''} do not repeat with period 2 or 3")


def _props_pattern(clip: vs.VideoNode) -> list[float] | None:
    """The EV pattern carried by the source's own ``HdrExposureEV`` props, if any (renders frames)."""
    props = clip.get_frame(0).props
    if EV_PROP not in props:
        return None
    evs = [float(clip.get_frame(i).props[EV_PROP]) for i in range(min(6, clip.num_frames))]
    return _pattern_of(evs, f"the clip's {EV_PROP} props")


def _choose_exposures(clip: vs.VideoNode, rgb: vs.VideoNode, exposures: Sequence[float] | None, crf,
                      gamma: float) -> tuple[list[float], str]:
    """The pattern and where it came from: the argument, an ``exposures.txt`` that
    :func:`read_images` read, the frames' props, or detection (the only case that decodes more
    than the first frames' props)."""
    if exposures is not None:
        return validate_exposures(exposures, NODE), "exposures="
    facts = recall(clip)
    if "exposures_error" in facts:
        raise error(NODE, f"{facts['exposures_error']} (or pass exposures=[...])")
    if "frame_evs" in facts:
        where = facts["exposures_file"]
        pattern = _pattern_of(facts["frame_evs"], f"the EVs of {where}")
        try:
            return validate_exposures(pattern, NODE), where
        except vs.Error as e:
            raise error(NODE, f"{where}: {str(e).removeprefix(f'hdrvid.{NODE}: ')}") from None
    from_props = _props_pattern(rgb)
    if from_props is not None:
        return validate_exposures(from_props, NODE), f"the frames' {EV_PROP} props"
    found = detect_exposures(rgb, crf=crf, gamma=gamma)
    log.warning("hdrvid.linearize: detected %s", found.describe())
    return validate_exposures(found.exposures, NODE), f"detection ({found.describe()})"


def linearize(clip: vs.VideoNode, exposures: Sequence[float] | None = None,
              crf: str | os.PathLike | CRF = "gamma", gamma: float = 2.2,
              device: str = "auto", fp32: bool = False, num_streams: int | None = None) -> vs.VideoNode:
    """LDR footage -> linear radiance ``H = f^-1(L) / 2**EV`` (docs/design.md, "Radiometry").

    Args:
        clip: any constant-format RGB, YUV or GRAY clip; integers are normalised to [0, 1] and YUV
            is converted with its ``_Matrix``/``_Range`` props. Float frames tagged linear
            (``_Transfer`` 8, as :func:`read_exr` gives) are radiance already: ``H = x / 2**EV``,
            negative values set to 0 and nothing clipped at 1.
        exposures: EV (stops) of each frame of the repeating pattern starting at frame 0, e.g.
            ``[-1.5, 1.5]`` or ``[-2, 0, 2]``; given, no frame is decoded to build the node (see
            :func:`check_exposures` to compare them with the footage). ``None`` takes them from an
            ``exposures.txt`` that :func:`read_images` found or the frames' own ``HdrExposureEV``
            props, else detects them from frame brightness (and logs the result).
        crf: ``"gamma"`` (a power curve of ``gamma``), a lookup-table file written by
            :func:`estimate_crf` or :meth:`CRF.save`, or a :class:`~vs_hdrvid.ops.crf.CRF`;
            not applied to linear float frames.
        gamma: exponent of the ``"gamma"`` response.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        fp32: compute in float32 on CUDA too (default fp16 there).
        num_streams: frames processed concurrently; None: the default of every node
            (:func:`~vs_hdrvid.bridge.default_streams`: 1 on CUDA, VapourSynth's thread count on CPU).

    Returns:
        RGBS clip of linear radiance, ``_Transfer`` 8 (linear), with ``HdrExposureEV``,
        ``HdrExposureIndex``, ``HdrExposureCount`` and ``HdrExposurePattern`` on every frame.

    Raises:
        vs.Error: bad format, exposures that are not finite or span over 12 stops, an unreadable
            CRF file, an ``exposures.txt`` that cannot be used (when ``exposures`` is None), or a
            pattern that cannot be detected.
    """
    clip = check_clip(clip, NODE)
    rgb = to_rgb_float(clip, NODE)
    to_linear, crf_desc = _resolve_crf(crf, gamma, NODE)
    evs, evs_from = _choose_exposures(clip, rgb, exposures, crf, gamma)
    dev, dtype = pick_device(device, fp32, NODE)
    period = len(evs)
    is_float_input = clip.format.sample_type == vs.FLOAT
    runner = NodeRunner(NODE, dev, dtype, num_streams=num_streams)
    scales = [2.0 ** -e for e in evs]
    power = float(gamma) if isinstance(crf, str) and crf == "gamma" else None
    log.info("hdrvid.linearize: %d-exposure pattern %s from %s, CRF %s, on %s", period, evs, evs_from,
             crf_desc, dev)

    def curve(x: torch.Tensor, n: int, frame: vs.VideoFrame) -> torch.Tensor:
        """Radiance of the RGB values ``x`` ``(3, ..)`` of frame ``n``, in place."""
        if is_float_input and int(frame.props.get("_Transfer", 0)) == 8:
            return x.clamp_(min=0).mul_(scales[n % period])  # radiance already: no response, no clipping at 1
        if power is not None:  # clamp(x, 0, 1) ** gamma / 2**EV as exp2(gamma log2 x - EV): vectorised
            # (within 2e-6 relative of the float64 power law, a tenth of a 16-bit step), band by band
            for rows in row_bands(x.shape[-2], x.shape[-1], x.device):
                x[:, rows].clamp_(0, 1).log2_().mul_(power).sub_(evs[n % period]).exp2_()
            return x
        return to_linear(x.clamp_(0, 1)).mul_(scales[n % period])

    # integer RGB on CPU: every code's radiance is tabulated once (the conversion to float and the
    # curve above, evaluated on all codes), and a frame is one table look-up per plane
    tables = _CodeTables(clip, lambda x, i: curve(x, i, None)) if _CodeTables.usable(clip, dev) else None

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        if tables is not None:
            h = runner.output((3, clip.height, clip.width))  # published below: a pooled array of our own
            with runner.timed("curve"):
                tables.apply(f[0], n % period, h)
        else:
            x = runner.fetch(f[0], own=True)  # a tensor of our own: computed on in place, then published
            if is_float_input and not all(math.isfinite(float(v)) for v in torch.aminmax(x)):  # NaN propagates
                raise error(NODE, f"frame {n} has NaN or infinite pixels; clean the source first")
            with runner.timed("curve"):
                h = curve(x, n, f[0])
        props = dict(f[0].props)
        props.update({EV_PROP: evs[n % period], INDEX_PROP: n % period, COUNT_PROP: period,
                      PATTERN_PROP: evs, "_Transfer": 8, "_Matrix": 0, "_Range": 1})
        return runner.emit(h, vs.core.get_video_format(vs.RGBS), props)

    out = runner.map_frames(blank_like(rgb), [clip if tables is not None else rgb], process)
    return remember(out, **{PATTERN_PROP: evs, "exposures_from": evs_from})


class _CodeTables:
    """The radiance of every code of an integer RGB clip, per exposure index and range props.

    Equal, code for code, to what the float path gives: the codes are converted to float by the
    same ``to_rgb_float`` (``resize.Point``, which reads ``_Range`` / ``_ColorRange``) on a small
    clip of every code made here (once per combination of those props, when the node is built: no
    frame of the input is rendered), and the curve is applied to them as to a frame (lazily, once
    per exposure index). A frame is then one ``numpy.take`` per plane, band by band.
    """

    RANGE_PROPS = ("_Range", "_ColorRange")

    @staticmethod
    def usable(clip: vs.VideoNode, device: torch.device) -> bool:
        fmt = clip.format
        return (device.type == "cpu" and fmt.color_family == vs.RGB and fmt.sample_type == vs.INTEGER
                and fmt.bits_per_sample <= 16)

    def __init__(self, clip: vs.VideoNode, curve: Callable[[torch.Tensor, int], torch.Tensor]):
        self.curve, self.codes = curve, 1 << (8 * clip.format.bytes_per_sample)  # every value a plane can hold
        width = 256
        ramp = vs.core.std.BlankClip(clip, width=width, height=self.codes // width, length=1, keep=True)
        values = np.arange(self.codes, dtype=np.uint16 if self.codes > 256 else np.uint8).reshape(-1, width)

        def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
            out = f.copy()
            for p in range(3):
                np.copyto(np.asarray(out[p]), values)
            return out

        ramp = vs.core.std.ModifyFrame(ramp, ramp, fill)
        self.floats: dict[tuple, torch.Tensor] = {}
        for key in ((a, b) for a in (None, 0, 1) for b in (None, 0, 1)):
            props = {k: v for k, v in zip(self.RANGE_PROPS, key) if v is not None}
            try:
                with warnings.catch_warnings():  # _ColorRange is deprecated, and still read by resize
                    warnings.simplefilter("ignore", DeprecationWarning)
                    tagged = vs.core.std.SetFrameProps(ramp, **props) if props else ramp
                    frame = to_rgb_float(tagged, NODE).get_frame(0)
            except vs.Error:  # a combination resize refuses: the frames that carry it fail there too
                continue
            self.floats[key] = torch.from_numpy(np.stack([np.asarray(frame[p]).reshape(1, -1) for p in range(3)]))
        self.tables: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()

    def table(self, props: vs.FrameProps, index: int) -> np.ndarray:
        """``(3, codes)`` radiance of each code for a frame with these props at exposure ``index``."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            rng = tuple(int(props[k]) if k in props else None for k in self.RANGE_PROPS)
        key = (rng, index)
        with self._lock:
            t = self.tables.get(key)
        if t is None:
            if rng not in self.floats:
                raise error(NODE, f"cannot convert RGB frames with {dict(zip(self.RANGE_PROPS, rng))} to float")
            t = self.curve(self.floats[rng].clone(), index).reshape(3, -1).numpy()
            with self._lock:
                self.tables[key] = t
        return t

    def apply(self, frame: vs.VideoFrame, index: int, out: torch.Tensor) -> None:
        """Write frame's radiance into ``out`` ``(3, H, W)`` (counts one upload)."""
        table, dst = self.table(frame.props, index), out.numpy()
        step = max(1, BAND_PIXELS // frame.width)
        for p in range(3):
            src = np.asarray(frame[p])
            for r in range(0, frame.height, step):  # bands: the rows and their table stay in cache
                np.take(table[p], src[r:r + step], out=dst[p, r:r + step], mode="wrap")
        counters.add("uploads")


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
