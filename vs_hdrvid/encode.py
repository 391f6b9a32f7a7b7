"""Delivering clips: HDR10 video through ffmpeg (libx265 Main10), image sequences, progress."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import ffmpeg
import numpy as np
import vapoursynth as vs

from .outputs import atomic_path

__all__ = ["ffmpeg_exe", "x265_hdr10_params", "encode_hdr10", "iterate_frames", "content_light_payload",
           "rewrite_content_light"]

CONTAINERS = {".mkv": "matroska", ".mp4": "mp4", ".mov": "mov"}


def ffmpeg_exe() -> str:
    """``ffmpeg`` from PATH, else the binary bundled with imageio-ffmpeg."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def x265_hdr10_params(props: vs.FrameProps | dict, cll: tuple[int, int] | None = None) -> str:
    """x265 parameters for HDR10 signalling from a frame's mastering-display and CLL props.

    Chromaticities are in 0.00002 units and luminance in 0.0001 cd/m2, as x265 expects. ``cll``
    replaces the props' ``ContentLightLevelMax/Average`` (MaxCLL, MaxFALL).
    """
    px, py = props["MasteringDisplayPrimariesX"], props["MasteringDisplayPrimariesY"]
    wx, wy = props["MasteringDisplayWhitePointX"], props["MasteringDisplayWhitePointY"]
    c = lambda v: int(round(float(v) / 0.00002))  # noqa: E731
    lum = lambda v: int(round(float(v) * 10000))  # noqa: E731
    # x265 orders G, B, R; the props hold R, G, B
    md = (f"G({c(px[1])},{c(py[1])})B({c(px[2])},{c(py[2])})R({c(px[0])},{c(py[0])})"
          f"WP({c(wx)},{c(wy)})L({lum(props['MasteringDisplayMaxLuminance'])},"
          f"{lum(props['MasteringDisplayMinLuminance'])})")
    if cll is None:
        cll = (int(props["ContentLightLevelMax"]), int(props["ContentLightLevelAverage"]))
    cll = f"{int(cll[0])},{int(cll[1])}"
    return (f"hdr10=1:hdr10-opt=1:repeat-headers=1:colorprim=bt2020:transfer=smpte2084:"
            f"colormatrix=bt2020nc:range=limited:master-display={md}:max-cll={cll}:log-level=error")


