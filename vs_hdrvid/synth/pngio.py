"""Minimal deterministic PNG writer/reader for 8- and 16-bit RGB frames.

Pillow reads 16-bit RGB PNGs as 8-bit, so the synthetic data uses this small codec: each row
gets the PNG filter with the least absolute sum (as libpng chooses) and zlib level 9, which makes files byte-identical for identical
pixels. The reader handles the five standard filters and grey/RGB/RGBA, 8 or 16 bit,
non-interlaced images.

Convention: arrays ``(H, W, 3)`` ``uint8`` or ``uint16``.
"""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from vs_hdrvid.ops.exr import atomic_path

__all__ = ["write_png", "read_png"]


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _filter_rows(raw: np.ndarray, bpp: int) -> np.ndarray:
    """Filter each row with the PNG filter (0-4) of least absolute signed sum (libpng's heuristic).

    Every filter reads only unfiltered bytes, so all five are computed at once.
    """
    h, n = raw.shape
    zl = np.zeros((h, bpp), np.uint8)
    left = np.concatenate([zl, raw[:, :-bpp]], axis=1)
    up = np.concatenate([np.zeros((1, n), np.uint8), raw[:-1]], axis=0)
    upleft = np.concatenate([zl, up[:, :-bpp]], axis=1)
    avg = ((left.astype(np.uint16) + up) // 2).astype(np.uint8)
    cands = np.stack([raw, raw - left, raw - up, raw - avg, raw - _paeth(left, up, upleft).astype(np.uint8)])
    cost = np.abs(cands.view(np.int8).astype(np.int32)).sum(axis=2)     # (5, h)
    best = np.argmin(cost, axis=0)
    rows = cands[best, np.arange(h)]
    return np.concatenate([best.astype(np.uint8)[:, None], rows], axis=1)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write ``(H, W, 3)`` uint8/uint16 RGB to ``path`` atomically."""
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_png expects (H, W, 3) uint8/uint16, got {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape
    depth = 8 if rgb.dtype == np.uint8 else 16
    raw = np.ascontiguousarray(rgb.astype(">u2") if depth == 16 else rgb).view(np.uint8).reshape(h, -1)
    rows = _filter_rows(raw, 3 * depth // 8)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + _chunk(b"IEND", b""))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a.astype(np.int16) + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG as ``(H, W, 3)`` uint8 or uint16 (alpha dropped, grey broadcast).

    Raises:
        OSError: not a PNG, or an interlaced / palette image.
    """
    data = open(path, "rb").read()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise OSError(f"{path}: not a PNG file")
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"IEND":
            break
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    chans = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
    if chans is None or interlace or depth not in (8, 16):
        raise OSError(f"{path}: unsupported PNG (colour type {ctype}, depth {depth}, interlace {interlace})")
    bpp = chans * depth // 8
    stride = w * bpp
    buf = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, stride + 1)
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(h):
        ft, line = buf[y, 0], buf[y, 1:].copy()
        if ft == 1:                                                  # Sub: running sum mod 256
            line = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif ft == 3 or ft == 4:
            for x0 in range(0, stride, bpp):                         # left neighbour is sequential
                left = line[x0 - bpp:x0] if x0 else np.zeros(bpp, np.uint8)
                cur = line[x0:x0 + bpp]
                if ft == 3:
                    cur += ((left.astype(np.uint16) + prev[x0:x0 + bpp]) // 2).astype(np.uint8)
                else:
                    ul = prev[x0 - bpp:x0] if x0 else np.zeros(bpp, np.uint8)
                    cur += _paeth(left, prev[x0:x0 + bpp], ul).astype(np.uint8)
        elif ft == 2:
            line += prev
        out[y] = line
        prev = line
    px = out.view(">u2").astype(np.uint16) if depth == 16 else out
    px = px.reshape(h, w, chans)
    if chans <= 2:
        px = np.repeat(px[..., :1], 3, axis=-1)
    return np.ascontiguousarray(px[..., :3])
