"""vs-hdrvid: HDR video from alternating-exposure footage, as VapourSynth filter nodes.

Chain the nodes in a ``.vpy`` script::

    import vs_hdrvid as hv
    lin = hv.align(hv.linearize(clip, exposures=[-1.5, 1.5]))
    hv.tonemap(hv.merge(lin), "pq", peak_nits=1000).set_output()
"""
from .nodes.align import align
from .nodes.flow import classical_flow
from .nodes.io import read_exr, read_images, write_exr
from .nodes.linearize import detect_exposures, estimate_crf, linearize
from .nodes.merge import merge
from .nodes.tonemap import tonemap

__version__ = "0.1.0"
__all__ = ["linearize", "estimate_crf", "detect_exposures", "align", "merge", "classical_flow",
           "tonemap", "read_images", "read_exr", "write_exr"]
