"""Peak resident memory as the benchmarks, the trainer's metadata and the studies report it.
Each test touches 64 MiB at most, whatever the test process's own peak is."""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bone_avizo import _memory
from bone_avizo._memory import PeakMemory, peak_memory_gb, peak_rss_bytes, reset_peak_rss

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")

BLOCK = 64 << 20  # bytes
MEMORY_MODULE = Path(__file__).resolve().parents[1] / "bone_avizo" / "_memory.py"
# the module alone (standard library only), so that the child's own peak stays far below BLOCK
CHILD = ("import importlib.util; spec = importlib.util.spec_from_file_location('memory', {path!r}); "
         "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
         "print(module.peak_rss_bytes())")


@linux_only
def test_a_child_does_not_inherit_its_parents_peak():
    ballast = np.ones(BLOCK, dtype=np.uint8)  # touched in this process before the fork
    child = int(subprocess.run([sys.executable, "-c", CHILD.format(path=str(MEMORY_MODULE))], capture_output=True,
                               text=True, check=True).stdout)
    assert peak_rss_bytes() >= ballast.nbytes
    assert child < ballast.nbytes / 2


@linux_only
def test_the_peak_counts_a_large_array_and_can_be_reset():
    if not reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its peak (/proc/self/clear_refs)")
    start = peak_rss_bytes()  # after the reset: the memory resident now
    block = np.ones(BLOCK, dtype=np.uint8)
    assert peak_rss_bytes() >= start + 0.9 * block.nbytes  # other pages may leave memory meanwhile
    del block
    assert reset_peak_rss() and peak_rss_bytes() < start + BLOCK / 2


def _allocate_in_block(peak_memory: PeakMemory) -> float:
    """Touch 64 MiB inside the block; returns the resident GiB before it."""
    import psutil

    before = psutil.Process().memory_info().rss / 1024 ** 3
    with peak_memory:
        block = np.ones(64 * 1024 ** 2 // 8)
        time.sleep(3 * _memory.SAMPLE_SECONDS)  # long enough for the sampler to see it
        del block
    return before


def test_peak_memory_sees_an_allocation_inside_the_block():
    peak = PeakMemory("cpu")
    before = _allocate_in_block(peak)
    assert peak.ram_gb >= before + 0.05
    assert peak.vram_gb == 0.0


def test_where_the_peak_cannot_be_reset_it_is_sampled(monkeypatch):
    monkeypatch.setattr(_memory, "reset_peak_rss", lambda: False)
    monkeypatch.setattr(_memory, "peak_rss_bytes", lambda: 1 << 50)  # a process peak the block must not report
    peak = PeakMemory("cpu")
    before = _allocate_in_block(peak)
    assert before + 0.05 <= peak.ram_gb < 1 << 20


def test_the_process_peak_in_gib_has_no_vram_on_cpu():
    ram, vram = peak_memory_gb("cpu")
    assert ram == round(peak_rss_bytes() / 1024 ** 3, 4) > 0 and vram == 0.0
