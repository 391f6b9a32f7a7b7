"""OpenEXR reading and atomic writing of linear RGB images.

Convention: arrays are ``(H, W, 3)`` float32 linear radiance on read; half float on disk by default.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import OpenEXR

__all__ = ["read_exr", "write_exr", "atomic_path"]


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


class atomic_path:
    """Context manager yielding a temporary path beside ``path``; renamed onto it on success.

    Nothing half-written is ever visible under the final name: on error the temporary is removed.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix + ".part",
                                   dir=self.path.parent)
        os.close(fd)
        self.tmp = tmp
        return tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a user expects
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.unlink(self.tmp)


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
    with atomic_path(path) as tmp:
        with OpenEXR.File(header, {"RGB": data}) as f:
            f.write(tmp)
