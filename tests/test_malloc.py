"""tune_malloc: freed buffers are reused instead of being page-faulted in again."""
import platform
import subprocess
import sys

import pytest

from vs_hdrvid import tune_malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# faults while filling 200 MB of 64 KB blocks (heap memory under any mmap threshold), freed in
# between, the second time round: glibc's default trims the freed top of the heap back to the
# kernel, so the blocks are page-faulted in again
_PROBE = """
import resource, sys
import numpy as np
from vs_hdrvid.malloc import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.ones(16384, np.float32) for _ in range(3200)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[1])
"""


def _second_fill_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_tuned_process_reuses_freed_memory():
    assert _second_fill_faults("tuned") < 200          # the freed heap memory, still mapped
    assert _second_fill_faults("default") > 25000      # glibc's default: trimmed, faulted in again


def test_rejects_thresholds_glibc_would_not_take():
    with pytest.raises(ValueError, match="mmap_threshold"):
        tune_malloc(mmap_threshold=64 << 20)
    with pytest.raises(ValueError, match="trim_threshold"):
        tune_malloc(trim_threshold=-1)
    assert tune_malloc() is GLIBC
