"""Models: the architecture x encoder registry over segmentation-models-pytorch, the bone_avizo
model file (safetensors + metadata JSON), BONe checkpoint import and ONNX export.

    model = build_model("unet", "resnet18", in_channels=1, num_classes=3)
    save_model("bone.safetensors", model, ModelMetadata("unet", "resnet18", 1, 3, 256))
    loaded = load_model("bone.safetensors")      # or a BONe .pth checkpoint
    loaded.module(x)                             # (B, 1, H, W) -> (B, 3, H, W) logits
"""
from bone_avizo._lazy import lazy_exports

# imported on first use (PEP 562), so that reading a model file's metadata does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    "bone_avizo.models.bone_import": ("import_bone_checkpoint",),
    "bone_avizo.models.header": ("header_summary", "read_metadata"),
    "bone_avizo.models.metadata": ("ModelMetadata",),
    "bone_avizo.models.modelfile": ("LoadedModel", "load_model", "model_summary", "save_model"),
    "bone_avizo.models.onnx_export": ("export_onnx",),
    "bone_avizo.models.registry": ("ARCHITECTURES", "build_model", "count_parameters", "estimate_gflops",
                                   "list_architectures", "list_encoders"),
})

__all__ = ["ARCHITECTURES", "build_model", "list_architectures", "list_encoders", "count_parameters",
           "estimate_gflops", "ModelMetadata", "save_model", "load_model", "read_metadata", "LoadedModel",
           "model_summary", "header_summary", "import_bone_checkpoint", "export_onnx"]
