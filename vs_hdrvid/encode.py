"""Delivering clips: HDR10 video through ffmpeg (libx265 Main10), image sequences, progress."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator

import ffmpeg
import numpy as np
import vapoursynth as vs

from .ops.exr import atomic_path

__all__ = ["ffmpeg_exe", "x265_hdr10_params", "encode_hdr10", "iterate_frames"]

CONTAINERS = {".mkv": "matroska", ".mp4": "mp4", ".mov": "mov"}


def ffmpeg_exe() -> str:
    """``ffmpeg`` from PATH, else the binary bundled with imageio-ffmpeg."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def x265_hdr10_params(props: vs.FrameProps | dict) -> str:
    """x265 parameters for HDR10 signalling from a frame's mastering-display and CLL props.

    Chromaticities are in 0.00002 units and luminance in 0.0001 cd/m2, as x265 expects.
    """
    px, py = props["MasteringDisplayPrimariesX"], props["MasteringDisplayPrimariesY"]
    wx, wy = props["MasteringDisplayWhitePointX"], props["MasteringDisplayWhitePointY"]
    c = lambda v: int(round(float(v) / 0.00002))  # noqa: E731
    lum = lambda v: int(round(float(v) * 10000))  # noqa: E731
    # x265 orders G, B, R; the props hold R, G, B
    md = (f"G({c(px[1])},{c(py[1])})B({c(px[2])},{c(py[2])})R({c(px[0])},{c(py[0])})"
          f"WP({c(wx)},{c(wy)})L({lum(props['MasteringDisplayMaxLuminance'])},"
          f"{lum(props['MasteringDisplayMinLuminance'])})")
    cll = f"{int(props['ContentLightLevelMax'])},{int(props['ContentLightLevelAverage'])}"
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


def encode_hdr10(clip: vs.VideoNode, path: str | os.PathLike, crf: int = 18, preset: str = "medium",
                 progress: bool = True, on_frame: Callable[[int], None] | None = None) -> Path:
    """Encode a PQ YUV420P10 clip (``tonemap(op="pq")``) to HEVC Main10 HDR10 at ``path``.

    The file is written under a temporary name and renamed when ffmpeg has finished; on any error
    the temporary file is removed and nothing appears at ``path``.

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
    with atomic_path(path) as tmp:
        opts = {"x265-params": x265_hdr10_params(props)}
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
    return path
