"""tune_malloc: freed frame-sized buffers are reused instead of being page-faulted in again."""
import platform
import subprocess
import sys

import pytest

from vs_hdrvid import tune_malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# faults while filling a freshly allocated 24 MB buffer (a 1080p RGBS frame), the second time round
_PROBE = """
import resource, sys
import torch
from vs_hdrvid.malloc import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = torch.empty(3, 1080, 1920)  # torch, unlike numpy, does not ask for huge pages
    a.fill_(1.0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del a
print(faults[1])
"""


def _second_fill_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_tuned_process_reuses_a_freed_frame_buffer():
    assert _second_fill_faults("tuned") < 200          # the freed heap memory, already mapped
    assert _second_fill_faults("default") > 3000       # glibc's default: unmapped, faulted in again


def test_rejects_thresholds_glibc_would_not_take():
    with pytest.raises(ValueError, match="mmap_threshold"):
        tune_malloc(mmap_threshold=64 << 20)
    with pytest.raises(ValueError, match="trim_threshold"):
        tune_malloc(trim_threshold=-1)
    assert tune_malloc() is GLIBC
