"""Which torch device a node, a training run or a benchmark computes on."""
from __future__ import annotations

import functools
import platform

import torch

__all__ = ["resolve_device", "cpu_features", "native_bf16"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``.

    Raises:
        ValueError: a CUDA device is asked for and CUDA is not available.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def cpu_features() -> dict[str, object]:
    """The CPU model and the instruction-set features that decide the fast path."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"model": model, "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "avx512f": "avx512f" in flags, "avx2": "avx2" in flags, "threads": torch.get_num_threads(),
            "torch_isa": torch.backends.cpu.get_cpu_capability()}


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU executes bfloat16 matrix arithmetic natively (AMX or AVX512-BF16).

    Elsewhere oneDNN emulates bfloat16 and it is slower than float32.
    """
    feats = cpu_features()
    return bool(feats["amx_bf16"] or feats["avx512_bf16"])
