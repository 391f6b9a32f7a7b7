"""``tonemap``: linear HDR -> mu-law, Reinhard, PQ / HLG (HDR10 / BT.2100) or an 8-bit SDR preview."""
from __future__ import annotations

import math

import numpy as np
import torch
import vapoursynth as vs

from ..bridge import NodeRunner, blank_like, clamped_shift
from ..bridge.requests import same_frames
from ..ops.bands import row_bands
from ..ops.color import primaries_matrix
from ..ops.tonemap import (PQ_PEAK_NITS, bt709_oetf, highlight_rolloff_, hlg_display_to_scene,
                           hlg_oetf, log_average_luminance, mulaw, pq_encode_normalized_,
                           pq_encode_normalized_numpy_, reinhard)
from ._common import PATTERN_PROP, check_clip, error, exposure_pattern_of, pick_device, recall

__all__ = ["tonemap", "HDR10_PRIMARIES"]

NODE = "tonemap"
OPS = ("mulaw", "reinhard", "pq", "hlg", "sdr")
STATS_PROP = "HdrLogAverage"
# BT.2020 primaries and D65 white, the mastering display the HDR10 props describe
HDR10_PRIMARIES = {"MasteringDisplayPrimariesX": [0.708, 0.170, 0.131],
                   "MasteringDisplayPrimariesY": [0.292, 0.797, 0.046],
                   "MasteringDisplayWhitePointX": 0.3127, "MasteringDisplayWhitePointY": 0.3290}


def _display_light(runner: NodeRunner, x: torch.Tensor, gain: float, peak: float, knee: float
                   ) -> tuple[torch.Tensor, float, float]:
    """BT.2020 display light (cd/m2) of BT.709 radiance ``x`` times ``gain``, highlights rolled off.

    ``highlight_rolloff(bt709_to_bt2020(x.clamp(min=0) * gain).clamp(min=0), peak, knee)`` in
    the runner's scratch buffers: one matrix product for primaries and gain, then
    :func:`~vs_hdrvid.ops.tonemap.highlight_rolloff_` in place. Also returns the peak and the sum of
    the brightest channel (for the HDR frame props). ``x`` may be a band of rows of a frame.

    Shape:
        ``(3, H, W)`` -> ``(3, H, W)`` (a scratch buffer: copy it before keeping it).
    """
    c, h, w = x.shape
    src = torch.clamp(x, min=0, out=runner.scratch("src", x.shape, torch.float32))
    mat = torch.as_tensor(primaries_matrix("709", "2020") * gain, dtype=torch.float32, device=x.device)
    nits = runner.scratch("nits", x.shape, torch.float32)
    torch.mm(mat, src.view(c, -1), out=nits.view(c, -1))
    nits.clamp_(min=0)
    m = torch.amax(nits, 0, keepdim=True, out=runner.scratch("max", (1, h, w), torch.float32))
    m = highlight_rolloff_(nits, peak, knee, brightest=m, work=(src[:1], src[1:2]))  # brightest after
    return nits, float(m.max()), float(m.sum(dtype=torch.float64))


def _hdr_frame(runner: NodeRunner, x: torch.Tensor, gain: float, peak: float, op: str, props: dict
               ) -> vs.VideoFrame:
    """PQ or HLG signal of linear BT.709 radiance ``x`` ``(3, H, W)`` as a new RGBS frame.

    Band by band: display light (:func:`_display_light`), the transfer curve in place, and the
    band written straight into the frame's planes on CPU.
    """
    _, h, w = x.shape
    fmt = vs.core.get_video_format(vs.RGBS)
    if x.device.type == "cpu":
        frame, planes = runner.new_frame(fmt, w, h)
    else:
        frame, planes = None, runner.scratch("signal", x.shape, torch.float32)
    peak_seen, total = 0.0, 0.0
    for rows in row_bands(h, w, x.device):
        nits, band_peak, band_sum = _display_light(runner, x[:, rows], gain, peak, 0.75 * peak)
        peak_seen, total = max(peak_seen, band_peak), total + band_sum
        if op == "pq" and x.device.type == "cpu":  # numpy's curves: twice as fast, as accurate
            signal = torch.from_numpy(pq_encode_normalized_numpy_(nits.div_(PQ_PEAK_NITS).numpy()))
        elif op == "pq":
            signal = pq_encode_normalized_(nits.div_(PQ_PEAK_NITS))
        else:
            signal = hlg_oetf(hlg_display_to_scene(nits, peak))
        for p in range(3):  # clamped straight into the frame's planes
            torch.clamp(signal[p], 0, 1, out=planes[p][rows])
    props.update({"_Transfer": 16 if op == "pq" else 18, "_Primaries": 9,
                  "HdrFrameMaxNits": peak_seen, "HdrFrameAverageNits": total / (h * w)})
    if frame is None:
        return runner.emit(planes, fmt, props, publish=False)
    frame.props.update(props)
    return frame


