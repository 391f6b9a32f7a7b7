"""vs-hdrvid: HDR video from alternating-exposure footage, as VapourSynth filter nodes.

Chain the nodes in a ``.vpy`` script::

    import vs_hdrvid as hv
    lin = hv.align(hv.linearize(clip, exposures=[-1.5, 1.5]))
    hv.tonemap(hv.merge(lin), "pq", peak_nits=1000).set_output()
"""
from .malloc import tune_malloc
from .nodes import (align, classical_flow, coarse, dealthdr, detect_exposures, estimate_crf, flow, linearize,
                    merge, read_exr, read_images, refine, source, tonemap, write_exr)

__version__ = "0.1.0"
__all__ = ["linearize", "estimate_crf", "detect_exposures", "align", "merge", "classical_flow",
           "coarse", "refine", "flow", "dealthdr",
           "tonemap", "source", "read_images", "read_exr", "write_exr", "tune_malloc"]
