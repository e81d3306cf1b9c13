"""The thread pool that volume readers and writers share to decode and encode chunks and pages.

zlib, Blosc and the TIFF codecs release the GIL, so threads decode and encode in parallel. The number
of threads defaults to the CPUs this process may use; the environment variable
``BONE_AVIZO_IO_THREADS`` overrides it (``1`` makes every read and write single-threaded).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from bone_avizo.errors import ConfigError

IO_THREADS_ENV = "BONE_AVIZO_IO_THREADS"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


DEFAULT_IO_THREADS = _usable_cpus()

_lock = threading.Lock()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, threads, pool)


def io_threads() -> int:
    """Threads for volume I/O: ``BONE_AVIZO_IO_THREADS`` when set, else the usable CPUs."""
    text = os.environ.get(IO_THREADS_ENV, "").strip()
    if not text:
        return DEFAULT_IO_THREADS
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{IO_THREADS_ENV}={text!r} is not a positive whole number; set it to the threads "
                          "volume I/O may use (e.g. 4) or unset it")
    return int(text)


def _io_pool() -> ThreadPoolExecutor:
    """The shared pool of :func:`io_threads` threads (a new one after a fork or a change of the setting)."""
    global _pool
    threads, pid = io_threads(), os.getpid()
    with _lock:
        if _pool is None or _pool[:2] != (pid, threads):
            if _pool is not None and _pool[0] == pid:
                _pool[2].shutdown(wait=False)
            _pool = (pid, threads, ThreadPoolExecutor(threads, thread_name_prefix="bone_avizo_io"))
        return _pool[2]


def parallel_imap(func, items):
    """``func(item)`` for each item, in order, as they finish: run by the I/O threads when there is more
    than one item (all are started at once), so the caller can use the first results while the threads
    work on the others."""
    items = list(items)
    if len(items) < 2 or io_threads() == 1:
        return map(func, items)
    return _io_pool().map(func, items)


def parallel_map(func, items) -> list:
    """``[func(item) for item in items]``, run by the I/O threads when there is more than one item."""
    return list(parallel_imap(func, items))
