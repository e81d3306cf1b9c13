"""Background reading and writing so the compute device never waits on disk."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(read: Callable[[T], R], keys: Iterable[T], *, depth: int = 1) -> Iterator[tuple[T, R]]:
    """Yield (key, read(key)) in order while the next ``depth`` reads run in a background thread."""
    keys = list(keys)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bone_avizo-read") as pool:
        pending: list[tuple[T, Future]] = []
        for key in keys[:depth + 1]:
            pending.append((key, pool.submit(read, key)))
        next_index = depth + 1
        while pending:
            key, future = pending.pop(0)
            if next_index < len(keys):
                pending.append((keys[next_index], pool.submit(read, keys[next_index])))
                next_index += 1
            yield key, future.result()


class BackgroundWriter:
    """Runs write jobs in order on one background thread; errors surface on the next call."""

    def __init__(self, max_pending: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bone_avizo-write")
        self._pending: list[Future] = []
        self._max_pending = max_pending

    def submit(self, job: Callable[[], None]) -> None:
        self._pending = [f for f in self._pending if not f.done() or f.result() is not None]
        while len(self._pending) >= self._max_pending:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(job))

    def drain(self) -> None:
        """Wait for every submitted job; re-raise the first failure."""
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending = []

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # already failing: wait quietly for running jobs, keep the original error
            for future in self._pending:
                future.exception()
            self._pool.shutdown(wait=True)
