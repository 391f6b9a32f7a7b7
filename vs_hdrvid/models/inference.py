"""Networks prepared for inference: precision, memory layout, compilation and tiling.

A node (or a benchmark) runs an :class:`Inference` around a loaded network:

* **precision** (:class:`Precision`): on CUDA the parameters in float16; on a CPU that executes
  bfloat16 natively (AMX or AVX512-BF16, read from the CPU flags at run time) float32 parameters
  under bfloat16 autocast, so the convolutions and matrix products run in bfloat16 and the rest
  (the merge's weights, the mu-law, the warps, the deformable convolution) in float32. On other
  CPUs, and with ``fp32=True`` everywhere, the exact float32 path.
* **channels_last**: the convolutions in NHWC, oneDNN's and cuDNN's preferred layout.
* **compile**: ``torch.compile`` of the forward pass (inductor; on CPU with the weights frozen
  into the graph as constants). Each frame size is compiled once, at its first frame; the nodes'
  default (:func:`auto_compile`) compiles the networks on a CPU for long clips (DeAltHDR its
  fixed-shape blocks only, :meth:`~vs_hdrvid.models.dealthdr.DeAltHDR.compile_blocks`).
* **tiling** (:class:`Tiling`): frames split into tiles that overlap by at least the receptive
  field's radius of the part that is tiled, on the grid of the network's strides, so that each
  tile's core is computed from the same pixels as in the whole frame: tiled equals untiled up to
  floating-point rounding. CoarseNet tiles its weight network (the warps by the classical flows
  reach any distance and stay whole-frame); RefineNet tiles its whole forward pass.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..devices import native_bf16

__all__ = ["Precision", "Tiling", "Inference", "tile_map", "auto_compile", "TILE_RULES", "AUTO_COMPILE_FRAMES"]


@dataclass(frozen=True)
class Precision:
    """Parameter dtype and autocast dtype of a network's forward pass."""

    dtype: torch.dtype
    autocast: torch.dtype | None = None

    @classmethod
    def choose(cls, device: torch.device, fp32: bool = False) -> Precision:
        """float16 on CUDA, bfloat16 autocast on a CPU with native bfloat16, else float32."""
        if fp32:
            return cls(torch.float32)
        if device.type == "cuda":
            return cls(torch.float16)
        if device.type == "cpu" and native_bf16():
            return cls(torch.float32, torch.bfloat16)
        return cls(torch.float32)

    @property
    def name(self) -> str:
        """``"fp32"``, ``"fp16"`` or ``"bf16-autocast"``."""
        if self.autocast is not None:
            return "bf16-autocast"
        return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]

    @contextlib.contextmanager
    def context(self, device: torch.device) -> Iterator[None]:
        """Inference mode, under autocast where the precision asks for it."""
        with torch.inference_mode():
            if self.autocast is None:
                yield
            else:
                with torch.autocast(device.type, dtype=self.autocast):
                    yield


#: ``compile=None`` compiles on a CPU for clips of at least this many frames: the compilation
#: (11-50 s for CoarseNet on 2 cores, cached by inductor across processes) is paid back within
#: this many frames by the 3x faster forward pass it gives at 1280x720 (bench-nets --compile).
AUTO_COMPILE_FRAMES = 48
AUTO_COMPILE_KINDS = ("coarse", "refine", "dealthdr")


def auto_compile(kind: str, device: torch.device, num_frames: int, tiled: bool) -> bool:
    """Whether ``compile=None`` compiles: CPU, CoarseNet, RefineNet or DeAltHDR, a long clip, whole
    frames (tiles of several sizes would each compile)."""
    return device.type == "cpu" and kind in AUTO_COMPILE_KINDS and num_frames >= AUTO_COMPILE_FRAMES and not tiled


@dataclass(frozen=True)
class TileRule:
    """What a network's tiles must respect.

    Attributes:
        multiple: the product of the tiled part's strides: tile origins lie on this grid.
        overlap: pixels added on each side of a tile, at least the receptive field's radius.
        bytes_per_pixel: peak memory of the forward pass per frame pixel (measured by
            ``vs-hdrvid bench-nets`` in bfloat16 autocast at 1280x720, float32 inputs), for
            ``max_memory``; ``fixed_per_pixel`` the part of it that tiling does not shrink.
    """

    multiple: int
    overlap: int
    bytes_per_pixel: float
    fixed_per_pixel: float = 0.0


