"""What a scripted module reads from its ports: the connected fields, chosen files, and the model.

Every function raises a :class:`~bone_avizo.errors.BoneAvizoError` with a one-line message naming
the port to fix, so that :func:`~bone_avizo.avizo.run_safely` shows it as a plain error in Avizo.
Nothing here imports torch at import time (BONeInfo must load in an Avizo without torch).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from bone_avizo.avizo.fields import field_to_volume, is_label_field
from bone_avizo.errors import BoneAvizoError, InputFileError
from bone_avizo.models.cache import ModelCache, describe_model  # noqa: F401 - part of this module's API

VOLUME_SUFFIXES = (".am", ".tif", ".tiff", ".raw", ".h5", ".hdf5", ".zarr", ".npy", ".mhd", ".nii", ".rec")


class MissingInputError(BoneAvizoError, ValueError):
    """A port the module needs is empty or holds the wrong kind of data."""


def _port_title(port: Any) -> str:
    return str(getattr(port, "label", "") or getattr(port, "name", "input"))


def connected_field(connection: Any, what: str, *, label: bool | None = None) -> Any:
    """The field connected to ``connection`` (an HxConnection, e.g. ``self.data``).

    ``label=False`` refuses label fields (a scan is expected), ``label=True`` requires one;
    ``None`` takes either. Raises :class:`MissingInputError` naming the port.
    """
    field = connection.source()
    title = _port_title(connection)
    if field is None:
        raise MissingInputError(f"no {what} connected: connect a field to the {title} port "
                                "(right-click the field, or drag its output onto the module)")
    name = getattr(field, "name", "?")
    if label is False and is_label_field(field):
        raise MissingInputError(f"{name} is a label field; connect the grayscale scan to the {title} port "
                                "(a label field cannot be segmented again)")
    if label is True and not is_label_field(field):
        raise MissingInputError(f"{name} is not a label field; connect a label field to the {title} port")
    return field


def chosen_file(port: Any, what: str, *, must_exist: bool = True) -> Path | None:
    """The file named by an HxPortFilename, or None when the port is empty.

    ``must_exist``: raise :class:`~bone_avizo.errors.InputFileError` for a name that is not an
    existing file (for an output: its folder must exist).
    """
    names = port.filenames
    if isinstance(names, (list, tuple)):
        names = names[0] if names else None
    if not names or not str(names).strip():
        return None
    path = Path(os.path.expanduser(str(names).strip()))
    if must_exist and not path.is_file():
        raise InputFileError(f"{what} {path} does not exist; choose an existing file in the "
                             f"{_port_title(port)} port")
    if not must_exist and not path.resolve().parent.is_dir():
        raise InputFileError(f"{what} {path}: folder {path.parent} does not exist; create it or choose "
                             f"another file in the {_port_title(port)} port")
    return path


def required_file(port: Any, what: str) -> Path:
    """:func:`chosen_file` for a port that must name an existing file."""
    path = chosen_file(port, what)
    if path is None:
        raise MissingInputError(f"no {what} chosen: choose one in the {_port_title(port)} port")
    return path


@contextlib.contextmanager
def field_or_file(connection: Any, file_port: Any, what: str) -> Iterator[Any]:
    """The volume of the field connected to ``connection``, else the file chosen in ``file_port``
    opened lazily (closed on exit). The connection wins when both are set."""
    if connection.source() is not None:
        yield field_to_volume(connected_field(connection, what))
        return
    path = chosen_file(file_port, f"{what} file")
    if path is None:
        raise MissingInputError(f"no {what}: connect a field to the {_port_title(connection)} port or choose "
                                f"a file in the {_port_title(file_port)} port")
    from bone_avizo.io import open_volume

    with open_volume(path) as source:
        yield source


def volume_stem(name: str) -> str:
    """An object name without its volume file suffix: ``scan.am`` -> ``scan``."""
    stem = str(name)
    for known in VOLUME_SUFFIXES:
        if stem.lower().endswith(known) and len(stem) > len(known):
            return stem[: -len(known)]
    return stem


def derived_name(name: str, suffix: str) -> str:
    """The name of a result made from the object ``name``: ``scan.am`` -> ``scan.<suffix>``."""
    return f"{volume_stem(name)}.{suffix}"


def model_info_text(cache: ModelCache, port: Any) -> str:
    """What a model info port shows for the file chosen in ``port``: its description, or why it
    cannot be used (the error itself is reported when Apply is pressed)."""
    try:
        path = chosen_file(port, "model file")
        if path is None:
            return "choose a model file (.safetensors from DLFit, or a BONe .pth checkpoint)"
        return describe_model(cache.load(path))
    except BoneAvizoError as exc:
        return f"cannot use this model: {exc}"
