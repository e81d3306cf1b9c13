"""Error classes. Every message is one line: what is wrong, then how to fix it.

Each subclass of :class:`BoneAvizoError` also derives from the built-in exception it means, so callers
that catch built-ins catch it too: bad values and files of the wrong content are ``ValueError`` s,
missing inputs ``FileNotFoundError`` s, outputs that exist or cannot be written ``OSError`` s.
:class:`Cancelled` is none of these: it is not an error of the input, and nothing that handles one must
take a cancel for it.
"""

__all__ = ["BoneAvizoError", "InputFileError", "FormatError", "CorruptFileError", "ShapeMismatchError",
           "UnsupportedDtypeError", "InvalidVolumeError", "OutputExistsError", "OutputWriteError",
           "OutputIsInputError", "ConfigError", "ModelError", "LabelError", "VoxelSizeError", "Cancelled"]


class BoneAvizoError(Exception):
    """Base class for errors caused by the user's input or environment."""


class InputFileError(BoneAvizoError, FileNotFoundError):
    """A path that must exist does not, or cannot be read."""


class FormatError(BoneAvizoError, ValueError):
    """A file has the wrong or an unsupported format or extension."""


class CorruptFileError(BoneAvizoError, ValueError):
    """A file is truncated, malformed, or disagrees with its own header."""


class ShapeMismatchError(BoneAvizoError, ValueError):
    """Two arrays or an array and its declared header disagree in shape."""


class UnsupportedDtypeError(BoneAvizoError, ValueError):
    """An array dtype the operation cannot handle."""


class InvalidVolumeError(BoneAvizoError, ValueError):
    """A volume that is not 3-D, is empty, has NaN/inf, or a bad voxel size."""


class OutputExistsError(BoneAvizoError, FileExistsError):
    """An output path exists and overwriting was not allowed."""


class OutputWriteError(BoneAvizoError, OSError):
    """An output cannot be written (unwritable folder, disk full)."""


class OutputIsInputError(OutputWriteError):
    """An output would replace (or be written inside) one of the command's own inputs."""


class ConfigError(BoneAvizoError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


class ModelError(BoneAvizoError, ValueError):
    """A model file is missing, corrupt, unsafe, or does not fit the data."""


class LabelError(BoneAvizoError, ValueError):
    """Label values are not integers 0..N-1 or disagree with the declared classes."""


class VoxelSizeError(BoneAvizoError, ValueError):
    """Two volumes that must cover the same voxels record different voxel sizes."""


class Cancelled(BoneAvizoError):
    """The user cancelled a long operation through the progress callback."""


def describe_import_failure(exc: BaseException) -> str:
    """One line for a scripted module whose heavy imports failed: the real error and its fix.

    ``ModuleNotFoundError`` names the missing package; an ``OSError`` (on Windows "DLL load
    failed" while importing torch) means a broken or mismatched torch install.
    """
    import sys

    where = f"Python {sys.version.split()[0]} in {sys.prefix}"
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing:
        package = {"segmentation_models_pytorch": "segmentation-models-pytorch"}.get(missing, missing)
        fix = (f"install {package} into that Python ({sys.executable} -m pip install {package}, or through "
               "Avizo's Python environment manager), then restart Avizo")
    elif isinstance(exc, OSError):
        fix = (f"reinstall torch for that Python ({sys.executable} -m pip install --force-reinstall torch; on "
               "Windows also install the Microsoft Visual C++ Redistributable), then restart Avizo")
    else:
        fix = f"reinstall bone_avizo into that Python ({sys.executable} -m pip install --force-reinstall bone_avizo)"
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return f"BONe modules cannot start in {where}: {text}; fix: {fix} (docs/avizo.md)"
