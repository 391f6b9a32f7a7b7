"""What the network nodes (:mod:`.coarse`, :mod:`.refine`, :mod:`.flow`, :mod:`.dealthdr`) share.

Choosing and loading checked weights once per node (a small cache shares a network between
nodes), prepared for inference (:class:`~vs_hdrvid.models.inference.Inference`: precision, layout,
compile, tiling), and the size and pattern checks. The tensor work they share lives beside the networks:
:func:`~vs_hdrvid.models.blocks.radiance_to_ldr` and :func:`~vs_hdrvid.ops.warp.align_to_ref`.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch
import vapoursynth as vs

from .. import weights as weights_mod
from ..models.inference import Inference, Tiling, auto_compile
from ._common import COUNT_PROP, PATTERN_PROP, error, log, recall

__all__ = ["load_network", "network_period", "MIN_SIZE", "RGBS"]

MIN_SIZE = 32  # the flow pyramid's coarsest level is 1/16 of the frame
RGBS = vs.core.get_video_format(vs.RGBS)  # the format of every network's output


def network_period(lin: vs.VideoNode, node: str) -> int:
    """Length of the clip's exposure pattern (2 or 3), after checking the frame size."""
    known = recall(lin).get(PATTERN_PROP)  # set by linearize: no frame is rendered to build the graph
    count = len(known) if known is not None else int(lin.get_frame(0).props[COUNT_PROP])
    if count not in (2, 3):
        raise error(node, f"needs an alternating pattern of 2 or 3 exposures, the clip has {count}; "
                          "give linearize(exposures=[...]) the pattern the footage was shot with")
    if lin.width < MIN_SIZE or lin.height < MIN_SIZE:
        raise error(node, f"frames of {lin.width}x{lin.height} are too small: the networks need at least "
                          f"{MIN_SIZE}x{MIN_SIZE}; upscale the clip first")
    return count


def _resolve_weights(kind: str, weights: str | os.PathLike | None, period: int, node: str
                     ) -> tuple[str, Path]:
    """Registry name and folder for ``weights`` (None, a registry name, a folder or a file)."""
    folder = Path(weights_mod.WEIGHTS_DIR)
    name = f"{kind}-{period}exp"
    if weights is not None and not (isinstance(weights, str) and weights in weights_mod.REGISTRY):
        path = Path(weights)
        if path.is_dir():
            folder = path
        elif path.is_file():
            names = [k for k, s in weights_mod.REGISTRY.items() if s.file == path.name]
            if not names:
                files = ", ".join(sorted(s.file for s in weights_mod.REGISTRY.values()))
                raise error(node, f"weights file {path} is not one of the known files ({files})")
            name, folder = names[0], path.parent
        else:
            known = ", ".join(sorted(weights_mod.REGISTRY))
            raise error(node, f"weights={str(weights)!r} is neither a known name ({known}) nor an existing "
                              "folder or file")
    elif weights is not None:
        name = str(weights)
    spec = weights_mod.REGISTRY.get(name)
    if spec is None or spec.kind != kind:
        known = ", ".join(n for n, s in weights_mod.REGISTRY.items() if s.kind == kind)
        raise error(node, f"weights {name!r} are not {kind} weights for a {period}-exposure pattern; known: {known}")
    if spec.exposures != period:
        raise error(node, f"weights {name!r} were trained for {spec.exposures}-exposure patterns but the "
                          f"clip has a {period}-exposure pattern; use {kind}-{period}exp")
    return name, folder


_engines: OrderedDict[tuple, Inference] = OrderedDict()
_engines_lock = threading.Lock()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def load_network(kind: str, weights: str | os.PathLike | None, period: int, device: torch.device, node: str,
                 fp32: bool = False, compile: bool | None = False, tile: int | None = None,
                 max_memory: float | None = None, size: tuple[int, int] | None = None,
                 backend: str = "torch", num_frames: int = 0) -> Inference:
    """The checked network for ``kind`` and the clip's pattern, ready for inference.

    Loaded once per (file, device, precision, compile, tiling) in eval mode: nodes made later
    share it while the file and manifest are unchanged. ``tile``/``max_memory`` (GiB) tile
    frames of ``size`` (W, H) as :meth:`Tiling.for_network` says; ``compile=None`` compiles where
    :func:`~vs_hdrvid.models.inference.auto_compile` says it pays for a clip of ``num_frames``.

    Raises:
        vs.Error: unknown weights, weights for another pattern length, a missing or corrupt
            file (the message names the file, its sha256 and the command that makes it), a
            tile the network cannot use (the message names the minimum and the multiple), a
            ``backend`` whose runtime is not installed (the message names the package).
    """
    name, folder = _resolve_weights(kind, weights, period, node)
    try:
        tiling = Tiling.for_network(kind, tile, max_memory, size)
    except ValueError as e:
        raise error(node, str(e)) from None
    if compile is None:
        compile = backend == "torch" and not fp32 and auto_compile(kind, device, num_frames, tiling is not None)
    path = folder / weights_mod.REGISTRY[name].file
    key = (name, os.fspath(path.resolve()), _stamp(path), _stamp(folder / weights_mod.MANIFEST),
           str(device), fp32, compile, tiling, backend)
    with _engines_lock:
        if key in _engines:
            _engines.move_to_end(key)
            return _engines[key]
    try:
        model, _ = weights_mod.load(name, device, folder)
    except weights_mod.WeightsError as e:
        raise error(node, f"{e} (or pass weights= a folder that holds it)") from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise error(node, f"cannot load {path}: {type(e).__name__}: {e}") from None
    try:
        engine = Inference(model, kind, device, fp32=fp32, compile=compile, tiling=tiling, backend=backend)
    except (ValueError, RuntimeError) as e:  # a backend not installed names its package
        raise error(node, str(e)) from None
    if tiling is not None:
        log.info("hdrvid.%s: %dx%d frames in tiles of %d pixels (overlap %d)", node, *(size or (0, 0)),
                 tiling.tile, tiling.overlap)
    with _engines_lock:
        _engines[key] = engine
        while len(_engines) > 6:
            _engines.popitem(last=False)
    return engine
