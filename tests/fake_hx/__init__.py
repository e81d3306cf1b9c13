"""A fake of Avizo's Python world, faithful enough that real ``.pyscro`` files run unmodified.

Sources of truth: public scripted-module code (``.pyscro``/``.rc`` pairs for Avizo and Amira:
data loaders and writers, segmentation helpers, batch scripts driving built-in modules) and the
public C++ headers of the ``hxcore`` ports. What was observed there and is modelled here:

- a ``.pyscro`` is plain Python executed with the Avizo names injected as globals (no imports):
  ``PyScriptObject``, ``HxConnection``, ``HxPort*``, ``hx_project``, ``hx_message``,
  ``hx_progress``, ``hx_object_factory``, ``hx_paths``, ``hx_app``; it defines one
  ``PyScriptObject`` subclass whose ``__init__`` creates ports without calling the base class;
- ``self.data`` is the primary connection (``valid_types`` may be a list or a bare string),
  ``source()``, ``connect(obj)`` (``connect(None)`` disconnects); ``self.ports.<name>``;
- ``update()`` reacts to ``port.is_new``; ``compute()`` returns unless ``self.do_it.was_hit``;
  scripts press a button with ``port.was_hit = True`` (or ``buttons[i].hit = True``) and then
  ``fire()``;
- ports: see :mod:`fake_hx.ports` (texts/toggles/radio_boxes/menus item lists, per-field
  ``clamp_range``, ``HxPortButtonMenu.Menu(options=[...])``, ``Toggle.CHECKED``,
  ``HxPortFilename`` modes and the str-or-list ``filenames``);
- fields: ``hx_project.create('HxUniformScalarField3' | 'HxUniformLabelField3')``, then
  ``bounding_box = (mins, maxs)`` (first to last voxel centre, x, y, z) and ``set_array(a)`` with
  ``a`` in (x, y, z) order, uint32/uint64 cast to uint16 and int64 to int32 beforehand;
  ``get_array().T`` gives (z, y, x); ``field.parameters['Materials']`` of a label field;
  ``field.ports.master``;
- ``hx_project.objects`` is a dict by name; ``hx_object_factory.create`` + ``hx_project.add``;
- ``with hx_progress.progress(n, text) as p: p.increase_progress_step(); p.interrupted``
  (also ``p.current_step``, ``p.value``, ``hx_progress.set_text``);
- ``hx_message.error/warning/info(message)``;
- ``hx_project.create('HxSpreadSheet')``, read as ``all_interfaces.HxSpreadSheetInterface.tables[i]
  .columns[j].asarray()`` (the calls that fill one are assumed, see :class:`fake_hx.HxSpreadSheet`).

Test switches beyond Avizo: ``HxPortDoIt.hit()``/``press()``, ``hx_message.records``,
``hx_progress.interrupt_after``, ``PyScriptObject.fire_count``. :func:`load_pyscro` plays the part
of Avizo creating a module from its ``.rc`` entry.
"""
from __future__ import annotations

from pathlib import Path

from .app import HxApp, HxMessage, HxObjectFactory, HxPaths, HxProgress, HxProject, ProgressBar
from .module import PyScriptObject
from .quirks import BEHAVIOURS, MODES, PyHxObject, same_item, type_chain, unwrap
from .objects import (HxObject, HxParamBundle, HxSpreadSheet, HxSpreadSheetInterface, HxUniformLabelField3,
                      HxUniformScalarField3, PortsView)
from .ports import (PORT_CLASSES, HxConnection, HxPort, HxPortButtonList, HxPortButtonMenu, HxPortDoIt,
                    HxPortFilename, HxPortFloatSlider, HxPortFloatTextN, HxPortInfo, HxPortIntSlider,
                    HxPortIntTextN, HxPortMultiMenu, HxPortRadioBox, HxPortText, HxPortToggleList)


class HxWorld:
    """One fake Avizo session: the injected singletons plus :meth:`globals` for a ``.pyscro``."""

    def __init__(self, install_dir: str | Path = "/opt/Avizo", *, mode: str = "best"):
        self.mode = mode
        self.hx_object_factory = HxObjectFactory()
        self.hx_project = HxProject(self.hx_object_factory, MODES[mode])
        self.hx_project.world = self
        self.hx_message = HxMessage()
        self.hx_progress = HxProgress()
        self.hx_paths = HxPaths(install_dir)
        self.hx_app = HxApp()

    def globals(self) -> dict:
        """The names Avizo injects into a ``.pyscro`` (a fresh dict each call)."""
        names = {cls.__name__: cls for cls in PORT_CLASSES}
        names.update(PyScriptObject=PyScriptObject, hx_project=self.hx_project, hx_message=self.hx_message,
                     hx_progress=self.hx_progress, hx_object_factory=self.hx_object_factory,
                     hx_paths=self.hx_paths, hx_app=self.hx_app)
        return names

    def create_field(self, array_xyz, *, label: bool = False, bounding_box=None, name: str | None = None):
        """Test helper: a field in the project holding ``array_xyz`` (x, y, z)."""
        field = self.hx_project.create("HxUniformLabelField3" if label else "HxUniformScalarField3")
        if bounding_box is not None:
            field.bounding_box = bounding_box
        field.set_array(array_xyz)
        if name is not None:
            field.name = name
        return field


def load_pyscro(path: str | Path, project: HxProject, *, connect=None, fire: bool = True):
    """Create the module a ``.pyscro`` defines, the way Avizo does, and return it.

    The source is executed with the injected globals of ``project``'s world; its one
    ``PyScriptObject`` subclass (the one named like the file when there are several) is registered
    with the object factory, instantiated and added to the project. ``connect`` is connected to
    the primary ``data`` port (as when the user creates the module from a field's context menu);
    then the module is fired once, as Avizo fires a new module.
    """
    path = Path(path)
    namespace = project.world.globals()
    namespace.update(__name__=f"pyscro_{path.stem}", __file__=str(path), __builtins__=__builtins__)
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    klass = _module_class(namespace, path)
    project.world.hx_object_factory.register(klass.__name__, klass)
    module = klass()
    project.add(module)
    module = project.get(module.name)  # what Avizo hands out for it
    if connect is not None:
        module.data.connect(connect)
    if fire:
        module.fire()
    return module


def _module_class(namespace: dict, path: Path) -> type:
    classes = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, PyScriptObject)
               and v.__module__ == namespace["__name__"]]
    if len(classes) > 1:
        classes = [c for c in classes if c.__name__ == path.stem] or classes
    if len(classes) != 1:
        raise ValueError(f"{path} must define exactly one PyScriptObject subclass, found "
                         f"{[c.__name__ for c in classes]}")
    return classes[0]


__all__ = ["HxWorld", "load_pyscro", "MODES", "BEHAVIOURS", "PyHxObject", "same_item", "type_chain", "unwrap", "PyScriptObject", "HxObject", "HxParamBundle", "HxUniformScalarField3",
           "HxUniformLabelField3", "HxSpreadSheet", "HxSpreadSheetInterface", "PortsView", "HxPort", "HxConnection",
           "HxPortDoIt", "HxPortButtonList",
           "HxPortFilename", "HxPortIntTextN", "HxPortFloatTextN", "HxPortToggleList", "HxPortRadioBox",
           "HxPortMultiMenu", "HxPortButtonMenu", "HxPortIntSlider", "HxPortFloatSlider", "HxPortText",
           "HxPortInfo", "HxProject", "HxMessage", "HxProgress", "ProgressBar", "HxObjectFactory", "HxPaths",
           "HxApp", "PORT_CLASSES"]
