"""DLFit: training 2D / 2.5D segmentation networks on many labelled scans.

    from bone_avizo.fit import fit_model, FitConfig
    result = fit_model([("scan1.tif", "scan1_labels.tif"), ("scan2.tif", "scan2_labels.tif")],
                       FitConfig(epochs=25, patch_size=256), output="bone.safetensors")
"""
from bone_avizo.config import FitConfig
from bone_avizo.data.scans import ScanSpec, discover_scan_folders, pair_specs
from bone_avizo.fit.checkpoint import checkpoint_path, load_checkpoint
from bone_avizo.fit.trainer import FitResult, fit_model, resume_inputs

__all__ = ["FitConfig", "FitResult", "ScanSpec", "fit_model", "resume_inputs", "pair_specs",
           "discover_scan_folders", "checkpoint_path", "load_checkpoint"]
