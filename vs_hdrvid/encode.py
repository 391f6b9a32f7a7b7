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

__all__ = ["ffmpeg_exe", "x265_hdr10_params", "encode_hdr10", "Hdr10Encoder", "hdr10_props", "frame_bytes",
           "frame_light", "iterate_frames", "content_light_payload", "rewrite_content_light"]

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


def frame_bytes(frame: vs.VideoFrame) -> bytes:
    """A frame's planes as the raw bytes ffmpeg reads (``yuv420p10le`` for the HDR10 clip)."""
    return b"".join(np.ascontiguousarray(np.asarray(frame[p])).tobytes() for p in range(frame.format.num_planes))


def frame_light(props: vs.FrameProps | dict) -> tuple[float, float] | None:
    """The ``(HdrFrameMaxNits, HdrFrameAverageNits)`` that :func:`~vs_hdrvid.nodes.tonemap` set on a
    frame, None when it has them not."""
    if "HdrFrameMaxNits" in props and "HdrFrameAverageNits" in props:
        return float(props["HdrFrameMaxNits"]), float(props["HdrFrameAverageNits"])
    return None


def hdr10_props(props: vs.FrameProps | dict) -> dict:
    """The props of a PQ frame that the HDR10 signalling is made of (plain values, picklable).

    Raises:
        ValueError: not a PQ frame with the mastering props of ``tonemap(op='pq')``.
    """
    if int(props.get("_Transfer", 0)) != 16 or "MasteringDisplayMaxLuminance" not in props:
        raise ValueError("HDR10 encoding expects PQ frames with mastering props (tonemap(op='pq'))")
    keys = [k for k in props if k.startswith(("MasteringDisplay", "ContentLightLevel"))]
    return {k: (list(props[k]) if isinstance(props[k], (list, tuple)) else props[k]) for k in keys}