#: Per network kind. CoarseNet's weight network: three stride-2 stages of two 3x3 convolutions,
#: three 4x4 transposed convolutions, a 3x3 skip and head: receptive field 71 pixels (radius 35,
#: rounded up to the grid), so its tiles equal the whole frame up to rounding. RefineNet: ~45 3x3
#: convolutions at 1/2 to 1/8 resolution and deformable offsets; 64 pixels keep tiled and untiled
#: within 1e-3 (``tests/models/test_inference.py``). Memory: ``bench-nets`` forward peaks at
#: 1280x720 in bfloat16 autocast (769 MiB CoarseNet, 2516 MiB RefineNet; tiled at 128 px, 469
#: and 546 MiB, of which the tiles' share is what their area predicts); with ``tune_malloc``'s
#: ``heap_only`` the freed blocks stay in the process and CoarseNet's peak rose to 937 MiB (1066
#: B/px; RefineNet 2457 MiB, within its rule), hence CoarseNet's 1100. RefineNet's deformable
#: convolutions in bands and its frame-by-frame extractor brought its peak to 1337 MiB (1521 B/px;
#: 204 MiB on 128 px tiles, of which about 130 B/px do not shrink), hence its 1600 and 150.
TILE_RULES: dict[str, TileRule] = {
    "coarse": TileRule(multiple=8, overlap=40, bytes_per_pixel=1100.0, fixed_per_pixel=500.0),
    "refine": TileRule(multiple=8, overlap=64, bytes_per_pixel=1600.0, fixed_per_pixel=150.0),
}


