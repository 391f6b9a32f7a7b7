"""vs-hdrvid: HDR video from alternating-exposure footage, as VapourSynth filter nodes.

Chain the nodes in a ``.vpy`` script::

    import vs_hdrvid as hv
    lin = hv.align(hv.linearize(clip, exposures=[-1.5, 1.5]))
    hv.tonemap(hv.merge(lin), "pq", peak_nits=1000).set_output()

Importing the package loads nothing heavy: the nodes (with torch and VapourSynth) load when one is
first used, and ``hv.tune_malloc()`` can run before any large allocation.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["linearize", "estimate_crf", "detect_exposures", "align", "merge", "classical_flow",
           "coarse", "refine", "temporal_fuse", "flow", "dealthdr",
           "tonemap", "source", "read_images", "read_exr", "write_exr", "tune_malloc"]

_HOME = {name: ".nodes" for name in __all__} | {"tune_malloc": ".malloc"}
_SUBMODULES = {"bridge", "cli", "demo", "devices", "distributed", "encode", "eval", "malloc", "models", "nodes",
               "ops", "outputs", "reconstruct", "resources", "segment_run", "segments", "synth", "train", "weights"}

if TYPE_CHECKING:
    from .malloc import tune_malloc
    from .nodes import (align, classical_flow, coarse, dealthdr, detect_exposures, estimate_crf, flow, linearize,
                        merge, read_exr, read_images, refine, source, temporal_fuse, tonemap, write_exr)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
