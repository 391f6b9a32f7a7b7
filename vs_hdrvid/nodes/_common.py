"""Validation and property helpers shared by every node (VapourSynth glue only)."""
from __future__ import annotations

import functools
import logging
import math
import threading
import warnings
import weakref
from typing import Any, Callable, Sequence, TypeVar

import torch
import vapoursynth as vs

from ..bridge.requests import same_frames
from ..devices import resolve_device

core = vs.core
log = logging.getLogger("vs_hdrvid")

# Frame properties written by the nodes (docs/design.md, "Frame properties").
EV_PROP = "HdrExposureEV"
INDEX_PROP = "HdrExposureIndex"
COUNT_PROP = "HdrExposureCount"
PATTERN_PROP = "HdrExposurePattern"
SIM_PROP = "HdrSimilarityPrev"
SIM_CONF_PROP = "HdrSimilarityConfidence"
MAX_EV_SPAN = 12.0


_facts: weakref.WeakKeyDictionary[vs.VideoNode, dict[str, Any]] = weakref.WeakKeyDictionary()
_facts_lock = threading.Lock()


def remember(clip: vs.VideoNode, **facts: Any) -> vs.VideoNode:
    """Record what a node knows about its output at build time (its exposure pattern, the EVs an
    ``exposures.txt`` gave), so that nodes built on it read them without rendering a frame.

    Keyed by the clip object: a clip derived from it (trimmed, or through another filter) is not
    known, and nodes fall back to reading its frame 0.
    """
    with _facts_lock:
        _facts.setdefault(clip, {}).update(facts)
    return clip


def recall(clip: vs.VideoNode) -> dict[str, Any]:
    """What :func:`remember` recorded for ``clip`` (an empty dict for any other clip)."""
    with _facts_lock:
        return dict(_facts.get(clip, {}))


F = TypeVar("F", bound=Callable[..., Any])


