"""The injected singletons of the fake Avizo: ``hx_project``, ``hx_message``, ``hx_progress``,
``hx_object_factory``, ``hx_paths``, ``hx_app``."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from .objects import HxObject, HxSpreadSheet, HxUniformLabelField3, HxUniformScalarField3
from .quirks import hand_out, same_item, unwrap


class HxObjectFactory:
    """``create(type_name)`` makes an object that is not yet in the project (``hx_project.add`` it)."""

    def __init__(self):
        self._types: dict[str, type] = {"HxUniformScalarField3": HxUniformScalarField3,
                                        "HxUniformLabelField3": HxUniformLabelField3,
                                        "HxSpreadSheet": HxSpreadSheet}

    def register(self, type_name: str, klass: type) -> None:
        self._types[type_name] = klass

    def create(self, type_name: str):
        try:
            klass = self._types[type_name]
        except KeyError:
            raise ValueError(f"unknown object type {type_name!r}; known: {sorted(self._types)}") from None
        return klass()


class HxProject:
    """The project: ``create``, ``add``, ``get`` (KeyError when absent), ``remove``, ``objects``.

    Names are unique: adding or renaming to a taken name appends a number ("name2"). ``quirks``
    (see :mod:`fake_hx.quirks`) decide what Python object each access hands out;
    ``array_reads[name]`` counts ``get_array()`` calls per field.
    """

    def __init__(self, factory: HxObjectFactory, quirks: frozenset[str] = frozenset()):
        self._factory = factory
        self._objects: dict[str, HxObject] = {}
        self.quirks = frozenset(quirks)
        self.array_reads: Counter = Counter()

    def hand_out(self, obj):
        return hand_out(obj, self.quirks)

    @property
    def objects(self) -> dict[str, HxObject]:
        return {name: self.hand_out(obj) for name, obj in self._objects.items()}

    def create(self, type_name: str):
        obj = self._factory.create(type_name)
        self.add(obj)
        return self.hand_out(obj)

    def add(self, obj: HxObject) -> None:
        obj = unwrap(obj)
        if obj._project is self:
            return
        obj._name = self._unique(obj.name)
        obj._project = self
        self._objects[obj.name] = obj

    def get(self, name: str):
        return self.hand_out(self._objects[name])

    def remove(self, obj) -> None:
        if isinstance(obj, str):
            obj = self._objects[obj]
        obj = unwrap(obj)
        stored = self._objects.get(obj.name)
        if not same_item(stored, obj):
            raise ValueError(f"{obj!r} is not in the project")
        del self._objects[obj.name]
        stored._project = None

    def _unique(self, name: str) -> str:
        candidate, number = name, 1
        while candidate in self._objects:
            number += 1
            candidate = f"{name}{number}"
        return candidate

    def _rename(self, obj: HxObject, name: str) -> str:
        if obj.name == name:
            return name
        stored = self._objects.pop(obj.name)
        name = self._unique(name)
        self._objects[name] = stored
        return name


class HxMessage:
    """``error``/``warning``/``info`` are recorded in ``records`` as (level, text)."""

    def __init__(self):
        self.records: list[tuple[str, str]] = []

    def error(self, message) -> None:
        self.records.append(("error", str(message)))

    def warning(self, message) -> None:
        self.records.append(("warning", str(message)))

    def info(self, message) -> None:
        self.records.append(("info", str(message)))

    def of(self, level: str) -> list[str]:
        return [text for lvl, text in self.records if lvl == level]

    @property
    def errors(self) -> list[str]:
        return self.of("error")

    @property
    def warnings(self) -> list[str]:
        return self.of("warning")


class ProgressBar:
    """What ``hx_progress.progress(n, text)`` yields: ``increase_progress_step()``,
    ``current_step``, ``value`` (fraction done) and ``interrupted``."""

    def __init__(self, owner: "HxProgress", total: int, text: str):
        self._owner = owner
        self.total = max(int(total), 0)
        self.text = text
        self.current_step = 0
        self.closed = False

    def __enter__(self) -> "ProgressBar":
        self._owner.bars.append(self)
        return self

    def __exit__(self, *exc) -> bool:
        self.closed = True
        return False

    def increase_progress_step(self) -> None:
        self.current_step = min(self.current_step + 1, self.total)
        self._owner.steps += 1

    @property
    def value(self) -> float:
        return self.current_step / self.total if self.total else 1.0

    @property
    def interrupted(self) -> bool:
        return self._owner.is_interrupted()


class HxProgress:
    """``progress(n, text)`` is a context manager for a progress bar with a Stop button.

    Test switches: ``interrupt_after = k`` makes every bar report ``interrupted`` once k steps
    have been made in total (k = 0: at once); ``bars`` lists the bars opened and ``steps`` counts
    all steps; ``texts`` records ``set_text`` calls.
    """

    def __init__(self):
        self.interrupt_after: int | None = None
        self.bars: list[ProgressBar] = []
        self.steps = 0
        self.texts: list[str] = []

    def progress(self, total: int, text: str = "") -> ProgressBar:
        return ProgressBar(self, total, text)

    def set_text(self, text: str) -> None:
        self.texts.append(str(text))

    def is_interrupted(self) -> bool:
        return self.interrupt_after is not None and self.steps >= self.interrupt_after


class HxPaths:
    """``install_dir``: the Avizo installation folder (other attributes of the real object are not modelled)."""

    def __init__(self, install_dir: str | Path = "/opt/Avizo"):
        self.install_dir = str(install_dir)


class HxApp:
    """The application object; only ``version`` is modelled."""

    def __init__(self, version: str = "fake-2024.1"):
        self.version = version
