"""Run blocks of a plane on one or several compute devices, results in block order.

One device: a background thread reads the next block while the current one is computed.
Several devices (e.g. cuda:0, cuda:1): one worker thread per device, each with its own copy of
the network; reads are serialised (file handles are not shared between threads), compute runs
in parallel (torch releases the GIL), and results are yielded in block order so the writers see
the same sequence as with one device.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

from bone_avizo.streams import prefetched

Block = tuple[int, int]


def map_blocks(read: Callable[[Any, Block], Any], compute: Callable[[Any, Block, Any], Any],
               workers: Sequence[Any], blocks: Sequence[Block]) -> Iterator[tuple[Block, Any]]:
    """Yield (block, compute(worker, block, read(worker, block))) in block order.

    ``workers`` are per-device objects (e.g. plane predictors); each block runs on one of them.
    """
    if len(workers) == 1:
        worker = workers[0]
        for block, data in prefetched(lambda b: read(worker, b), blocks):
            yield block, compute(worker, block, data)
        return
    idle: queue.Queue = queue.Queue()
    for worker in workers:
        idle.put(worker)
    read_lock = threading.Lock()

    def run(block: Block):
        worker = idle.get()
        try:
            with read_lock:
                data = read(worker, block)
            return compute(worker, block, data)
        finally:
            idle.put(worker)

    in_flight = 2 * len(workers)
    with ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="bone_avizo-device") as pool:
        pending: deque = deque()
        try:
            for block in blocks:
                pending.append((block, pool.submit(run, block)))
                if len(pending) >= in_flight:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()
