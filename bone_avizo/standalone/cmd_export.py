"""``export``: convert a model file (bone_avizo .safetensors or BONe .pth) to ONNX for onnxruntime,
or a BONe .pth checkpoint to a bone_avizo .safetensors model file."""
from __future__ import annotations

import argparse

from bone_avizo.errors import ConfigError
from bone_avizo.standalone.common import existing_path, int_in_range, output_path

HELP = "export a model to ONNX (FILE.onnx) or convert a BONe .pth checkpoint to a model file (FILE.safetensors)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="FILE",
                        help="model file: bone_avizo .safetensors or BONe .pth checkpoint")
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="FILE.onnx (ONNX graph with the metadata) or FILE.safetensors (model file)")
    parser.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default: 17)")
    parser.add_argument("--patch-size", type=int_in_range(32, 4096, multiple_of=32), default=None, metavar="PX",
                        help="spatial size of the tracing input [32..4096, a multiple of 32; default: the "
                             "model's patch size]; the graph accepts any multiple of 32")
    parser.add_argument("--fp16", action="store_true", help="for .safetensors output: store weights in fp16")
    parser.add_argument("--class-names", nargs="+", metavar="NAME",
                        help="for .safetensors output: one name per class, label 0 first")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run(args: argparse.Namespace) -> int:
    from bone_avizo.models import export_onnx, import_bone_checkpoint, load_model, save_model
    from bone_avizo.models.modelfile import detect_model_format
    from bone_avizo.models.onnx_export import MAX_OPSET, MIN_OPSET

    from bone_avizo.models.onnx_model import refuse_training

    model_path = existing_path(args.model, "--model")
    refuse_training(model_path)
    output = output_path(args.output, "--output")
    suffix = output.suffix.lower()
    if suffix == ".onnx" and not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise ConfigError(f"--opset: {args.opset} is not supported; use {MIN_OPSET}..{MAX_OPSET} (default 17)")
    if suffix == ".onnx":
        written = export_onnx(load_model(model_path), output, opset=args.opset, patch_size=args.patch_size,
                              overwrite=args.overwrite)
    elif suffix == ".safetensors":
        dtype = "fp16" if args.fp16 else None
        if detect_model_format(model_path) == "bone_pth":
            written = import_bone_checkpoint(model_path, output, overwrite=args.overwrite, dtype=dtype,
                                             class_names=tuple(args.class_names or ()))
        else:
            loaded = load_model(model_path)
            meta = loaded.metadata
            if args.class_names:
                meta = meta.with_(class_names=tuple(args.class_names))
            written = save_model(output, loaded.module, meta, dtype=dtype, overwrite=args.overwrite)
    else:
        raise ConfigError(f"--output {output}: use a .onnx (ONNX export) or .safetensors (model file) name")
    print(f"wrote {written}")
    return 0

