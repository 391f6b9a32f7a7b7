"""The fast path of a training step: what this machine executes faster, decided from its features.

Each option is on only where it measurably helps (``vs-hdrvid bench-train`` measures the fast path
against the plain fp32 eager step, side by side in one process):

* ``bf16``: autocast to bfloat16 where the CPU executes it natively (AMX or AVX512-BF16, read from
  the CPU flags at run time) or on CUDA (fp16 there where bf16 is not supported). On a CPU without
  them bfloat16 is emulated and slower, so it stays off.
* ``channels_last``: the networks' weights (and so oneDNN's convolutions) in NHWC, for the stages
  where ``bench-train`` measured a gain on the project's 2-core AVX2 machine (CoarseNet 1.05x,
  DeAltHDR 1.4x) and not for the flow pretraining (SpyNet's 5x5 convolutions: 0.92x).
* ``flush_denormal``: denormal floats flushed to zero (the zero-initialised corrections start with
  tiny gradients and Adam moments, where denormal arithmetic costs microcode assists).
* ``compile``: ``torch.compile`` of the networks; opt-in, since on the 2-core AVX2 machines of this
  project it brought nothing measurable for CoarseNet and costs a minute of compilation.

The networks' configs and checkpoints do not depend on it: a run may resume on another machine
with another fast path.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from torch import nn

from vs_hdrvid.devices import cpu_features, native_bf16

__all__ = ["FastPath", "cpu_features", "NCHW_STAGES"]

NCHW_STAGES = ("spynet",)  # stages whose networks train faster in NCHW (bench-train, see above)


@dataclass(frozen=True)
class FastPath:
    """Which speed-ups a training step uses (see the module docstring)."""

    bf16: bool = False
    channels_last: bool = False
    flush_denormal: bool = False
    compile: bool = False

    @classmethod
    def baseline(cls) -> FastPath:
        """The plain fp32 eager step."""
        return cls()

    @classmethod
    def detect(cls, device: torch.device, compile: bool = False, stage: str = "coarse") -> FastPath:
        """The default fast path of ``stage`` for ``device`` on this machine."""
        nhwc = stage not in NCHW_STAGES
        if device.type == "cuda":
            return cls(bf16=True, channels_last=nhwc, compile=compile)
        return cls(bf16=native_bf16(), channels_last=nhwc,
                   flush_denormal=True, compile=compile)

    def describe(self) -> dict[str, bool]:
        return asdict(self)

    def prepare(self, nets: dict[str, nn.Module], trained: tuple[str, ...]) -> None:
        """Apply to the networks (in place) and to the process (denormals)."""
        torch.set_flush_denormal(self.flush_denormal)
        for net in nets.values():
            net.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        if self.compile:
            for name in trained:
                nets[name].compile()

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """The forward pass's precision: bfloat16 autocast when ``bf16``, else nothing."""
        if not self.bf16:
            yield
            return
        dtype = torch.bfloat16
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            dtype = torch.float16
        with torch.autocast(device.type, dtype=dtype):
            yield
