"""Ports of the fake Avizo: the ``HxPort*`` classes a scripted module creates in ``__init__``.

Semantics follow public scripted-module code (see the package docstring):

- ports are created as ``HxPortX(module, name, label)`` (keywords ``name=`` / ``label=`` also
  work, and ``HxPortMultiMenu(module)`` may get its name and label assigned later);
- every port has ``visible``, ``enabled``, ``name``, ``label`` and ``is_new``; ``is_new`` is true
  from creation or a value change until the module's ``fire()`` completes;
- multi-value ports hold lists of small item objects (``texts``, ``toggles``, ``radio_boxes``,
  ``menus``, ``buttons``) that may be replaced wholesale or item by item;
- numeric text fields clamp to their ``clamp_range`` like Avizo's bounded fields do, and float
  fields keep single precision, as Avizo's C++ ports store ``float``.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .quirks import hand_out, type_chain, unwrap


class Strict:
    """Setting an attribute the class does not declare raises, as on Avizo's own wrappers.

    Allowed: names starting with "_", names the class defines (properties, methods, constants)
    and the plain attributes listed in ``_attributes`` anywhere in the class chain.
    """

    _attributes: tuple[str, ...] = ()

    def __setattr__(self, name: str, value) -> None:
        klass = type(self)
        if not (name.startswith("_") or hasattr(klass, name)
                or any(name in vars(k).get("_attributes", ()) for k in klass.__mro__)):
            raise AttributeError(f"{klass.__name__} has no attribute {name!r} (Avizo's Python API has no "
                                 "evidence for it)")
        object.__setattr__(self, name, value)


class _ItemList(list):
    """A list of port items that tells its port when an item is replaced or added."""

    def __init__(self, port: "HxPort", items: Iterable[Any] = ()):
        super().__init__()
        self._port = port
        for item in items:
            super().append(self._bind(item))

    def _bind(self, item):
        if hasattr(item, "_port"):
            item._port = self._port
        return item

    def __setitem__(self, index, item):
        if isinstance(index, slice):
            super().__setitem__(index, [self._bind(i) for i in item])
        else:
            super().__setitem__(index, self._bind(item))
        self._port._touch()

    def append(self, item):
        super().append(self._bind(item))
        self._port._touch()

    def extend(self, items):
        for item in items:
            self.append(item)


class _Item(Strict):
    """Base of port items: changing a value marks the owning port new."""

    _port: "HxPort | None" = None

    def _touch(self) -> None:
        if self._port is not None:
            self._port._touch()


def _item_list(attr: str, doc: str) -> property:
    """A port property holding an item list; assigning a new list marks the port new."""

    def get(self):
        return getattr(self, attr)

    def set(self, items) -> None:
        setattr(self, attr, _ItemList(self, items))
        self._touch()

    return property(get, set, doc=doc)


def _clamp(value, clamp_range):
    if clamp_range is None:
        return value
    low, high = clamp_range
    return min(max(value, low), high)


class HxPort(Strict):
    """Base port: name, label, visible, enabled, is_new, position."""

    _attributes = ("label", "visible", "enabled", "position")

    def __init__(self, owner, name: str | None = None, label: str | None = None):
        self._owner = owner
        self._name: str | None = None
        self._new = True
        self.label = label if label is not None else (name or "")
        self.visible = True
        self.enabled = True
        self.position = None
        self.name = name if name is not None else owner._unnamed_port_name()

    @property
    def name(self) -> str:
        return self._name  # type: ignore[return-value]

    @name.setter
    def name(self, value: str) -> None:
        old, self._name = self._name, str(value)
        self._owner._register_port(self, old)

    @property
    def is_new(self) -> bool:
        return self._new

    def _touch(self) -> None:
        self._new = True

    def _begin_fire(self) -> None:
        """Called by the owner when a fire starts."""

    def _end_fire(self) -> None:
        """Called by the owner when a fire ends: the port is no longer new."""
        self._new = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class HxConnection(HxPort):
    """A connection to another object: ``valid_types``, ``source()``, ``connect()``, ``disconnect()``."""

    def __init__(self, owner, name: str | None = None, label: str | None = None):
        super().__init__(owner, name, label)
        self._valid_types: list[str] = []
        self._source = None

    @property
    def valid_types(self) -> list[str]:
        return list(self._valid_types)

    @valid_types.setter
    def valid_types(self, types) -> None:
        # public modules write ('HxUniformLabelField3') -- a plain string -- as often as a list
        self._valid_types = [types] if isinstance(types, str) else [str(t) for t in types]

    def accepts(self, obj) -> bool:
        if not self._valid_types:
            return True
        return bool(set(type_chain(obj)) & set(self._valid_types))

    def source(self):
        project = getattr(unwrap(self._source), "_project", None)
        return hand_out(self._source, project.quirks) if project is not None else unwrap(self._source)

    def connect(self, obj) -> bool:
        if obj is None:
            return self.disconnect()
        if not self.accepts(obj):
            raise TypeError(f"cannot connect {type(obj).__name__} to port {self.name!r}; "
                            f"valid types: {self._valid_types}")
        self._source = unwrap(obj)
        self._touch()
        return True

    def disconnect(self) -> bool:
        self._source = None
        self._touch()
        return True


class HxPortDoIt(HxPort):
    """The Apply button. ``was_hit`` is true only during the fire that follows a press.

    ``hit()`` presses it (as the user does); so does ``was_hit = True`` (as scripts do before
    calling ``fire()``). ``press()`` presses it and fires the owner, like a click in Avizo.
    """

    def __init__(self, owner, name: str | None = None, label: str | None = None):
        super().__init__(owner, name, label)
        self._new = False
        self._pending = False
        self._active = False

    def hit(self) -> None:
        self._pending = True
        self._touch()

    def press(self) -> None:
        """A click: nothing happens while the button is disabled (``enabled = False``), as in the GUI."""
        if not self.enabled:
            return
        self.hit()
        self._owner.fire()

    @property
    def was_hit(self) -> bool:
        return self._active

    @was_hit.setter
    def was_hit(self, value: bool) -> None:
        if value:
            self.hit()
        else:
            self._pending = False

    def _begin_fire(self) -> None:
        self._active, self._pending = self._pending, False

    def _end_fire(self) -> None:
        super()._end_fire()
        self._active = False


class _Button(_Item):

    _attributes = ("label",)
    def __init__(self, label: str = ""):
        self.label = label
        self._pending = False
        self._active = False

    @property
    def hit(self) -> bool:
        return self._active

    @hit.setter
    def hit(self, value: bool) -> None:
        self._pending = bool(value)
        if value:
            self._touch()


class HxPortButtonList(HxPort):
    """A row of push buttons: ``buttons[i].label``, ``buttons[i].hit`` (true during the fire after a press)."""

    Button = _Button

    def __init__(self, owner, name: str | None = None, label: str | None = None):
        super().__init__(owner, name, label)
        self._new = False
        self._buttons = _ItemList(self, [_Button()])

    buttons = _item_list("_buttons", "the port's buttons")

    def _begin_fire(self) -> None:
        for button in self._buttons:
            button._active, button._pending = button._pending, False

    def _end_fire(self) -> None:
        super()._end_fire()
        for button in self._buttons:
            button._active = False


class HxPortFilename(HxPort):
    """A file or folder chooser: ``mode`` and ``filenames``.

    ``filenames`` is None until set; a str in the single-file and folder modes; in ``MULTI_FILE``
    mode a list when several files are chosen but a plain str when only one is (public modules
    guard against exactly that with ``isinstance(filenames, str)``). LOAD_DIRECTORY,
    SAVE_DIRECTORY and MULTI_FILE are seen in public modules; ANY_FILE and EXISTING_FILE are
    named after the C++ port's modes.
    """

    _attributes = ("mode",)

    ANY_FILE = 0
    EXISTING_FILE = 1
    MULTI_FILE = 2
    LOAD_DIRECTORY = 3
    SAVE_DIRECTORY = 4

    def __init__(self, owner, name: str | None = None, label: str | None = None):
        super().__init__(owner, name, label)
        self.mode = self.ANY_FILE
        self._filenames = None

    @property
    def filenames(self):
        names = self._filenames
        if isinstance(names, list) and len(names) == 1:
            return names[0]
        return list(names) if isinstance(names, list) else names

    @filenames.setter
    def filenames(self, value) -> None:
        if value is None or isinstance(value, str):
            self._filenames = value
        elif self.mode == self.MULTI_FILE:
            self._filenames = [str(v) for v in value]
        else:
            raise TypeError(f"port {self.name!r} takes one file name (mode {self.mode}), got {value!r}")
        self._touch()


class _Bounded:
    """A value kept inside ``clamp_range`` (when set); ``_convert`` fixes its type."""

    _attributes = ("clamp_range", "value")

    _convert = staticmethod(lambda value: int(round(float(value))))

    def _init_value(self, value, clamp_range) -> None:
        self._clamp_range = None
        self._value = self._convert(0)
        self.clamp_range = clamp_range
        self.value = value

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value) -> None:
        new = _clamp(self._convert(value), self._clamp_range)
        if new != self._value:
            self._value = new
            self._touch()

    @property
    def clamp_range(self):
        return self._clamp_range

    @clamp_range.setter
    def clamp_range(self, value) -> None:
        self._clamp_range = None if value is None else (self._convert(value[0]), self._convert(value[1]))
        self._value = _clamp(self._value, self._clamp_range)


def _f32(value) -> float:
    return float(np.float32(value))


class _IntText(_Item, _Bounded):

    _attributes = ("label",)
    def __init__(self, label: str = "", value: int = 0, clamp_range=None):
        self.label = label
        self._init_value(value, clamp_range)


class _FloatText(_IntText):
    _convert = staticmethod(_f32)


class _TextsPort(HxPort):
    _item_class: type = _Item

    def __init__(self, owner, name: str | None = None, label: str | None = None):
        super().__init__(owner, name, label)
        self._texts = _ItemList(self, [self._item_class()])

    texts = _item_list("_texts", "the port's texts")


class HxPortIntTextN(_TextsPort):
    """N bounded integer fields: ``texts[i].value``, ``.label``, ``.clamp_range`` (one field by default)."""

    IntText = _IntText
    _item_class = _IntText


class HxPortFloatTextN(_TextsPort):
    """N bounded float fields (single precision): ``texts[i].value``, ``.label``, ``.clamp_range``."""

    FloatText = _FloatText
    _item_class = _FloatText


class _Toggle(_Item):

    _attributes = ("label",)
    UNCHECKED = 0
    CHECKED = 1

    def __init__(self, label: str = "", checked=0):
        self.label = label
        self._checked = self.CHECKED if checked else self.UNCHECKED

    @property
    def checked(self) -> int:
        return self._checked

    @checked.setter
    def checked(self, value) -> None:
        new = self.CHECKED if value else self.UNCHECKED
        if new != self._checked:
            self._checked = new
            self._touch()


class HxPortToggleList(HxPort):
    """Check boxes: ``toggles[i].checked`` (Toggle.CHECKED / Toggle.UNCHECKED), ``toggles[i].label``."""

    Toggle = _Toggle

    def __init__(self, owner, name: str | None = None, label: str | None = None):
        super().__init__(owner, name, label)
        self._toggles = _ItemList(self, [_Toggle()])

    toggles = _item_list("_toggles", "the port's toggles")


def _check_index(index, count: int, what: str) -> int:
    index = int(index)
    if count and not 0 <= index < count:
        raise IndexError(f"{what} {index} out of range 0..{count - 1}")
    return index


class _RadioBox(_Item):

    _attributes = ("label",)
    def __init__(self, label: str = ""):
        self.label = label


class HxPortRadioBox(HxPort):
    """Exclusive choice: ``radio_boxes[i].label`` and ``selected`` (an index)."""

    RadioBox = _RadioBox

    def __init__(self, owner, name: str | None = None, label: str | None = None):
        super().__init__(owner, name, label)
        self._radio_boxes = _ItemList(self, [])
        self._selected = 0

    radio_boxes = _item_list("_radio_boxes", "the port's radio_boxes")

    @property
    def selected(self) -> int:
        return self._selected

    @selected.setter
    def selected(self, index) -> None:
        index = _check_index(index, len(self._radio_boxes), f"port {self.name!r}: radio box")
        if index != self._selected:
            self._selected = index
            self._touch()


class _Menu(_Item):

    _attributes = ("selected", "options")
    def __init__(self, options=(), selected: int = 0):
        self._options = [str(o) for o in options]
        self._selected = 0
        self.selected = selected

    @property
    def options(self) -> list[str]:
        return self._options

    @options.setter
    def options(self, values) -> None:
        self._options = [str(o) for o in values]
        self._selected = min(self._selected, max(len(self._options) - 1, 0))
        self._touch()

    @property
    def selected(self) -> int:
        return self._selected

    @selected.setter
    def selected(self, index) -> None:
        index = _check_index(index, len(self._options), "menu option")
        if index != self._selected:
            self._selected = index
            self._touch()


class HxPortMultiMenu(HxPort):
    """Drop-down menus: ``menus[0].options`` (str list) and ``menus[0].selected`` (an index).

    One empty menu exists from the start; public modules replace the list with
    ``[HxPortButtonMenu.Menu(options=[...])]``.
    """

    def __init__(self, owner, name: str | None = None, label: str | None = None):
        super().__init__(owner, name, label)
        self._menus = _ItemList(self, [_Menu()])

    menus = _item_list("_menus", "the port's menus")


class HxPortButtonMenu(HxPortMultiMenu):
    """Buttons plus menus; public modules use its ``Menu`` item class for HxPortMultiMenu too."""

    Menu = _Menu
    Button = _Button

    def __init__(self, owner, name: str | None = None, label: str | None = None):
        super().__init__(owner, name, label)
        self._buttons = _ItemList(self, [])

    buttons = _item_list("_buttons", "the port's buttons")


class _SliderPort(HxPort, _Bounded):
    def __init__(self, owner, name: str | None = None, label: str | None = None):
        super().__init__(owner, name, label)
        self._init_value(0, None)


class HxPortIntSlider(_SliderPort):
    """An integer slider: ``value`` and ``clamp_range`` on the port itself."""


class HxPortFloatSlider(_SliderPort):
    """A float slider: ``value`` and ``clamp_range`` on the port itself (single precision)."""

    _convert = staticmethod(_f32)


class _TextPort(HxPort):
    def __init__(self, owner, name: str | None = None, label: str | None = None):
        super().__init__(owner, name, label)
        self._text = ""

    @property
    def text(self) -> str:
        return self._text

    @text.setter
    def text(self, value) -> None:
        value = str(value)
        if value != self._text:
            self._text = value
            self._touch()


class HxPortText(_TextPort):
    """A one-line text field: ``text``."""


class HxPortInfo(_TextPort):
    """A read-only line of text the module writes: ``text``."""


PORT_CLASSES = (HxConnection, HxPortDoIt, HxPortButtonList, HxPortFilename, HxPortIntTextN,
                HxPortFloatTextN, HxPortToggleList, HxPortRadioBox, HxPortMultiMenu, HxPortButtonMenu,
                HxPortIntSlider, HxPortFloatSlider, HxPortText, HxPortInfo)
