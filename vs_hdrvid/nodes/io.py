"""Image-sequence sources and the EXR writer node."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import vapoursynth as vs

from ..ops.exr import check_exr
from ..ops.exr import read_exr as _read_exr_file
from ..ops.exr import write_exr as _write_exr_file
from ..ops.images import read_image
from ._common import EV_PROP, check_clip, error, log, remember

__all__ = ["source", "read_images", "read_exr", "write_exr", "sequence_files"]

core = vs.core
_PRINTF = re.compile(r"%0?(\d*)d")


def sequence_files(pattern: str | os.PathLike) -> list[Path]:
    """Files of a printf-style sequence (``dir/%05d.png``), from its first existing number on.

    The numbering may start at 0 or 1 (or anywhere below 1000) and must be contiguous.
    """
    pattern = os.fspath(pattern)
    if not _PRINTF.search(pattern):
        raise ValueError(f"{pattern!r} is not an image-sequence pattern like dir/%05d.png")
    start = next((i for i in range(1000) if os.path.isfile(pattern % i)), None)
    if start is None:
        raise FileNotFoundError(f"no file matches {pattern}")
    files = []
    i = start
    while os.path.isfile(pattern % i):
        files.append(Path(pattern % i))
        i += 1
    return files


def _read_image(path: Path) -> np.ndarray:
    """``(H, W, 3)`` RGB array: uint8, uint16 (PNG, TIFF) or float32 (EXR).

    Raises:
        OSError: one line naming the file: missing, truncated, damaged or of another type.
    """
    if path.suffix.lower() != ".exr":
        return read_image(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OSError(f"cannot read image {path}: {e.strerror or e}") from None
    check_exr(data, path)  # before OpenEXR complains
    return _read_exr_file(path)


EXPOSURES_FORMS = ("one EV per frame, or a repeating pattern of 2 or 3 EVs from frame 0 (e.g. -1.5,1.5), "
                   "separated by commas, spaces or new lines")


def parse_exposures_file(path: Path, count: int) -> list[float]:
    """The EV of each of ``count`` frames from an ``exposures.txt``.

    Accepts one EV per frame (extra values are ignored) or a repeating pattern of 2 or 3 EVs,
    separated by commas, spaces or new lines; ``#`` starts a comment.

    Raises:
        ValueError: the file cannot be read or holds neither form; the message names the file
            and the accepted forms.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    words = [w for line in text.splitlines() for w in re.split(r"[,;\s]+", line.split("#", 1)[0]) if w]
    try:
        evs = [float(w) for w in words]
    except ValueError:
        bad = next(w for w in words if not _is_float(w))
        raise ValueError(f"{path}: {bad[:20]!r} is not a number; write {EXPOSURES_FORMS}") from None
    if not all(math.isfinite(e) for e in evs):
        raise ValueError(f"{path}: EVs must be finite, got {[e for e in evs if not math.isfinite(e)][0]}; "
                         f"write {EXPOSURES_FORMS}")
    if len(evs) >= count:
        return evs[:count]
    if len(evs) in (2, 3):
        return [evs[i % len(evs)] for i in range(count)]
    raise ValueError(f"{path} holds {len(evs)} EV(s) for {count} frames; write {EXPOSURES_FORMS}")


def _is_float(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _exposures_file(pattern: str) -> Path | None:
    """An ``exposures.txt`` beside the frames or in their parent folder, if present."""
    folder = Path(pattern).parent
    return next((c for c in (folder / "exposures.txt", folder.parent / "exposures.txt") if c.is_file()), None)


def read_images(pattern: str | os.PathLike, fps: tuple[int, int] = (24, 1),
                exposures_file: bool = True) -> vs.VideoNode:
    """A clip from an image sequence: 8/16-bit PNG or TIFF, or EXR (``dir/%05d.png``).

    8-bit frames give RGB24, 16-bit RGB48 (``_Transfer`` 13, sRGB-like), EXR RGBS linear
    (``_Transfer`` 8: :func:`linearize` takes it as radiance, not through a camera response). An
    ``exposures.txt`` beside the frames or in their parent folder (one EV per frame, or a repeating
    pattern such as ``-1.5,1.5``; commas, spaces or new lines) sets ``HdrExposureEV`` on every
    frame, which :func:`linearize` then uses unless it is given ``exposures``. A file that holds
    neither form is reported by :func:`linearize` when it needs the EVs, so explicit exposures
    still work.

    Raises:
        vs.Error: no matching files, unreadable first frame, or mixed sizes (at frame time).
    """
    node = "read_images"
    try:
        files = sequence_files(pattern)
        first = _read_image(files[0])
    except (OSError, ValueError) as e:
        raise error(node, _oneline(str(e))) from None
    facts: dict = {}
    evs = None
    ev_file = _exposures_file(os.fspath(pattern)) if exposures_file else None
    if ev_file is not None:
        facts["exposures_file"] = os.fspath(ev_file)
        try:
            evs = parse_exposures_file(ev_file, len(files))
            facts["frame_evs"] = evs
        except ValueError as e:
            facts["exposures_error"] = str(e)
            log.info("hdrvid.%s: %s", node, e)
    fmt = {np.dtype(np.uint8): vs.RGB24, np.dtype(np.uint16): vs.RGB48,
           np.dtype(np.float32): vs.RGBS}[first.dtype]
    h, w = first.shape[:2]
    blank = core.std.BlankClip(format=fmt, width=w, height=h, length=len(files),
                               fpsnum=fps[0], fpsden=fps[1])
    transfer = 8 if fmt == vs.RGBS else 13  # EXR is linear; PNG/TIFF are taken as sRGB-like
    facts["transfer"] = transfer

    def load(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        try:
            img = _read_image(files[n])
        except OSError as e:
            raise error(node, f"frame {n}: {_oneline(str(e))}") from None
        if img.shape != first.shape or img.dtype != first.dtype:
            raise error(node, f"frame {n}: {files[n]} is {_describe(img)}, the sequence started with "
                              f"{_describe(first)} ({files[0].name})")
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), img[..., p])
        out.props.update({"_Matrix": 0, "_Range": 1, "_Transfer": transfer, "_Primaries": 1,
                          "HdrSourcePath": os.fspath(files[n])})
        if evs is not None:
            out.props[EV_PROP] = evs[n]
        return out

    return remember(core.std.ModifyFrame(blank, blank, load), **facts)


