"""``info``: describe a model file (.safetensors, BONe .pth, exported .onnx) or a volume file;
list the available architectures and encoders."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bone_avizo.errors import ConfigError
from bone_avizo.standalone.common import existing_path, parse_options

HELP = "show a model's metadata (arch, encoder, classes, training scans, ...) or a volume's shape and voxel size"

MODEL_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")
_TRAINING_SHOWN = ("train_scans", "val_scans", "epochs", "loss", "criterion", "optimizer", "lr", "learning_rate",
                   "best_val_score",
                   "best_epoch", "seed", "flops_G", "param_count", "peak_ram_GB", "peak_vram_GB",
                   "wall_time_sec", "version", "created", "source", "bone_fields_read", "bone_fields_ignored")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", metavar="PATH",
                        help="a model file (.safetensors, BONe .pth, .onnx) or a volume (any supported format)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--architectures", action="store_true", help="list the available architectures")
    parser.add_argument("--encoders", action="store_true", help="list the available encoders")
    parser.add_argument("--input-option", action="append", metavar="KEY=VALUE",
                        help="reader option for a volume, e.g. dataset=/volume for HDF5")


def run(args: argparse.Namespace) -> int:
    if args.architectures or args.encoders:
        _print_lists(args)
        return 0
    if not args.path:
        raise ConfigError("give a PATH (a model or volume file), or --architectures / --encoders")
    path = existing_path(args.path, "PATH")
    if path.suffix.lower() == ".onnx":
        info = _onnx_info(path)
    elif path.is_file() and (path.suffix.lower() in MODEL_SUFFIXES or _is_safetensors(path)):
        info = _model_info(path)
    else:
        info = _volume_info(path, parse_options(args.input_option, "--input-option"))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(_format(info))
    return 0


def _print_lists(args: argparse.Namespace) -> None:
    from bone_avizo.models import list_architectures, list_encoders

    lists = {}
    if args.architectures:
        lists["architectures"] = list_architectures()
    if args.encoders:
        lists["encoders"] = list_encoders()
    if args.json:
        print(json.dumps(lists, indent=2))
        return
    for name, items in lists.items():
        print(f"{name} ({len(items)}):")
        print("  " + "\n  ".join(items))
    if args.encoders:
        print("timm models are also accepted as tu-<timm model name>")


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(9)[8:9] == b"{"


def _model_info(path: Path) -> dict[str, Any]:
    from bone_avizo.models import load_model, model_summary

    return {"kind": "model", **model_summary(load_model(path))}


def _onnx_info(path: Path) -> dict[str, Any]:
    import dataclasses

    from bone_avizo.models.onnx_export import read_onnx_metadata

    metadata = read_onnx_metadata(path)
    info: dict[str, Any] = {"kind": "model", "path": str(path), "format": "onnx"}
    if metadata is not None:
        info.update({f.name: getattr(metadata, f.name) for f in dataclasses.fields(metadata)})
    return info


def _volume_info(path: Path, options: dict[str, Any]) -> dict[str, Any]:
    from bone_avizo.io import detect_format, open_volume

    fmt = options.pop("format", None) or detect_format(path)
    with open_volume(path, format=fmt, **options) as source:
        info = source.info
        return {"kind": "volume", "path": str(path), "format": fmt, "name": info.name,
                "shape_zyx": list(info.shape), "dtype": str(info.dtype), "voxel_size_zyx": list(info.voxel_size),
                "unit": info.unit, "origin_zyx": list(info.origin), "size_MB": round(info.nbytes / 1e6, 3),
                "class_names": list(info.class_names) if info.class_names else None}


def _format(info: dict[str, Any]) -> str:
    if info.get("kind") == "volume":
        return "\n".join(f"{k}: {_show(v)}" for k, v in info.items() if k != "kind" and v is not None)
    lines = []
    for key in ("path", "format", "weights_dtype", "arch", "encoder", "arch_options", "in_channels",
                "num_classes", "class_names", "patch_size", "input_multiple", "normalization",
                "normalization_stats", "context_slices", "planes", "parameters"):
        if info.get(key) not in (None, {}, []):
            lines.append(f"{key}: {_show(info[key])}")
    training = info.get("training") or {}
    shown = [k for k in _TRAINING_SHOWN if training.get(k) is not None]
    if shown:
        lines.append("training:")
        lines += [f"  {k}: {_show(training[k])}" for k in shown]
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "none"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)
