"""bone_avizo: deep-learning segmentation of bone in micro-CT volumes.

The core engine (everything except ``bone_avizo.avizo`` and ``bone_avizo.standalone``)
works on arrays in (z, y, x) order and never imports a user-interface face. What a script may import
is listed in docs/api.md (each module's ``__all__``); everything else is internal.
"""
from bone_avizo.errors import BoneAvizoError
from bone_avizo.volume import Volume, VolumeInfo

__version__ = "0.1.0"
__all__ = ["BoneAvizoError", "Volume", "VolumeInfo", "__version__"]
