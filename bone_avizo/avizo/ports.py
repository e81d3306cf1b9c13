"""Parameter spec -> Avizo ports, and port values -> the task's config dataclass.

One port per :class:`~bone_avizo.config.Param`, named after the parameter, so the ports, the CLI
flags and JSON configs share names and defaults:

============================  =========================================================
Param                         port
============================  =========================================================
int                           HxPortIntTextN, one field, ``clamp_range`` = min..max
                              (widened to 0 when 0 is a sentinel, ``zero_means``)
float                         HxPortFloatTextN, one field, ``clamp_range`` = min..max
bool                          HxPortToggleList with one toggle
choices, <= 3 of them         HxPortRadioBox, one radio box per choice
choices, more                 HxPortMultiMenu, one menu listing the choices
multiple with choices         HxPortToggleList, one toggle per choice (e.g. planes)
str or multiple free text     HxPortText (several values comma-separated)
============================  =========================================================

Avizo clamps typed values to ``clamp_range``; everything else (multiples of 32, odd sizes, at
least one plane...) is checked when the config is built, and a bad value then reaches the user as
one :class:`~bone_avizo.errors.ConfigError` line. Avizo float fields are single precision, so
float values are read back rounded to 7 significant digits (0.1 stays 0.1). No tooltip is set:
no Python port API for tooltips was found in public scripted-module code; ``param.help`` is in
docs/avizo.md and the CLI help instead.
"""
from __future__ import annotations

from bone_avizo._compat import StrEnum
from typing import Any, Mapping

from bone_avizo.avizo.hx import hx_global
from bone_avizo.config import ConfigBase, Param
from bone_avizo.errors import ConfigError

RADIO_MAX_CHOICES = 3
_INT_LIMIT = 2**31 - 1
_FLOAT_LIMIT = 1e30
_ACRONYMS = {"gb": "GB", "tta": "TTA", "cpu": "CPU", "gpu": "GPU", "cuda": "CUDA", "iou": "IoU", "id": "ID",
              "lr": "LR", "amp": "AMP", "tensorboard": "TensorBoard"}


class PortKind(StrEnum):
    INT = "int"
    FLOAT = "float"
    TOGGLE = "toggle"
    TOGGLES = "toggles"
    RADIO = "radio"
    MENU = "menu"
    TEXT = "text"


PORT_CLASS = {PortKind.INT: "HxPortIntTextN", PortKind.FLOAT: "HxPortFloatTextN", PortKind.TOGGLE: "HxPortToggleList",
              PortKind.TOGGLES: "HxPortToggleList", PortKind.RADIO: "HxPortRadioBox",
              PortKind.MENU: "HxPortMultiMenu", PortKind.TEXT: "HxPortText"}


def port_kind(param: Param) -> PortKind:
    """Which port represents ``param`` (see the module docstring)."""
    if param.multiple:
        return PortKind.TOGGLES if param.choices else PortKind.TEXT
    if param.choices:
        return PortKind.RADIO if len(param.choices) <= RADIO_MAX_CHOICES else PortKind.MENU
    if param.type is bool:
        return PortKind.TOGGLE
    if param.type is int:
        return PortKind.INT
    if param.type is float:
        return PortKind.FLOAT
    return PortKind.TEXT


def _port_label(name: str) -> str:
    """``memory_limit_gb`` -> ``Memory limit GB``."""
    words = [_ACRONYMS.get(w, w) for w in name.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:]] + words[1:])


def spec_to_ports(module: Any, spec: tuple[Param, ...], *, hx: Any = None) -> dict[str, Any]:
    """Create one port per parameter on ``module`` (in spec order), set to its default.

    Returns {parameter name: port}. ``hx``: Avizo's globals (``globals()`` of the .pyscro) when
    they cannot be found from the module's class (see :func:`bone_avizo.avizo.hx.hx_global`).
    """
    ports = {}
    for param in spec:
        kind = port_kind(param)
        port = hx_global(module, PORT_CLASS[kind], hx)(module, param.name, _port_label(param.name))
        _build(port, param, kind, module, hx)
        _write_port(port, param, param.default)
        ports[param.name] = port
    return ports


def _clamp_range(param: Param, limit: float):
    if param.min is None and param.max is None:
        return None
    low = -limit if param.min is None else param.min
    high = limit if param.max is None else param.max
    if param.zero_means is not None:
        low, high = min(low, 0), max(high, 0)
    return (int(low), int(high)) if param.type is int else (float(low), float(high))


