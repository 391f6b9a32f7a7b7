"""VapourSynth nodes, one module each: validate at graph-build time, set up once, per-frame closure."""
from .align import align
from .classical_flow import classical_flow
from .coarse import coarse
from .dealthdr import dealthdr
from .flow import flow
from .io import read_exr, read_images, source, write_exr
from .linearize import detect_exposures, estimate_crf, linearize
from .merge import merge
from .refine import refine
from .temporal_fuse import temporal_fuse
from .tonemap import tonemap

__all__ = ["linearize", "estimate_crf", "detect_exposures", "align", "merge", "classical_flow",
           "coarse", "refine", "temporal_fuse", "flow", "dealthdr",
           "tonemap", "source", "read_images", "read_exr", "write_exr"]