def _h_sat(props: vs.FrameProps, n: int) -> float:
    """``1 / 2**min(EV)`` from a frame's ``HdrExposurePattern``, which every node after linearize keeps."""
    pattern = exposure_pattern_of(props)
    if pattern is None:
        raise error(NODE, f"frame {n}: mulaw needs the exposure pattern props of hv.linearize on the clip")
    return 2.0 ** -min(pattern)


def _stats_clip(clip: vs.VideoNode) -> vs.VideoNode:
    """A tiny copy of ``clip`` whose frames carry their log-average luminance as a prop."""
    w = min(64, clip.width)
    h = max(2, round(clip.height * w / clip.width / 2) * 2)
    small = vs.core.resize.Bilinear(clip, width=w, height=h) if clip.width > w else clip

    def stat(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        x = torch.from_numpy(np.stack([np.asarray(f[p]) for p in range(3)]))[None]
        out = f.copy()
        out.props[STATS_PROP] = float(log_average_luminance(x.float())[0])
        return out

    return same_frames(vs.core.std.ModifyFrame(small, small, stat), clip)


def tonemap(clip: vs.VideoNode, op: str = "pq", peak_nits: float = 1000.0, white_nits: float = 203.0,
            key: float | None = None, smooth: int = 8, output: str = "yuv", mu: float = 5000.0,
            device: str = "auto", fp32: bool = False, num_streams: int | None = None) -> vs.VideoNode:
    """Tone-map or encode linear HDR for display or delivery.

    Ops:
        ``mulaw``: ``log(1 + mu H / H_sat) / log(1 + mu)`` with ``H_sat = 1 / 2**min(EV)``, the
        papers' metric space (RGBS). ``reinhard``: global Reinhard 2002 on a temporally smoothed
        log-average key (RGBS, display-linear). ``pq`` / ``hlg``: BT.709 -> BT.2020 primaries,
        SMPTE ST 2084 or ARIB STD-B67 (BT.2100), scene key mapped to the reference white
        ``white_nits`` and highlights rolled off to ``peak_nits``; YUV420P10 (BT.2020 NCL, limited)
        or RGB48 with the HDR10 props. ``sdr``: an 8-bit BT.709 RGB24 preview (Reinhard + BT.709).

    Args:
        clip: linear RGBS HDR (from merge, coarse, refine, dealthdr or read_exr).
        op: one of ``mulaw``, ``reinhard``, ``pq``, ``hlg``, ``sdr``.
        peak_nits: display peak for ``pq``/``hlg`` (mastering MaxLuminance).
        white_nits: nits of the reference (diffuse) white, BT.2408's 203 by default.
        key: radiance mapped to the reference white; None (default) is automatic: the log-average
            luminance over ``2 * smooth + 1`` frames is mapped to 18 % of it, so the picture does
            not flicker.
        smooth: half-width in frames of the automatic key's temporal average (0: per frame).
        output: ``"yuv"`` (YUV420P10) or ``"rgb"`` (RGB48) for ``pq``/``hlg``.
        mu: mu of ``mulaw``.
        device, fp32: as for the other nodes.
        num_streams: frames processed concurrently; None: the default of every node
            (:func:`~vs_hdrvid.bridge.default_streams`: 1 on CUDA, VapourSynth's thread count on CPU).
    """
    clip = check_clip(clip, NODE)
    if op not in OPS:
        raise error(NODE, f"op must be one of {', '.join(OPS)}, got {op!r}")
    if clip.format.id not in (vs.RGBS, vs.RGBH):
        raise error(NODE, f"expects linear RGBS HDR, got {clip.format.name}")
    if not (math.isfinite(peak_nits) and 100 <= peak_nits <= 10000):
        raise error(NODE, f"peak_nits must be within 100..10000, got {peak_nits}")
    if not (math.isfinite(white_nits) and 10 <= white_nits < peak_nits):
        raise error(NODE, f"white_nits must be within 10..peak_nits, got {white_nits}")
    if key is not None and not (math.isfinite(key) and key > 0):
        raise error(NODE, f"key must be a positive radiance or None, got {key}")
    if output not in ("yuv", "rgb"):
        raise error(NODE, f"output must be 'yuv' or 'rgb', got {output!r}")
    if not isinstance(smooth, int) or not 0 <= smooth <= 120:
        raise error(NODE, f"smooth must be an integer within 0..120, got {smooth!r}")
    dev, dtype = pick_device(device, fp32, NODE)
    runner = NodeRunner(NODE, dev, dtype, num_streams=num_streams)
    known = recall(clip).get(PATTERN_PROP)  # a clip linearize made; others say on every frame
    h_sat_known = 2.0 ** -min(known) if known else None
    stats = _stats_clip(clip) if key is None and op != "mulaw" else None
    stat_clips = [clamped_shift(stats, o) for o in range(-smooth, smooth + 1)] if stats is not None else []
    rgbs = vs.core.get_video_format(vs.RGBS)

    def scene_key(f: list[vs.VideoFrame]) -> float:
        if key is not None:
            return 0.18 * key  # so that radiance `key` lands on the reference white below
        logs = [math.log(max(float(s.props[STATS_PROP]), 1e-9)) for s in f[1:]]
        return math.exp(sum(logs) / len(logs))

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        props = {k: v for k, v in dict(f[0].props).items() if not k.startswith("Hdrvid")}
        if op in ("pq", "hlg"):
            x = runner.fetch(f[0]).float()[None]  # clamped in _display_light
        else:
            x = runner.fetch(f[0]).float().clamp(min=0)[None]
        if op == "mulaw":
            out = mulaw((x / (h_sat_known or _h_sat(f[0].props, n))).clamp(0, 1), mu)
            return runner.emit(out[0], rgbs, props, publish=False)
        if op in ("reinhard", "sdr"):
            out = reinhard(x, key=0.18, log_avg=scene_key(f)).clamp(0, 1)
            if op == "sdr":
                out = bt709_oetf(out)
            props.update({"_Transfer": 8 if op == "reinhard" else 1, "_Primaries": 1})
            return runner.emit(out[0], rgbs, props, publish=False)
        return _hdr_frame(runner, x[0], 0.18 * white_nits / scene_key(f), peak_nits, op, props)

    out = runner.map_frames(blank_like(clip), [clip] + stat_clips, process)
    if op == "sdr":
        return same_frames(vs.core.resize.Point(out, format=vs.RGB24, dither_type="error_diffusion"), out)
    if op in ("pq", "hlg"):
        static = dict(HDR10_PRIMARIES, MasteringDisplayMinLuminance=0.0001,
                      MasteringDisplayMaxLuminance=float(peak_nits),
                      ContentLightLevelMax=int(round(peak_nits)), ContentLightLevelAverage=0)
        out = same_frames(vs.core.std.SetFrameProps(out, **static), out)
        if output == "yuv":
            return same_frames(vs.core.resize.Bicubic(out, format=vs.YUV420P10, matrix_s="2020ncl",
                                                      range_s="limited"), out)
        return same_frames(vs.core.resize.Point(out, format=vs.RGB48), out)
    return out
