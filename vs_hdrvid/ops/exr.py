"""OpenEXR reading, atomic writing and structure checks of linear RGB images.

OpenEXR prints its own complaints about a damaged file to the process's stderr
(``(EXR_ERR_BAD_CHUNK_LEADER) ...``), and its message for a truncated file is "file has 0 parts";
:func:`check_exr` checks the header, the offset table and the chunk leaders first, so a damaged
frame is one clear message.

Convention: arrays are ``(H, W, 3)`` float32 linear radiance on read; half float on disk by default.
"""
from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import OpenEXR

from ..outputs import atomic_path

__all__ = ["read_exr", "write_exr", "check_exr"]

EXR_MAGIC = b"\x76\x2f\x31\x01"
# scanlines per chunk by EXR compression (OpenEXR's NONE, RLE, ZIPS, ZIP, PIZ, PXR24, B44, B44A,
# DWAA, DWAB)
_EXR_LINES = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}


def read_exr(path: str | os.PathLike) -> np.ndarray:
    """Read an EXR file as ``(H, W, 3)`` float32 RGB.

    Accepts files with an interleaved ``RGB``/``RGBA`` group or separate ``R``, ``G``, ``B``
    channels; a single ``Y`` channel is broadcast to grey.

    Raises:
        OSError: the file is missing or not a readable EXR.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OSError(f"no such EXR file: {path}")
    try:
        with OpenEXR.File(path) as f:
            ch = f.channels()
            if "RGB" in ch or "RGBA" in ch:
                px = np.asarray(ch.get("RGB", ch.get("RGBA")).pixels)[..., :3]
            elif all(c in ch for c in "RGB"):
                px = np.stack([np.asarray(ch[c].pixels) for c in "RGB"], axis=-1)
            elif "Y" in ch:
                px = np.repeat(np.asarray(ch["Y"].pixels)[..., None], 3, axis=-1)
            else:
                raise OSError(f"{path}: no RGB or Y channels (found {sorted(ch)})")
    except OSError:
        raise
    except Exception as e:  # OpenEXR raises plain Exceptions for corrupt files
        raise OSError(f"{path}: not a readable EXR ({e})") from e
    return np.ascontiguousarray(px, dtype=np.float32)


def write_exr(path: str | os.PathLike, rgb: np.ndarray, half: bool = True) -> None:
    """Write ``(H, W, 3)`` linear RGB to ``path`` atomically (temporary name, then rename).

    Args:
        path: destination ``.exr`` file; parent folders are created.
        rgb: ``(H, W, 3)`` array, any float dtype.
        half: store half floats (default) or 32-bit floats. Values above 65504 saturate in half.
    """
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"write_exr expects (H, W, 3), got {rgb.shape}")
    dtype = np.float16 if half else np.float32
    if half:
        rgb = np.clip(rgb, -65504.0, 65504.0)
    data = np.ascontiguousarray(rgb, dtype=dtype)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with OpenEXR.File(header, {"RGB": data}) as f:
            f.write(tmp)


def _exr_header(mv: memoryview, path) -> tuple[dict[str, bytes], int]:
    """Attributes (name -> raw value) of a single-part EXR header, and where the header ends."""
    pos, attrs = 8, {}
    while True:
        name_end = _cstring(mv, pos, path)
        if name_end == pos:  # an empty name closes the header
            return attrs, pos + 1
        type_end = _cstring(mv, name_end + 1, path)
        if type_end + 5 > len(mv):
            raise OSError(f"cannot read image {path}: the EXR header is truncated")
        size = struct.unpack_from("<i", mv, type_end + 1)[0]
        start = type_end + 5
        if size < 0 or start + size > len(mv):
            raise OSError(f"cannot read image {path}: the EXR header is truncated or damaged")
        attrs[bytes(mv[pos:name_end]).decode("latin-1")] = bytes(mv[start:start + size])
        pos = start + size


def _cstring(mv: memoryview, pos: int, path) -> int:
    end = pos
    while end < len(mv) and end - pos < 256 and mv[end] != 0:
        end += 1
    if end >= len(mv) or mv[end] != 0:
        raise OSError(f"cannot read image {path}: the EXR header is truncated or damaged")
    return end


def check_exr(data: bytes | memoryview, path: str | os.PathLike) -> None:
    """Raise ``OSError`` unless ``data`` holds a whole EXR: magic number, header, and for a
    single-part scanline file every chunk the offset table lists, inside the file."""
    mv = memoryview(data)
    if len(mv) < 8 or bytes(mv[:4]) != EXR_MAGIC:
        raise OSError(f"cannot read image {path}: not an EXR file")
    flags = int.from_bytes(mv[4:8], "little")
    if flags & (0x200 | 0x800 | 0x1000):  # tiled, deep or multi-part: left to OpenEXR
        return
    attrs, pos = _exr_header(mv, path)
    window, compression = attrs.get("dataWindow"), attrs.get("compression")
    if window is None or len(window) != 16 or not compression or compression[0] not in _EXR_LINES:
        return
    _, ymin, _, ymax = struct.unpack("<4i", window)
    chunks = math.ceil((ymax - ymin + 1) / _EXR_LINES[compression[0]])
    table_end = pos + 8 * chunks
    if chunks <= 0 or table_end > len(mv):
        raise OSError(f"cannot read image {path}: the file is truncated (in its offset table)")
    for (offset,) in struct.iter_unpack("<Q", mv[pos:table_end]):
        if offset < table_end or offset + 8 > len(mv):
            raise OSError(f"cannot read image {path}: the file is truncated or damaged (a chunk lies outside it)")
        size = struct.unpack_from("<i", mv, offset + 4)[0]
        if size < 0 or offset + 8 + size > len(mv):
            raise OSError(f"cannot read image {path}: the file is truncated (its last chunks are missing)")