def _build(port: Any, param: Param, kind: PortKind, module: Any, hx: Any) -> None:
    if kind in (PortKind.INT, PortKind.FLOAT):
        item = type(port).IntText if kind is PortKind.INT else type(port).FloatText
        clamp = _clamp_range(param, _INT_LIMIT if kind is PortKind.INT else _FLOAT_LIMIT)
        port.texts = [item(label="") if clamp is None else item(label="", clamp_range=clamp)]
    elif kind is PortKind.TOGGLE:
        port.toggles = [type(port).Toggle(label="enabled")]
    elif kind is PortKind.TOGGLES:
        port.toggles = [type(port).Toggle(label=str(c)) for c in param.choices]
    elif kind is PortKind.RADIO:
        port.radio_boxes = [type(port).RadioBox(label=str(c)) for c in param.choices]
    elif kind is PortKind.MENU:
        menu = hx_global(module, "HxPortButtonMenu", hx).Menu
        port.menus = [menu(options=[str(c) for c in param.choices])]


def _checked_value(toggle: Any, on: bool) -> Any:
    klass = type(toggle)
    return getattr(klass, "CHECKED", True) if on else getattr(klass, "UNCHECKED", False)


def _is_checked(toggle: Any) -> bool:
    checked = getattr(type(toggle), "CHECKED", None)
    return toggle.checked == checked if checked is not None else bool(toggle.checked)


def toggle_checked(toggle: Any) -> bool:
    """True when a toggle of an HxPortToggleList is ticked (``Toggle.CHECKED`` or a truthy value)."""
    return _is_checked(toggle)


def _write_port(port: Any, param: Param, value: Any) -> None:
    """Show ``value`` (validated by ``param``) in ``port``."""
    value = param.convert(value)
    kind = port_kind(param)
    if kind in (PortKind.INT, PortKind.FLOAT):
        port.texts[0].value = value
    elif kind is PortKind.TOGGLE:
        port.toggles[0].checked = _checked_value(port.toggles[0], value)
    elif kind is PortKind.TOGGLES:
        for toggle, choice in zip(port.toggles, param.choices):
            toggle.checked = _checked_value(toggle, choice in value)
    elif kind is PortKind.RADIO:
        port.selected = param.choices.index(str(value))
    elif kind is PortKind.MENU:
        port.menus[0].selected = param.choices.index(str(value))
    else:
        port.text = ", ".join(map(str, value)) if param.multiple else str(value)


def _read_port(port: Any, param: Param) -> Any:
    """The raw value ``port`` shows for ``param`` (validation happens when the config is built)."""
    kind = port_kind(param)
    if kind is PortKind.INT:
        return int(round(float(port.texts[0].value)))
    if kind is PortKind.FLOAT:
        return float(f"{float(port.texts[0].value):.7g}")
    if kind is PortKind.TOGGLE:
        return _is_checked(port.toggles[0])
    if kind is PortKind.TOGGLES:
        return tuple(c for c, t in zip(param.choices, port.toggles) if _is_checked(t))
    if kind in (PortKind.RADIO, PortKind.MENU):
        index = port.selected if kind is PortKind.RADIO else port.menus[0].selected
        if not 0 <= index < len(param.choices):
            raise ConfigError(f"{param.name}: selection {index} is not one of {', '.join(param.choices)}")
        return param.choices[index]
    text = str(port.text)
    return tuple(v.strip() for v in text.split(",") if v.strip()) if param.multiple else text


def _find_port(ports: Any, name: str) -> Any:
    """Port ``name`` from a {name: port} mapping, a module (its ``.ports``) or a ports object."""
    if isinstance(ports, Mapping):
        return ports.get(name)
    if hasattr(ports, "ports"):
        ports = ports.ports
    return getattr(ports, name, None)


def ports_to_config(config_cls: type[ConfigBase], ports: Any):
    """The ``config_cls`` instance the ports show; parameters without a port keep their default.

    Raises :class:`~bone_avizo.errors.ConfigError` (one line) for an invalid combination.
    """
    values = {}
    for param in config_cls.SPEC:
        port = _find_port(ports, param.name)
        if port is not None:
            values[param.name] = _read_port(port, param)
    return config_cls.from_dict(values)


def config_to_ports(config: ConfigBase, ports: Any) -> None:
    """Show every value of ``config`` in its port (e.g. after loading a JSON config file)."""
    for param in config.SPEC:
        port = _find_port(ports, param.name)
        if port is not None:
            _write_port(port, param, getattr(config, param.name))
