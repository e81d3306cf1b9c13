"""DLFit: training 2D / 2.5D segmentation networks on many labelled scans.

    from bone_avizo.fit import fit_model, FitConfig
    result = fit_model([("scan1.tif", "scan1_labels.tif"), ("scan2.tif", "scan2_labels.tif")],
                       FitConfig(epochs=25, patch_size=256), output="bone.safetensors")
"""
from bone_avizo._lazy import lazy_exports
from bone_avizo.config import FitConfig

# imported on first use (PEP 562), so that the CLI's argument definitions do not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    "bone_avizo.data.scans": ("ScanSpec", "discover_scan_folders", "pair_specs"),
    "bone_avizo.fit.checkpoint": ("checkpoint_path", "load_checkpoint"),
    "bone_avizo.fit.trainer": ("FitResult", "fit_model", "resume_inputs"),
})

__all__ = ["FitConfig", "FitResult", "ScanSpec", "fit_model", "resume_inputs", "pair_specs",
           "discover_scan_folders", "checkpoint_path", "load_checkpoint"]
