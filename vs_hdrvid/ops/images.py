"""8- and 16-bit RGB image files (PNG, TIFF), read and written through OpenCV.

The one PNG reader and writer of the package: the image-sequence source, the command line's SDR
output, the demo's contact sheet, the synthetic data and the evaluation all go through here.

libpng prints its own complaint about a truncated or damaged file to the process's stderr
(``libpng error: IDAT: CRC error``) before OpenCV returns nothing; :func:`check_png` checks the
container first (every chunk's CRC up to ``IEND``), so the common damage (a truncated copy, random
bytes, a file of another type) is one clear message and libpng stays quiet. Pixel data damaged with
intact CRCs is still left to the decoder.

Convention: arrays are ``(H, W, 3)`` RGB, ``uint8`` or ``uint16``.
"""
from __future__ import annotations

import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import cv2
import numpy as np

from ..outputs import atomic_path

__all__ = ["PNG_SIGNATURE", "check_png", "read_image", "encode_png", "write_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV's own log lines off: a file it cannot read is reported by the caller, in one line."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A PNG (checked by :func:`check_png` first) or TIFF as ``(H, W, 3)`` RGB ``uint8``/``uint16``.

    Grey images are broadcast to three channels and alpha is dropped.

    Raises:
        OSError: one line naming the file: missing, truncated, damaged, of another type or of
            another sample type.
    """
    path = Path(path)
    with _quiet_opencv():
        if path.suffix.lower() == ".png":
            try:
                data = path.read_bytes()
            except OSError as e:
                raise OSError(f"cannot read image {path}: {e.strerror or e}") from None
            check_png(data, path)  # before libpng complains
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        else:
            img = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"cannot read image {path}")
    if img.ndim == 2 or img.shape[-1] < 3:  # grey, grey + alpha
        img = np.repeat(img.reshape(img.shape[0], img.shape[1], -1)[..., :1], 3, -1)
    img = img[..., :3][..., ::-1]  # BGR(A) -> RGB
    if img.dtype not in (np.uint8, np.uint16):
        raise OSError(f"{path}: unsupported sample type {img.dtype}")
    return np.ascontiguousarray(img)


def encode_png(rgb: np.ndarray, compression: int = 3) -> bytes:
    """``(H, W, 3)`` uint8/uint16 RGB as PNG bytes at zlib level ``compression`` (0-9).

    The same pixels give the same bytes (OpenCV writes no timestamp).

    Raises:
        ValueError: not such an array, or OpenCV cannot encode it.
    """
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"a PNG takes (H, W, 3) uint8/uint16, got {rgb.shape} {rgb.dtype}")
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("OpenCV could not encode the image as PNG")
    return data.tobytes()


def write_png(path: str | os.PathLike, rgb: np.ndarray, compression: int = 3,
              atomic: Callable[[str | os.PathLike], ContextManager[str]] = atomic_path) -> None:
    """Write ``(H, W, 3)`` uint8/uint16 RGB to ``path`` under a temporary name, renamed when complete.

    Args:
        compression: zlib level, 0-9 (3: fast, for frame-by-frame output; 9: smallest files).
        atomic: the context that gives the temporary name (a run's ``Claim.atomic``, by default
            :func:`~vs_hdrvid.outputs.atomic_path`).
    """
    data = encode_png(rgb, compression)
    with atomic(path) as tmp:
        Path(tmp).write_bytes(data)
