"""Keeping the resident memory of long streaming jobs bounded.

glibc's malloc raises its mmap threshold each time a large block is freed, so later large arrays
(slabs, logits) come from heap arenas that are never returned to the system; with reader and
writer threads each arena keeps its own high-water mark. Fixing the threshold at 1 MiB keeps every
large array memory-mapped and returned on free. Measured on a 2048 x 2048 x 16 HDF5 prediction:
peak RSS 1.65 GB before, 1.20 GB after.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 20
_done = False


def bound_heap() -> None:
    """On Linux with glibc, fix malloc's mmap threshold (once per process); elsewhere do nothing."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return
    _done = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES) != 1:
            log.debug("mallopt(M_MMAP_THRESHOLD) was refused; memory use may grow with fragmentation")
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        log.debug("malloc tuning not available on this C library")


def peak_rss_bytes() -> int:
    """This process's peak resident memory in bytes.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory. Not
    getrusage's ru_maxrss, which a process started by fork + exec inherits from its parent (a host
    program or benchmark that launched it would be counted). Elsewhere ru_maxrss (bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (Linux: VmHWM); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False
