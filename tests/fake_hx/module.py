"""``PyScriptObject``: the base class of a scripted module, and ``fire()``.

As in Avizo, a module's ``__init__`` does not call the base class: the primary connection
``self.data`` exists before ``__init__`` runs (public modules set ``self.data.valid_types`` as
their first line). ``fire()`` calls ``update()`` then ``compute()``; afterwards no port is new and
no button counts as hit. A fire requested while one runs (public modules call ``self.fire()`` from
``update()``) runs once more after the current one instead of recursing.
"""
from __future__ import annotations

from .objects import HxObject
from .ports import HxConnection, HxPortDoIt

_MAX_REFIRES = 10


class PyScriptObject(HxObject):
    """Base of scripted modules: ``data``, ``ports``, ``name``, ``fire()``, ``execute()``."""

    __setattr__ = object.__setattr__  # a module is the user's own Python class: any attribute goes

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        self._init_object(cls.__name__)
        self._firing = False
        self._refire = False
        self.fire_count = 0
        self.data = HxConnection(self, "data", "Data")
        return self

    def __init__(self):  # subclasses never call it; kept so that PyScriptObject() works
        pass

    def update(self) -> None:
        """React to ``port.is_new``: show/hide ports, fill menus."""

    def compute(self) -> None:
        """Do the work, usually only ``if self.do_it.was_hit``."""

    def fire(self) -> None:
        if self._firing:
            self._refire = True
            return
        for _ in range(_MAX_REFIRES):
            self._fire_once()
            if not self._refire:
                return
        raise RuntimeError(f"{self.name}: fire() keeps requesting another fire")

    def _fire_once(self) -> None:
        ports = list(self._ports.values())
        self._firing, self._refire = True, False
        self.fire_count += 1
        for port in ports:
            port._begin_fire()
        try:
            self.update()
            self.compute()
        finally:
            for port in ports:
                port._end_fire()
            self._firing = False

    def execute(self) -> None:
        """Press the module's first Apply button and fire, as Avizo's ``execute()`` does."""
        for port in self._ports.values():
            if isinstance(port, HxPortDoIt):
                port.hit()
                break
        self.fire()
