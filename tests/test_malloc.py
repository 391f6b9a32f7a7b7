"""tune_malloc: the thresholds it takes and refuses, and that it reports what it did. What the tuning
saves (page faults on reused memory) is measured by `vs-hdrvid bench` (eval.bench.allocator_probe)."""
import platform
import subprocess
import sys

import pytest

from vs_hdrvid import tune_malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

_PROBE = """
from vs_hdrvid.malloc import malloc_tuned, tune_malloc
before = malloc_tuned()
print(before, tune_malloc(), malloc_tuned())
"""


def test_tuning_is_reported():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", str(GLIBC), str(GLIBC)]


def test_rejects_thresholds_glibc_would_not_take():
    with pytest.raises(ValueError, match="mmap_threshold"):
        tune_malloc(mmap_threshold=64 << 20)
    with pytest.raises(ValueError, match="trim_threshold"):
        tune_malloc(trim_threshold=-1)
    with pytest.raises(ValueError, match="top_pad"):
        tune_malloc(top_pad=2**31)
    assert tune_malloc() is GLIBC