@dataclass(frozen=True)
class Tiling:
    """Tiles of ``tile`` x ``tile`` pixels (the last row and column of tiles may be smaller)."""

    tile: int
    overlap: int
    multiple: int

    @classmethod
    def for_network(cls, kind: str, tile: int | None = None, max_memory: float | None = None,
                    size: tuple[int, int] | None = None) -> Tiling | None:
        """The tiling of ``kind`` for ``tile`` (a side in pixels) or ``max_memory`` (GiB).

        With ``max_memory``, frames of ``size`` (W, H) whose estimated peak fits are not tiled.

        Raises:
            ValueError: the network cannot be tiled, or ``tile`` is under the minimum or off
                the network's grid, or ``max_memory`` is not positive or too small for any tile.
        """
        if tile is None and max_memory is None:
            return None
        rule = TILE_RULES.get(kind)
        if rule is None:
            raise ValueError(f"{kind} cannot be tiled (tiles are for {', '.join(TILE_RULES)})")
        if tile is None:
            if not (max_memory > 0 and math.isfinite(max_memory)):
                raise ValueError(f"max_memory must be a positive number of GiB, got {max_memory}")
            budget = max_memory * 2 ** 30
            w, h = size or (0, 0)
            if w * h * rule.bytes_per_pixel <= budget:
                return None
            room = budget - w * h * rule.fixed_per_pixel
            side = math.isqrt(max(int(room / (rule.bytes_per_pixel - rule.fixed_per_pixel)), 0)) - 2 * rule.overlap
            tile = side // rule.multiple * rule.multiple
            if tile < rule.multiple:
                raise ValueError(f"max_memory={max_memory} GiB is too small for {kind} at {w}x{h}: "
                                 f"even {rule.multiple}-pixel tiles need more")
        least = max(rule.multiple, 64)
        if tile < least or tile % rule.multiple:
            raise ValueError(f"tile={tile} for {kind}: tiles must be at least {least} pixels and a multiple of "
                             f"{rule.multiple} (the network's strides); each also gets {rule.overlap} pixels of "
                             "overlap on every side")
        return cls(tile, rule.overlap, rule.multiple)

    def spans(self, length: int) -> list[tuple[int, int]]:
        """Core ranges ``[a, b)`` covering ``length``: equal tiles on the grid, at most ``tile``."""
        count = -(-length // self.tile)
        step = -(-length // count // self.multiple) * self.multiple
        return [(a, min(a + step, length)) for a in range(0, length, step)]


def tile_map(fn: Callable[..., Any], inputs: Sequence[Tensor], tiling: Tiling) -> Any:
    """``fn(*inputs)`` computed tile by tile.

    ``inputs`` share their last two dims ``(H, W)``; ``fn`` returns a tensor or a named tuple of
    tensors whose last two dims are those of its inputs. Each tile's core is cut from ``fn`` of
    the core grown by ``tiling.overlap`` (clipped to the frame) and written into the output.
    """
    h, w = inputs[0].shape[-2:]
    out: list[Tensor] | None = None
    kind = None
    ov = tiling.overlap
    for y0, y1 in tiling.spans(h):
        for x0, x1 in tiling.spans(w):
            ya, xa, yb, xb = max(y0 - ov, 0), max(x0 - ov, 0), min(y1 + ov, h), min(x1 + ov, w)
            part = fn(*[x[..., ya:yb, xa:xb] for x in inputs])
            parts = [part] if isinstance(part, Tensor) else list(part)
            if out is None:
                kind = None if isinstance(part, Tensor) else type(part)
                out = [p.new_empty(*p.shape[:-2], h, w) for p in parts]
            for o, p in zip(out, parts):
                o[..., y0:y1, x0:x1] = p[..., y0 - ya:y1 - ya, x0 - xa:x1 - xa]
    assert out is not None
    return out[0] if kind is None else kind(*out)


class _Tiled(nn.Module):
    """A module of one ``(B, C, H, W)`` input run by :func:`tile_map`."""

    def __init__(self, inner: nn.Module, tiling: Tiling) -> None:
        super().__init__()
        self.inner, self.tiling = inner, tiling
        self.multiple = getattr(inner, "multiple", tiling.multiple)

    def forward(self, x: Tensor) -> Tensor:
        return tile_map(self.inner, [x], self.tiling)


def _with_tiled_child(model: nn.Module, name: str, tiling: Tiling) -> nn.Module:
    """A shallow copy of ``model`` (sharing its parameters) whose child ``name`` is tiled."""
    twin = copy.copy(model)
    twin._modules = dict(model._modules)
    twin._modules[name] = _Tiled(model._modules[name], tiling)
    return twin


class Inference:
    """A network ready for a node: call it as the network itself (same arguments and outputs).

    Args:
        model: a loaded network (CoarseNet, RefineNet, DeAltHDR, SpyNet); moved to ``device``,
            the precision's dtype and layout in place (give each Inference its own).
        kind: its registry kind (``"coarse"``, ``"refine"``, ``"dealthdr"``, ``"spynet"``).
        device: where it runs.
        fp32: the exact float32 path (no bfloat16 or float16).
        compile: ``torch.compile`` the forward pass.
        tiling: tile the frame (:meth:`Tiling.for_network`); None: whole frames.
        backend: ``"torch"``, or ``"ort"``/``"ov"``/``"trt"`` to run the network's ONNX graph
            through onnxruntime, OpenVINO or TensorRT (:class:`~vs_hdrvid.export.runtime.OnnxNetwork`,
            float32, exported and checked against torch at the first frame of each size).

    Raises:
        ValueError: tiles or compile asked of an ONNX backend, tiles of a network without a rule.
        BackendError: the backend's runtime is not installed (the message names the package).
    """

    def __init__(self, model: nn.Module, kind: str, device: torch.device, fp32: bool = False,
                 compile: bool = False, tiling: Tiling | None = None, backend: str = "torch") -> None:
        self.kind, self.device, self.tiling, self.backend = kind, device, tiling, backend
        if backend != "torch":
            self._onnx(model, kind, device, compile, tiling, backend)
            return
        self.precision = Precision.choose(device, fp32)
        model = model.to(device=device, dtype=self.precision.dtype).eval().requires_grad_(False)
        self.channels_last = not fp32  # fp32=True: the layout of training, bit for bit
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        forward: Callable[..., Any] = model
        if tiling is not None and kind == "coarse":
            forward = _with_tiled_child(model, "weightnet", tiling)
        elif tiling is not None and kind == "refine":
            forward = lambda hdrs, ldrs, evs: tile_map(lambda h, l: model(h, l, evs), (hdrs, ldrs), tiling)  # noqa: E731
        elif tiling is not None:
            raise ValueError(f"{kind} cannot be tiled (tiles are for {', '.join(TILE_RULES)})")
        if compile:
            if device.type == "cpu":
                import torch._inductor.config as inductor

                inductor.freezing = True  # weights as constants: folded, and packed for oneDNN once
            if kind == "dealthdr":  # data-dependent attention: its fixed-shape blocks only
                model.compile_blocks()
            else:
                forward = torch.compile(forward, dynamic=False)
        self.compiled = compile
        self._forward = forward

    def _onnx(self, model: nn.Module, kind: str, device: torch.device, compile: bool, tiling: Tiling | None,
              backend: str) -> None:
        from ..export.runtime import OnnxNetwork, resolve_backend

        if compile or tiling is not None:
            raise ValueError(f"backend={backend!r} runs the exported graph as it is: tile= and compile= are for "
                             "backend='torch'")
        resolve_backend(backend, device)  # the package to install, before any frame
        self.precision, self.channels_last, self.compiled = Precision(torch.float32), False, False
        self.model = model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
        self._forward = OnnxNetwork(self.model, kind, backend=backend, device=device)

    @property
    def config(self) -> Any:
        return self.model.config

    def describe(self) -> dict[str, Any]:
        """What the forward pass uses, for logs and benchmark reports."""
        return {"precision": self.precision.name, "channels_last": self.channels_last, "compile": self.compiled,
                "tile": None if self.tiling is None else self.tiling.tile, "backend": self.backend}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.precision.context(self.device):
            return self._forward(*args, **kwargs)
