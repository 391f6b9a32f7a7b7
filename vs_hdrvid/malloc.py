"""Process-wide tuning of glibc's allocator for frame-sized work.

By default glibc returns freed memory to the kernel eagerly: a freed block above the dynamic mmap
threshold is unmapped, and a free top of a heap larger than the trim threshold is released. A
video pipeline frees and reallocates the same frame- and band-sized buffers every frame, so each
frame page-faults them in afresh (at 1080p, tens of milliseconds of kernel time per frame on the
CPU path). Fixed thresholds keep freed memory for reuse instead: the process holds on to its peak
working set rather than giving memory back between frames.

The networks' feature maps are larger than the mmap threshold can ever be (32 MiB; DeAltHDR's
four aligned neighbours at 1080p are 560 MB), so glibc would map and unmap each of them on every
frame whatever the threshold. ``heap_only`` (the default) turns mmap off for large blocks too:
every block comes from the heap and is reused. DeAltHDR at 1080p ran 2.3x faster with it than with
the thresholds alone (``vs-hdrvid bench-dealthdr``, README "Networks on the CPU").

Freeing a network's largest maps still grows the heap's free top past the trim threshold, and
glibc then returns all of it but ``top_pad`` to the kernel, to fault it in again at the next
forward pass. ``top_pad`` (512 MiB by default) keeps that much: RefineNet at 1080p page-faulted
260 000 times per frame with glibc's 128 KiB (1.3 s of kernel time on 2 cores), none with 512 MiB.

``vs-hdrvid`` tunes its own process. A ``.vpy`` script run by vspipe or a previewer opts in with
``hv.tune_malloc()``, or the same settings come from the environment::

    MALLOC_MMAP_MAX_=0 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 \\
    MALLOC_TOP_PAD_=536870912 vspipe ...
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["tune_malloc", "malloc_tuned"]

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit systems (4 * 1024 * 1024 * sizeof(long))
_tuned = False


def malloc_tuned() -> bool:
    """Whether :func:`tune_malloc` has set the thresholds in this process."""
    return _tuned


def tune_malloc(trim_threshold: int = 1 << 30, mmap_threshold: int = _MMAP_THRESHOLD_MAX,
                heap_only: bool = True, top_pad: int = 512 << 20) -> bool:
    """Keep freed memory in the process for reuse (glibc ``mallopt``); a no-op elsewhere.

    Args:
        trim_threshold: free bytes at the top of a heap kept before any is released.
        mmap_threshold: blocks at least this large get their own mapping (and are unmapped when
            freed); at most 32 MiB. A 1080p RGBS frame (24.9 MB) stays below it.
        heap_only: no block gets its own mapping, whatever its size (``M_MMAP_MAX`` 0): the
            networks' frame-sized feature maps are reused too. The process keeps its peak
            working set, up to ``trim_threshold`` more than it uses at the moment.
        top_pad: free bytes kept at the top of the heap when it is trimmed (and asked for beyond
            each request that grows it); at most 2 GiB - 1.

    Returns:
        True when the settings were taken, False on a C library without ``mallopt`` (musl, macOS,
        Windows), where nothing changes.
    """
    if not 0 < mmap_threshold <= _MMAP_THRESHOLD_MAX:
        raise ValueError(f"mmap_threshold must be within 1..{_MMAP_THRESHOLD_MAX}, got {mmap_threshold}")
    if trim_threshold < 0:
        raise ValueError(f"trim_threshold must be >= 0, got {trim_threshold}")
    if not 0 <= top_pad < 2**31:
        raise ValueError(f"top_pad must be within 0..{2**31 - 1}, got {top_pad}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = min(trim_threshold, 2**31 - 1)  # mallopt takes an int
    global _tuned
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
    _tuned = bool(mallopt(_M_TOP_PAD, top_pad)) and _tuned
    if heap_only:
        _tuned = bool(mallopt(_M_MMAP_MAX, 0)) and _tuned
    return _tuned
