"""The standalone face: ``python -m bone_avizo.standalone <command>`` (also ``bone-avizo``).

    from bone_avizo.standalone import main
    exit_code = main(["iou", "--prediction", "p.tif", "--reference", "r.tif"])
"""
from bone_avizo._lazy import lazy_exports

# imported on first use (PEP 562), so that importing a command module does not build the whole parser
__getattr__, __dir__ = lazy_exports(__name__, {"bone_avizo.standalone.__main__": ("main",)})

__all__ = ["main"]