def renamed_args(**old_to_new: str) -> Callable[[F], F]:
    """Keep a node's old keyword names working for one release, with a ``DeprecationWarning``.

    Example::

        @renamed_args(lin="clip")
        def coarse(clip, ...): ...     # coarse(lin=x) still works, and warns
    """
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def node(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs or (new == "clip" and args):
                        raise error(fn.__name__, f"{old}= is the old name of {new}=; give {new} only")
                    warnings.warn(f"hv.{fn.__name__}({old}=...) is deprecated; the argument is now {new}=",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)
        return node  # type: ignore[return-value]
    return wrap


def error(node: str, msg: str) -> vs.Error:
    """``vs.Error("hdrvid.<node>: msg")``, the one error type nodes raise."""
    return vs.Error(f"hdrvid.{node}: {msg}")


def check_clip(clip: object, node: str, *, min_frames: int = 1) -> vs.VideoNode:
    """Reject anything that is not a constant-format, constant-size video clip."""
    if not isinstance(clip, vs.VideoNode):
        raise error(node, f"expected a video clip, got {type(clip).__name__}")
    if clip.format is None or clip.width == 0 or clip.height == 0:
        raise error(node, "variable format or size clips are not supported; "
                          "convert to one format and size first (e.g. resize.Bicubic(format=vs.RGBS))")
    if clip.num_frames < min_frames:
        raise error(node, f"needs at least {min_frames} frames, the clip has {clip.num_frames}")
    if clip.gpu_resident:
        clip = remember(same_frames(core.std.GPUDownload(clip), clip), **recall(clip))
    return clip


def check_linear(clip: object, node: str, *, min_frames: int = 1) -> vs.VideoNode:
    """A clip made by :func:`vs_hdrvid.linearize`: RGBS with the exposure props."""
    clip = check_clip(clip, node, min_frames=min_frames)
    if clip.format.id not in (vs.RGBS, vs.RGBH):
        raise error(node, f"expects the linear RGBS output of hv.linearize, got {clip.format.name}")
    if PATTERN_PROP in recall(clip):
        return clip
    props = clip.get_frame(0).props  # a clip linearize did not make: its frame 0 says
    if EV_PROP not in props or COUNT_PROP not in props:
        raise error(node, "frames carry no exposure props; run hv.linearize(clip, exposures=[...]) first")
    return clip


def exposure_pattern(clip: vs.VideoNode) -> list[float]:
    """The repeating EV pattern of a linearised clip: recorded by :func:`linearize` at build time,
    else read from the clip's first frame (which renders it)."""
    known = recall(clip).get(PATTERN_PROP)
    if known is not None:
        return list(known)
    props = clip.get_frame(0).props
    pattern = exposure_pattern_of(props)
    if pattern is not None:
        return pattern
    count = int(props[COUNT_PROP])
    return [float(clip.get_frame(i).props[EV_PROP]) for i in range(count)]


def exposure_pattern_of(props: vs.FrameProps | dict) -> list[float] | None:
    """A frame's ``HdrExposurePattern`` as a list (None when the frame has none)."""
    value = props.get(PATTERN_PROP)
    if value is None:
        return None
    # a one-element float array comes back as a plain float
    return [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]


def validate_exposures(exposures: Sequence[float], node: str) -> list[float]:
    """EVs must be finite, 1, 2 or 3 of them, distinct, and span at most 12 stops."""
    try:
        evs = [float(e) for e in exposures]
    except (TypeError, ValueError):
        raise error(node, f"exposures must be a list of numbers (stops), got {exposures!r}") from None
    if len(evs) not in (1, 2, 3):
        raise error(node, f"exposure patterns of 1, 2 or 3 frames are supported, got {len(evs)}: {evs}")
    if not all(math.isfinite(e) for e in evs):
        raise error(node, f"exposures must be finite, got {evs}")
    if max(evs) - min(evs) > MAX_EV_SPAN:
        raise error(node, f"exposures span {max(evs) - min(evs):g} stops, more than {MAX_EV_SPAN:g}; "
                          "give them in stops (EV), e.g. [-1.5, 1.5]")
    if len(set(evs)) != len(evs):
        raise error(node, f"exposures in one pattern must differ, got {evs}")
    return evs


def check_hdr_of(clip: object, lin: object, node: str, made_by: str) -> tuple[vs.VideoNode, vs.VideoNode]:
    """An RGBS HDR clip and the linearised clip it was made from (``made_by``, e.g. ``"hv.coarse"``),
    of one length and size."""
    clip, lin = check_clip(clip, node), check_linear(lin, node)
    if clip.format.id not in (vs.RGBS, vs.RGBH):
        raise error(node, f"clip must be the RGBS output of {made_by}, got {clip.format.name}")
    if (clip.num_frames, clip.width, clip.height) != (lin.num_frames, lin.width, lin.height):
        raise error(node, f"clip ({clip.num_frames} frames of {clip.width}x{clip.height}) and lin "
                          f"({lin.num_frames} frames of {lin.width}x{lin.height}) must match; pass lin the clip "
                          f"{made_by} made clip from")
    return clip, lin


def pick_device(device: str, fp32: bool, node: str) -> tuple[torch.device, torch.dtype]:
    """``auto``/``cpu``/``cuda[:N]`` and the compute dtype (fp16 on CUDA unless ``fp32``)."""
    try:
        dev = resolve_device(device)
    except (ValueError, RuntimeError) as e:
        raise error(node, f"{e}; use device='cpu' or 'auto'") from None
    return dev, (torch.float32 if fp32 or dev.type == "cpu" else torch.float16)


def to_rgb_float(clip: vs.VideoNode, node: str) -> vs.VideoNode:
    """Any RGB/YUV/GRAY clip as RGBS in [0, 1]: integers are normalised, YUV uses its props."""
    fmt = clip.format
    if fmt.color_family == vs.RGB:
        return clip if fmt.id == vs.RGBS else same_frames(core.resize.Point(clip, format=vs.RGBS), clip)
    if fmt.color_family == vs.GRAY:
        return same_frames(core.std.ShufflePlanes(core.resize.Point(clip, format=vs.GRAYS), [0, 0, 0], vs.RGB), clip)
    if fmt.color_family == vs.YUV:
        return same_frames(_yuv_to_rgb(clip, node), clip)
    raise error(node, f"unsupported colour family of {fmt.name}; give RGB, YUV or GRAY")


def _yuv_to_rgb(clip: vs.VideoNode, node: str) -> vs.VideoNode:
    """YUV -> RGBS with each frame's ``_Matrix``/``_Range``; where a frame leaves them unspecified,
    the matrix is guessed from the size (as players do) and the range taken as limited. Chosen per
    frame, so building the graph decodes nothing."""
    guess = "709" if clip.height > 576 else "170m"
    told: list[bool] = []
    variants = {(m, r): core.resize.Bicubic(clip, format=vs.RGBS, **({"matrix_in_s": guess} if m else {}),
                                            **({"range_in_s": "limited"} if r else {}))
                for m in (False, True) for r in (False, True)}

    def pick(n: int, f: vs.VideoFrame) -> vs.VideoNode:
        guess_matrix = int(f.props.get("_Matrix", 2)) in (0, 2, 3)  # unspecified (or RGB on YUV)
        guess_range = "_Range" not in f.props and "_ColorRange" not in f.props
        if guess_matrix and not told:
            told.append(True)
            log.info("hdrvid.%s: clip has no _Matrix, assuming %s", node, guess)
        return variants[guess_matrix, guess_range]

    return core.std.FrameEval(variants[False, False], pick, prop_src=clip, clip_src=list(variants.values()))