def _describe(img: np.ndarray) -> str:
    depth = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit", np.dtype(np.float32): "float"}
    return f"{img.shape[1]}x{img.shape[0]} {depth.get(img.dtype, str(img.dtype))}"


def _oneline(text: str) -> str:
    """Library messages (OpenEXR's) may span lines; a user sees one."""
    return " ".join(text.split())


def read_exr(pattern: str | os.PathLike, fps: tuple[int, int] = (24, 1)) -> vs.VideoNode:
    """A linear RGBS clip from an EXR sequence (``dir/%05d.exr``); see :func:`read_images`."""
    if not os.fspath(pattern).lower().endswith(".exr"):
        raise error("read_exr", f"expects an .exr pattern, got {pattern}")
    return read_images(pattern, fps, exposures_file=False)


def write_exr(clip: vs.VideoNode, pattern: str | os.PathLike, half: bool = True,
              first: int = 0) -> vs.VideoNode:
    """Pass ``clip`` through, writing each requested frame to ``pattern % (first + n)`` as EXR.

    Each file is written under a temporary name and renamed when complete, so an interrupted run
    never leaves a half-written frame.

    Args:
        clip: RGBS or RGBH linear clip.
        pattern: printf-style path, e.g. ``out/%05d.exr``; folders are created.
        half: half-float (default) or 32-bit float files.
        first: number of the first file.
    """
    node = "write_exr"
    clip = check_clip(clip, node)
    pattern = os.fspath(pattern)
    if clip.format.id not in (vs.RGBS, vs.RGBH):
        raise error(node, f"expects a linear RGBS/RGBH clip, got {clip.format.name}")
    if not _PRINTF.search(pattern) or not pattern.lower().endswith(".exr"):
        raise error(node, f"pattern must look like out/%05d.exr, got {pattern!r}")
    folder = Path(pattern).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(node, f"cannot create {folder}: {e}") from None
    if not os.access(folder, os.W_OK):
        raise error(node, f"{folder} is not writable")

    def write(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        rgb = np.stack([np.asarray(f[p]) for p in range(3)], -1)
        _write_exr_file(pattern % (first + n), rgb, half=half)
        return f

    return core.std.ModifyFrame(clip, clip, write)


def source(path: str | os.PathLike) -> vs.VideoNode:
    """Open ``path`` as a clip: a ``.vpy`` script (its output 0), an image-sequence pattern
    (``dir/%05d.png``, PNG/TIFF/EXR) or a video file (BestSource).

    Raises:
        vs.Error: the path does not exist, the script raises or sets no output, or the file cannot
            be decoded.
    """
    node = "source"
    path = os.fspath(path)
    if _PRINTF.search(path):
        return read_images(path)
    if not os.path.isfile(path):
        raise error(node, f"no such file: {path}")
    if path.lower().endswith(".vpy"):
        return _run_script(path)
    try:
        return core.bs.VideoSource(path)
    except vs.Error as e:
        raise error(node, f"cannot decode {path}: {str(e).splitlines()[0]}") from None


def _run_script(path: str) -> vs.VideoNode:
    import runpy

    vs.clear_outputs()
    try:
        runpy.run_path(path, run_name="__vapoursynth__")
    except vs.Error:
        raise
    except BaseException as e:  # a script may raise anything, SystemExit included
        raise error("source", f"{path} raised {type(e).__name__}: {e}") from None
    out = vs.get_outputs().get(0)
    if out is None:
        raise error("source", f"{path} sets no output 0 (call clip.set_output())")
    clip = out.clip if hasattr(out, "clip") else out
    if not isinstance(clip, vs.VideoNode):
        raise error("source", f"output 0 of {path} is not a video clip")
    return clip
