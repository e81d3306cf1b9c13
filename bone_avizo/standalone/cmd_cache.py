"""``cache``: list or clear the cache of ONNX exports that the onnxruntime backend runs."""
from __future__ import annotations

import argparse
import datetime

from bone_avizo.models.onnx_cache import (CACHE_VARIABLE, LIMIT_VARIABLE, cache_entries, cache_folder,
                                          cache_limit_bytes, clear_cache)

HELP = "list or clear the cache of ONNX exports (~/.cache/bone_avizo/onnx, bounded by BONE_AVIZO_CACHE_MB)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "clear"),
                        help="list: the cached exports, their size and last use; clear: delete them all")


def run(args: argparse.Namespace) -> int:
    folder = cache_folder()
    if args.action == "clear":
        files, size = clear_cache(folder)
        print(f"removed {files} file(s), {size / 1e6:.1f} MB, from {folder}")
        return 0
    entries = cache_entries(folder)
    total = sum(e.size for e in entries)
    print(f"{folder}: {len(entries)} file(s), {total / 1e6:.1f} MB of at most {cache_limit_bytes() / 1e6:.0f} MB "
          f"(folder: {CACHE_VARIABLE}, limit: {LIMIT_VARIABLE})")
    for entry in entries:
        used = datetime.datetime.fromtimestamp(entry.last_used).isoformat(sep=" ", timespec="seconds")
        print(f"  {entry.size / 1e6:9.1f} MB  last used {used}  {entry.path.name}")
    return 0