def iterate_frames(clip: vs.VideoNode, progress: bool = True, desc: str = "frames"
                   ) -> Iterator[tuple[int, vs.VideoFrame]]:
    """Frames of ``clip`` in order (prefetched in parallel by VapourSynth), with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=clip.num_frames, desc=desc, unit="fr", disable=not progress, file=sys.stderr,
               dynamic_ncols=True, smoothing=0.1)
    try:
        for n, f in enumerate(clip.frames(close=True)):
            yield n, f
            bar.update(1)
    finally:
        bar.close()


# x265 writes the content light level SEI (payload type 144, 4 bytes) as a NAL of its own at every
# IRAP picture: a 9-byte NAL after its length prefix (mp4/mkv) or start code. The encode runs with
# this placeholder, which needs no emulation-prevention byte, and the measured values replace it.
CLL_PLACEHOLDER = (65535, 65534)
_CLL_NAL = bytes.fromhex("00094e019004")  # length 9, prefix SEI NAL header, type 144, size 4


def _cll_bytes(max_cll: int, max_fall: int) -> bytes:
    return int(max_cll).to_bytes(2, "big") + int(max_fall).to_bytes(2, "big")


def _needs_escape(payload: bytes) -> bool:
    """Whether ``payload`` inside the SEI NAL would need an emulation-prevention byte."""
    data = b"\x04" + payload + b"\x80"
    return any(data[i] == 0 and data[i + 1] == 0 and data[i + 2] <= 3 for i in range(len(data) - 2))


def content_light_payload(max_cll: float, max_fall: float) -> tuple[int, int]:
    """MaxCLL and MaxFALL (cd/m2) as the integers the SEI carries: rounded, clamped to 16 bits,
    MaxFALL at most MaxCLL, and MaxCLL raised by 1 in the rare case (a multiple of 256 with
    MaxFALL under 4, or 0) whose bytes would need an emulation-prevention byte."""
    cll = min(65535, max(0, round(max_cll)))
    fall = min(cll, max(0, round(max_fall)))
    while _needs_escape(_cll_bytes(cll, fall)) and cll < 65535:
        cll += 1
    return cll, fall


def rewrite_content_light(path: str | os.PathLike, max_cll: int, max_fall: int,
                          chunk: int = 1 << 24) -> int:
    """Replace the placeholder content light level SEI x265 wrote into ``path`` (in place).

    Returns:
        how many SEI NAL units were rewritten (one per IRAP picture, and the one in the header).
    """
    old = _CLL_NAL + _cll_bytes(*CLL_PLACEHOLDER) + b"\x80"
    new = _cll_bytes(max_cll, max_fall)
    assert not _needs_escape(new), (max_cll, max_fall)
    offsets, pos, tail = [], 0, b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            data = tail + block
            i = data.find(old)
            while i >= 0:
                offsets.append(pos - len(tail) + i + len(_CLL_NAL))
                i = data.find(old, i + 1)
            tail = data[-(len(old) - 1):]
            pos += len(block)
    with open(path, "r+b") as f:
        for off in offsets:
            f.seek(off)
            f.write(new)
    return len(offsets)


def encode_hdr10(clip: vs.VideoNode, path: str | os.PathLike, crf: int = 18, preset: str = "medium",
                 progress: bool = True, on_frame: Callable[[int], None] | None = None,
                 atomic: Callable[[Path], ContextManager[str]] = atomic_path, report: dict | None = None
                 ) -> Path:
    """Encode a PQ YUV420P10 clip (``tonemap(op="pq")``) to HEVC Main10 HDR10 at ``path``.

    MaxCLL and MaxFALL are measured over the encoded frames: the largest ``HdrFrameMaxNits`` and
    ``HdrFrameAverageNits`` that :func:`~vs_hdrvid.nodes.tonemap` sets on each frame (the
    brightest channel of each pixel, in cd/m2, before 10-bit quantisation and chroma subsampling),
    written into the stream's content light level SEI once the last frame is encoded. A clip
    without those props keeps its ``ContentLightLevelMax/Average`` props.

    The file is written under a temporary name and renamed when ffmpeg has finished; on any error
    the temporary file is removed and nothing appears at ``path``.

    Args:
        atomic: the context manager giving the temporary name (a run's
            :meth:`vs_hdrvid.outputs.Claim.atomic`, which also records the file as written).
        report: filled with ``max_cll``, ``max_fall`` and whether they were ``measured``.

    Raises:
        ValueError: the clip is not YUV420P10 PQ with the HDR10 props, or the extension is unknown.
        RuntimeError: ffmpeg failed (its last error lines are included).
    """
    path = Path(path)
    if path.suffix.lower() not in CONTAINERS:
        raise ValueError(f"HDR10 output must be .mkv, .mp4 or .mov, got {path.name}")
    if clip.format.id != vs.YUV420P10:
        raise ValueError(f"HDR10 encoding expects YUV420P10 from tonemap(op='pq'), got {clip.format.name}")
    props = clip.get_frame(0).props
    if int(props.get("_Transfer", 0)) != 16 or "MasteringDisplayMaxLuminance" not in props:
        raise ValueError("HDR10 encoding expects PQ frames with mastering props (tonemap(op='pq'))")
    fps = f"{clip.fps.numerator}/{clip.fps.denominator}" if clip.fps.numerator else "24/1"
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="yuv420p10le",
                          s=f"{clip.width}x{clip.height}", framerate=fps)
    # tag the frames themselves: the encoder and the muxer take their colour description from them
    stream = stream.filter("setparams", color_primaries="bt2020", color_trc="smpte2084",
                           colorspace="bt2020nc", range="tv")
    peak, fall, measured = 0.0, 0.0, True
    with atomic(path) as tmp:
        opts = {"x265-params": x265_hdr10_params(props, cll=CLL_PLACEHOLDER)}
        if path.suffix.lower() != ".mkv":
            opts["tag:v"] = "hvc1"  # what Apple players expect for HEVC in MP4/MOV
        out = ffmpeg.output(stream, tmp, format=CONTAINERS[path.suffix.lower()], vcodec="libx265",
                            pix_fmt="yuv420p10le", crf=crf, preset=preset, color_primaries="bt2020",
                            color_trc="smpte2084", colorspace="bt2020nc", color_range="tv", **opts)
        out = out.global_args("-hide_banner", "-loglevel", "error", "-nostats").overwrite_output()
        proc = out.run_async(cmd=ffmpeg_exe(), pipe_stdin=True, pipe_stderr=True)
        try:
            for n, f in iterate_frames(clip, progress, desc=f"encoding {path.name}"):
                for p in range(3):
                    proc.stdin.write(np.ascontiguousarray(np.asarray(f[p])).tobytes())
                if "HdrFrameMaxNits" in f.props and "HdrFrameAverageNits" in f.props:
                    peak = max(peak, float(f.props["HdrFrameMaxNits"]))
                    fall = max(fall, float(f.props["HdrFrameAverageNits"]))
                else:
                    measured = False
                if on_frame:
                    on_frame(n)
            proc.stdin.close()
        except BrokenPipeError:
            proc.wait()
            err = proc.stderr.read().decode(errors="replace").strip()
            raise RuntimeError(f"ffmpeg stopped early: {err.splitlines()[-1] if err else 'no output'}") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed: {' | '.join(err.strip().splitlines()[-3:]) or 'no output'}")
        if not measured:
            peak, fall = float(props["ContentLightLevelMax"]), float(props["ContentLightLevelAverage"])
        max_cll, max_fall = content_light_payload(peak, fall)
        if rewrite_content_light(tmp, max_cll, max_fall) == 0:
            raise RuntimeError(f"found no content light level SEI in the encoded {path.name} to write "
                               f"MaxCLL {max_cll} and MaxFALL {max_fall} into")
    if report is not None:
        report.update(max_cll=max_cll, max_fall=max_fall, measured=measured)
    return path
