"""What this fake knows about real Avizo, what it assumes, and the modes that play the unknowns.

Every behaviour of the fake is in :data:`BEHAVIOURS`, marked ``evidenced`` (seen in public code
written for real Avizo/Amira, source named) or ``assumed`` (no public evidence; the adapter must be
safe either way, and ``python -m bone_avizo.avizo doctor`` reports what a user's Avizo does).

Modes (``HxWorld(mode=...)``), one per unknown, and ``"worst"`` with all of them:

- ``"best"``: the friendliest reading: the same Python object for a project item on every access,
  ``get_array()`` returns the field's own memory, Python types mirror Avizo's class hierarchy;
- ``"fresh_wrappers"``: every access (``hx_project.objects``, ``get``, ``create``, a connection's
  ``source()``) hands out a new Python wrapper of the same item: ``is`` and ``id()`` never match;
- ``"flat_types"``: every item's Python type is one generic class (``PyHxObject``) with no
  ``HxUniformLabelField3`` or ``HxUniformScalarField3`` in its ``__mro__``;
- ``"copying_arrays"``: ``get_array()`` returns a fresh copy each call (still x fastest), and
  every call is counted in ``hx_project.array_reads[name]``.

Strictness holds in every mode: setting an attribute that the real API has no evidence for on a
port, port item or data object raises AttributeError (``port.tooltip = ...``,
``texts[0].vaule = ...``), as reading one does. Scripted modules (``PyScriptObject``) stay open.
"""
from __future__ import annotations

JANELIA = "janelia-cellmap/amira_python_extensions (ZarrRead/ZarrWrite/N5Read .pyscro)"

BEHAVIOURS: dict[str, tuple[str, str]] = {
    "pyscro globals PyScriptObject, HxPort*, hx_project, hx_message, hx_progress": ("evidenced", JANELIA),
    "self.data.valid_types, self.data.source()": ("evidenced", JANELIA),
    "hx_project.create('HxUniformScalarField3')": ("evidenced", JANELIA),
    "hx_project.get(name) (a module connects to hx_project.get(self.name))": ("evidenced", JANELIA),
    "field.get_array() in (x, y, z); .T gives (z, y, x)": ("evidenced", JANELIA),
    "field.set_array(a) with a in (x, y, z); uint32/uint64 cast to uint16 first": ("evidenced", JANELIA),
    "field.bounding_box = (starts, stops), first to last voxel centre": ("evidenced", JANELIA),
    "field.parameters[key] = value; field.ports.master.connect(obj)": ("evidenced", JANELIA),
    "HxPortIntTextN.texts = [HxPortIntTextN.IntText(label=, value=)], texts[i].clamp_range": ("evidenced", JANELIA),
    "HxPortFilename.mode = LOAD_DIRECTORY, .filenames, port.is_new, do_it.was_hit": ("evidenced", JANELIA),
    "hx_message.error(message=...)": ("evidenced", JANELIA),
    "HxPortInfo.text": ("evidenced", JANELIA),
    "hx_progress.progress(n, text) context, increase_progress_step, interrupted": (
        "assumed", "public scripted modules use it, but no official reference is public"),
    "the same Python object for a project item on every access": (
        "assumed", "unknown: mode 'fresh_wrappers' plays the opposite"),
    "get_array() returns a view of the field's memory": ("assumed", "unknown: mode 'copying_arrays' copies"),
    "Python types mirror the C++ class hierarchy (HxUniformLabelField3 in __mro__)": (
        "assumed", "unknown: mode 'flat_types' has none"),
    "label field parameters['Materials'] bundle, one entry per label, in order": (
        "evidenced", "AmiraMesh files written by Amira (shared/data/amira): the bundle is what Avizo saves"),
    "writing parameters['Materials'] names the materials": ("assumed", "guarded: a failure is logged"),
    "HxPortFilename.ANY_FILE / EXISTING_FILE / MULTI_FILE modes": ("assumed", "LOAD_DIRECTORY is evidenced"),
    "HxPortToggleList.toggles[i].checked, assigning toggle lists": ("assumed", "no public code sets them"),
    "HxPortMultiMenu.menus[0].options / .selected": ("assumed", "no public code sets them"),
    "HxSpreadSheet tables made from Python (add_table, add_column, setarray)": (
        "assumed", "only reading spreadsheets is seen in public code; guarded"),
    "hx_app.version, hx_paths.install_dir": ("assumed", "names seen in Avizo's Python console help"),
    "port.tooltip and other unlisted attributes": ("assumed", "absent: the strict fake refuses them"),
}

MODES: dict[str, frozenset[str]] = {
    "best": frozenset(),
    "fresh_wrappers": frozenset({"fresh_wrappers"}),
    "flat_types": frozenset({"flat_types"}),
    "copying_arrays": frozenset({"copying_arrays"}),
}
MODES["worst"] = frozenset().union(*MODES.values())



class PyHxObject:
    """A generic wrapper of a project item (mode ``flat_types``): attribute reads and writes go to
    the item, but its type shows none of the item's class hierarchy."""

    __slots__ = ("_fake_target",)

    def __init__(self, target):
        object.__setattr__(self, "_fake_target", target)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "_fake_target"), name)

    def __setattr__(self, name, value):
        setattr(object.__getattribute__(self, "_fake_target"), name, value)

    def __repr__(self) -> str:
        return f"<PyHxObject {unwrap(self).name!r}>"


def unwrap(obj):
    """The item behind a wrapper (the fake's own bookkeeping)."""
    return object.__getattribute__(obj, "_fake_target") if isinstance(obj, PyHxObject) else obj


def type_chain(obj) -> list[str]:
    """Avizo's class chain of ``obj`` (what Avizo itself checks), whatever Python type it shows."""
    return [k.__name__ for k in type(unwrap(obj)).__mro__]


def same_item(a, b) -> bool:
    """True when ``a`` and ``b`` are wrappers of the same project item."""
    a, b = unwrap(a), unwrap(b)
    return a is b or (a is not None and b is not None and vars(a) is vars(b))


def hand_out(obj, quirks: frozenset[str]):
    """The Python object a project access returns for ``obj`` under ``quirks``."""
    obj = unwrap(obj)
    if obj is None or not quirks & {"fresh_wrappers", "flat_types"}:
        return obj
    if "flat_types" in quirks:
        return PyHxObject(obj)
    wrapper = object.__new__(type(obj))
    object.__setattr__(wrapper, "__dict__", vars(obj))  # the same state, a new identity
    return wrapper