class Hdr10Encoder:
    """One HEVC Main10 HDR10 encode through ffmpeg (libx265), fed raw PQ YUV420P10 frames.

    Used as a context manager: the file appears at ``path`` (written under a temporary name by
    ``atomic``) only when every frame was encoded and MaxCLL/MaxFALL were written into the stream's
    content light level SEI: the largest light of the frames given to :meth:`write` (each frame's
    ``HdrFrameMaxNits`` and ``HdrFrameAverageNits``), or the props' ``ContentLightLevelMax/Average``
    if any frame came without them. Any error kills ffmpeg and leaves nothing at ``path``.

    Args:
        path: ``.mkv``, ``.mp4`` or ``.mov``.
        size: ``(width, height)``.
        fps: ``(numerator, denominator)``; a numerator of 0 gives 24 fps.
        props: the HDR10 props of the frames (:func:`hdr10_props`).
        atomic: the context manager giving the temporary name (a run's
            :meth:`vs_hdrvid.outputs.Claim.atomic`, which also records the file as written).

    Attributes:
        report: after the block, ``max_cll``, ``max_fall`` and whether they were ``measured``.
    """

    def __init__(self, path: str | os.PathLike, size: tuple[int, int], fps: tuple[int, int], props: dict,
                 crf: int = 18, preset: str = "medium",
                 atomic: Callable[[Path], ContextManager[str]] = atomic_path):
        self.path = Path(path)
        if self.path.suffix.lower() not in CONTAINERS:
            raise ValueError(f"HDR10 output must be .mkv, .mp4 or .mov, got {self.path.name}")
        self.size, self.props, self.crf, self.preset, self._atomic = size, props, crf, preset, atomic
        self.fps = f"{fps[0]}/{fps[1]}" if fps[0] else "24/1"
        self.frames, self.report = 0, {}
        self._peak, self._fall, self._measured = 0.0, 0.0, True

    def __enter__(self) -> "Hdr10Encoder":
        self._block = self._atomic(self.path)
        self._tmp = self._block.__enter__()
        try:
            self._proc = self._start(self._tmp)
        except BaseException:
            self._block.__exit__(*sys.exc_info())
            raise
        return self

    def _start(self, tmp: str):
        w, h = self.size
        stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="yuv420p10le", s=f"{w}x{h}", framerate=self.fps)
        # tag the frames themselves: the encoder and the muxer take their colour description from them
        stream = stream.filter("setparams", color_primaries="bt2020", color_trc="smpte2084",
                               colorspace="bt2020nc", range="tv")
        opts = {"x265-params": x265_hdr10_params(self.props, cll=CLL_PLACEHOLDER)}
        if self.path.suffix.lower() != ".mkv":
            opts["tag:v"] = "hvc1"  # what Apple players expect for HEVC in MP4/MOV
        out = ffmpeg.output(stream, tmp, format=CONTAINERS[self.path.suffix.lower()], vcodec="libx265",
                            pix_fmt="yuv420p10le", crf=self.crf, preset=self.preset, color_primaries="bt2020",
                            color_trc="smpte2084", colorspace="bt2020nc", color_range="tv", **opts)
        out = out.global_args("-hide_banner", "-loglevel", "error", "-nostats").overwrite_output()
        return out.run_async(cmd=ffmpeg_exe(), pipe_stdin=True, pipe_stderr=True)

    def write(self, data: bytes | memoryview, light: tuple[float, float] | None) -> None:
        """Encode one frame: its raw planes (:func:`frame_bytes`) and its :func:`frame_light`."""
        try:
            self._proc.stdin.write(data)
        except BrokenPipeError:
            self._proc.wait()
            err = self._proc.stderr.read().decode(errors="replace").strip()
            raise RuntimeError(f"ffmpeg stopped early: {err.splitlines()[-1] if err else 'no output'}") from None
        if light is None:
            self._measured = False
        else:
            self._peak, self._fall = max(self._peak, light[0]), max(self._fall, light[1])
        self.frames += 1

    def __exit__(self, kind, value, tb) -> bool:
        try:
            if kind is not None:
                self._proc.kill()
                self._proc.wait()
            else:
                self._finish()
        except BaseException:
            if self._block.__exit__(*sys.exc_info()):
                return True
            raise
        return bool(self._block.__exit__(kind, value, tb))

    def _finish(self) -> None:
        proc = self._proc
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed: {' | '.join(err.strip().splitlines()[-3:]) or 'no output'}")
        peak, fall = self._peak, self._fall
        if not self._measured:
            peak, fall = float(self.props["ContentLightLevelMax"]), float(self.props["ContentLightLevelAverage"])
        max_cll, max_fall = content_light_payload(peak, fall)
        if rewrite_content_light(self._tmp, max_cll, max_fall) == 0:
            raise RuntimeError(f"found no content light level SEI in the encoded {self.path.name} to write "
                               f"MaxCLL {max_cll} and MaxFALL {max_fall} into")
        self.report = {"max_cll": max_cll, "max_fall": max_fall, "measured": self._measured}


def encode_hdr10(clip: vs.VideoNode, path: str | os.PathLike, crf: int = 18, preset: str = "medium",
                 progress: bool = True, on_frame: Callable[[int], None] | None = None,
                 atomic: Callable[[Path], ContextManager[str]] = atomic_path, report: dict | None = None
                 ) -> Path:
    """Encode a PQ YUV420P10 clip (``tonemap(op="pq")``) to HEVC Main10 HDR10 at ``path``.

    MaxCLL and MaxFALL are measured over the encoded frames: the largest ``HdrFrameMaxNits`` and
    ``HdrFrameAverageNits`` that :func:`~vs_hdrvid.nodes.tonemap` sets on each frame (the
    brightest channel of each pixel, in cd/m2, before 10-bit quantisation and chroma subsampling),
    written into the stream's content light level SEI once the last frame is encoded. A clip
    without those props keeps its ``ContentLightLevelMax/Average`` props (:class:`Hdr10Encoder`).

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
    props = hdr10_props(clip.get_frame(0).props)
    encoder = Hdr10Encoder(path, (clip.width, clip.height), (clip.fps.numerator, clip.fps.denominator), props,
                           crf=crf, preset=preset, atomic=atomic)
    with encoder:
        for n, f in iterate_frames(clip, progress, desc=f"encoding {path.name}"):
            encoder.write(frame_bytes(f), frame_light(f.props))
            if on_frame:
                on_frame(n)
    if report is not None:
        report.update(encoder.report)
    return path
