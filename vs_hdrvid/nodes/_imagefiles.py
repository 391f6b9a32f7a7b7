"""Structural checks of PNG and EXR frames before they reach libpng or OpenEXR.

Both libraries print their own complaints about a truncated or damaged file to the process's
stderr (``libpng error: IDAT: CRC error``, ``(EXR_ERR_BAD_CHUNK_LEADER) ...``) before the reader
sees an error, and OpenEXR's own message for a truncated file is "file has 0 parts". Checking the
container first (PNG chunk CRCs up to ``IEND``; the EXR header, offset table and chunk leaders)
turns the common damage, a truncated copy, random bytes, a file of another type, into one clear
message and keeps the libraries quiet. Pixel data that is damaged with intact CRCs and sizes is
still left to the decoders.
"""
from __future__ import annotations

import math
import os
import struct
import zlib

__all__ = ["check_png", "check_exr"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXR_MAGIC = b"\x76\x2f\x31\x01"
# scanlines per chunk by EXR compression (OpenEXR's NONE, RLE, ZIPS, ZIP, PIZ, PXR24, B44, B44A,
# DWAA, DWAB)
_EXR_LINES = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}


def check_png(data: bytes | memoryview, path: str | os.PathLike) -> None:
    """Raise ``OSError`` unless ``data`` is a complete PNG whose chunks all pass their CRC."""
    mv = memoryview(data)
    if bytes(mv[:8]) != PNG_SIGNATURE:
        raise OSError(f"cannot read image {path}: not a PNG file")
    pos = 8
    while True:
        if pos + 12 > len(mv):
            raise OSError(f"cannot read image {path}: the file is truncated (no IEND chunk)")
        length = int.from_bytes(mv[pos:pos + 4], "big")
        kind = bytes(mv[pos + 4:pos + 8])
        end = pos + 12 + length
        if end > len(mv):
            raise OSError(f"cannot read image {path}: the file is truncated "
                          f"(in its {kind.decode('latin-1')!r} chunk)")
        if zlib.crc32(mv[pos + 4:pos + 8 + length]) != int.from_bytes(mv[end - 4:end], "big"):
            raise OSError(f"cannot read image {path}: its {kind.decode('latin-1')!r} chunk is damaged "
                          "(CRC mismatch)")
        if kind == b"IEND":
            return
        pos = end


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
