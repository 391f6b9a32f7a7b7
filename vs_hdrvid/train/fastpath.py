"""The fast path of a training step: what this machine executes faster, decided from its features.

Each option is on only where it measurably helps (``vs-hdrvid bench-train`` measures the fast path
against the plain fp32 eager step, side by side in one process):

* ``bf16``: autocast to bfloat16 where the CPU executes it natively (AMX or AVX512-BF16, read from
  the CPU flags at run time) or on CUDA (fp16 there where bf16 is not supported). On a CPU without
  them bfloat16 is emulated and slower, so it stays off. Off for DeAltHDR (``FP32_STAGES``): from the
  shipped weights, 300 steps at lr 2e-4 (same seed, batch 4 of 64x64, AVX512-BF16 EPYC) left
  validation at 30.84 dB PSNR-mu under bf16 autocast and at 35.75 in fp32, and a 4000-step bf16
  run at lr 5e-5 raised its own training loss (0.1303 -> 0.1386 on 40 training crops) while its
  validation fell from 35.35 to 31.2 dB, below the merge it corrects; fp32 ran as fast (3.6 against
  3.4 steps/s).
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

__all__ = ["FastPath", "cpu_features", "NCHW_STAGES", "FP32_STAGES"]

NCHW_STAGES = ("spynet",)  # stages whose networks train faster in NCHW (bench-train, see above)
FP32_STAGES = ("dealthdr", "adapt")  # stages that bf16 autocast breaks (DeAltHDR's training, see above)


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
        nhwc, low = stage not in NCHW_STAGES, stage not in FP32_STAGES
        if device.type == "cuda":
            return cls(bf16=low, channels_last=nhwc, compile=compile)
        return cls(bf16=low and native_bf16(), channels_last=nhwc,
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
