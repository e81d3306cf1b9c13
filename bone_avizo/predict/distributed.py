"""Prediction of one volume by several processes (torchrun, SLURM): disjoint blocks, per-rank
parts, one merge.

Rank r of W predicts blocks r, r + W, r + 2W, ... of the xy plane and writes them into its own
part file ``<output>.part<r>of<W>.h5`` (chunked HDF5: blocks it does not own take no space).
A finished part is announced by a marker file ``<part>.done`` holding the job's fingerprint
(model weights, input, options, normalisation statistics), so a marker left by another job is
never mistaken for this one; a rank that fails writes ``<part>.failed`` so the others stop
waiting. After the barrier, rank 0 checks that every block is present in the part of its owner,
copies the blocks in order through the ordinary writers (any output format), commits, and deletes
the parts. Block boundaries do not depend on the number of ranks, so the labels equal a
one-process run. Parts record their finished blocks: with ``resume`` a restarted job skips them.
The ranks are given (:class:`bone_avizo.runtime.Ranks`); nothing here reads them from the environment.
"""
from __future__ import annotations

import json
import logging
import os
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from bone_avizo.errors import BoneAvizoError, OutputWriteError
from bone_avizo.io.base import remove_path
from bone_avizo.runtime import Ranks

log = logging.getLogger(__name__)

Block = tuple[int, int]


def owned_blocks(blocks: list[Block], ranks: Ranks) -> list[Block]:
    """The blocks rank r predicts: every W-th, starting at r."""
    return [b for i, b in enumerate(blocks) if ranks.owns(i)]


def part_path(output: Path, ranks: Ranks, rank: int | None = None) -> Path:
    rank = ranks.rank if rank is None else rank
    return output.with_name(f"{output.name}.part{rank}of{ranks.world}.h5")


def marker(part: Path, kind: str) -> Path:
    """``<part>.done`` or ``<part>.failed``."""
    return part.with_name(f"{part.name}.{kind}")


class PartWriter:
    """One rank's share of the labels (and probabilities): (z, y, x) uint8 plus finished blocks."""

    def __init__(self, path: Path, shape: tuple[int, int, int], num_classes: int, *, probabilities: bool,
                 resume: bool, fingerprint: str):
        self.path = path
        self.fingerprint = fingerprint
        for kind in ("done", "failed"):
            remove_path(marker(path, kind))
        if path.exists() and not resume:
            remove_path(path)
        import h5py  # here, not at the top: importing this module stays light

        try:
            self.file = h5py.File(path, "a", locking=False)
        except OSError as exc:
            raise OutputWriteError(f"cannot write part file {path}: {exc}; check the output folder") from None
        chunks = (1, *(min(256, s) for s in shape[1:]))
        if "labels" not in self.file:
            self.file.create_dataset("labels", shape=shape, dtype=np.uint8, chunks=chunks)
            if probabilities:
                self.file.create_dataset("probabilities", shape=(num_classes, *shape), dtype=np.uint8,
                                         chunks=(1, *chunks))
            self.file.attrs["done_blocks"] = "[]"
            self.file.attrs["fingerprint"] = fingerprint
        if self.file.attrs.get("fingerprint") != fingerprint:  # a part of another job: start afresh
            self.file.close()
            remove_path(path)
            self.__init__(path, shape, num_classes, probabilities=probabilities, resume=False,
                          fingerprint=fingerprint)
            return
        self.done = {tuple(b) for b in json.loads(self.file.attrs["done_blocks"])}

    def write(self, block: Block, labels: np.ndarray, quantised: np.ndarray | None) -> None:
        z0, z1 = block
        self.file["labels"][z0:z1] = labels
        if quantised is not None:
            self.file["probabilities"][:, z0:z1] = quantised
        self.done.add(block)
        self.file.attrs["done_blocks"] = json.dumps(sorted(self.done))
        self.file.flush()

    def finish(self) -> None:
        """Close the part and announce it with its ``.done`` marker (written atomically)."""
        self.file.close()
        _write_marker(marker(self.path, "done"), self.fingerprint)

    def fail(self, error: BaseException) -> None:
        """Tell the other ranks that this one failed."""
        self.close()
        _write_marker(marker(self.path, "failed"), f"{type(error).__name__}: {error}")

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()


def _write_marker(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def barrier(ranks: Ranks, parts: list[Path], *, fingerprint: str = "",
            timeout_s: float = 7 * 24 * 3600) -> None:
    """Wait until every rank has finished its part: torch.distributed (gloo) when a rendezvous is
    configured (torchrun sets MASTER_ADDR), every rank taking part; else rank 0 alone waits, polling
    the parts' ``.done`` markers (the other ranks have nothing to wait for: rank 0 merges)."""
    import torch.distributed as dist

    if dist.is_available() and (dist.is_initialized() or "MASTER_ADDR" in os.environ):
        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world,
                                    timeout=timedelta(seconds=timeout_s))
        dist.barrier()
        return
    if ranks.rank != 0:
        return
    deadline = time.monotonic() + timeout_s
    while not all(_done(p, fingerprint) for p in parts):
        failed = [p for p in parts if marker(p, "failed").exists()]
        if failed:
            reason = marker(failed[0], "failed").read_text(encoding="utf-8")
            raise BoneAvizoError(f"another rank failed ({failed[0].name}: {reason}); fix it and rerun "
                                 "the same command with --resume")
        if time.monotonic() > deadline:
            raise BoneAvizoError(f"ranks did not finish within {timeout_s:.0f} s: "
                                 f"{[p.name for p in parts if not _done(p, fingerprint)]}")
        time.sleep(0.5)


def _done(part: Path, fingerprint: str) -> bool:
    try:
        return marker(part, "done").read_text(encoding="utf-8") == fingerprint
    except OSError:
        return False


def merge_parts(output: Path, ranks: Ranks, blocks: list[Block], write) -> None:
    """Rank 0: copy every block from its owner's part through ``write(z0, labels, quantised)``,
    after checking that every owner finished every block it was given."""
    import h5py

    parts = [part_path(output, ranks, r) for r in range(ranks.world)]
    files = [h5py.File(p, "r", locking=False) for p in parts]
    try:
        for r, fh in enumerate(files):
            done = {tuple(b) for b in json.loads(fh.attrs["done_blocks"])}
            missing = [b for b in owned_blocks(blocks, Ranks(r, ranks.world)) if b not in done]
            if missing or tuple(fh["labels"].shape) != tuple(files[0]["labels"].shape):
                raise BoneAvizoError(f"part {parts[r]} is incomplete ({len(missing)} block(s) missing, "
                                     f"first {missing[:1]}); rerun the same command with --resume")
        for i, (z0, z1) in enumerate(blocks):
            fh = files[i % ranks.world]
            quantised = fh["probabilities"][:, z0:z1] if "probabilities" in fh else None
            write(z0, fh["labels"][z0:z1], quantised)
    finally:
        for fh in files:
            fh.close()


def remove_parts(output: Path, ranks: Ranks) -> None:
    for r in range(ranks.world):
        part = part_path(output, ranks, r)
        for path in (part, marker(part, "done"), marker(part, "failed")):
            remove_path(path)


def job_fingerprint(*parts) -> str:
    """A SHA-256 over the JSON of ``parts`` (model digest, input, options, statistics)."""
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
