"""Peak resident memory as the benchmarks, the trainer's metadata and the studies report it."""
import subprocess
import sys

import numpy as np
import pytest

from bone_avizo._memory import peak_rss_bytes, reset_peak_rss

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")

CHILD = "from bone_avizo._memory import peak_rss_bytes; print(peak_rss_bytes())"


@linux_only
def test_a_child_does_not_inherit_its_parents_peak():
    ballast = np.ones(400 << 20, dtype=np.uint8)  # 400 MiB touched in this process before the fork
    child = int(subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                               check=True).stdout)
    assert peak_rss_bytes() >= ballast.nbytes
    assert child < ballast.nbytes / 2


@linux_only
def test_the_peak_counts_a_large_array_and_can_be_reset():
    before = peak_rss_bytes()
    block = np.ones(max(256 << 20, before), dtype=np.uint8)
    assert peak_rss_bytes() >= block.nbytes
    del block
    if reset_peak_rss():
        assert peak_rss_bytes() < before + (256 << 20)
