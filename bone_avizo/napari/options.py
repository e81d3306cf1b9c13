"""Parameter spec -> magicgui widgets, and widget values -> the task's config dataclass.

One widget per :class:`~bone_avizo.config.Param`, named after it, with the CLI flag's help text,
range and default as its tooltip, so the dock widgets, the CLI and JSON configs share names and
defaults (:func:`_param_widget` is the one place that maps a Param to a widget):

==============================  =====================================================
Param                           widget
==============================  =====================================================
bool                            CheckBox
choices                         ComboBox
multiple with choices           Select (several may be chosen, e.g. planes)
int                             SpinBox, min..max (from 0 when 0 is a sentinel), step = multiple_of
float, range within 0.01 steps  FloatSpinBox, min..max, 3 decimals
float spanning decades          LineEdit (e.g. lr 1e-9..10: a spin box cannot hold 1e-6)
str, multiple free values       LineEdit (several values comma-separated)
==============================  =====================================================

Values are validated when the config is built (:meth:`OptionsPanel.config`): a bad one reaches the
user as the same one-line ConfigError the CLI prints.
"""
from __future__ import annotations

from typing import Any, Iterable

from bone_avizo.config import Param, spec_of

_INT_LIMIT = 2**31 - 1
_SPIN_DECIMALS = 3
_ROW_PIXELS = 20  # height of a row of a list widget


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    return str(value)


def param_tooltip(param: Param) -> str:
    """The CLI flag and its help: ``--tile-size: tile edge in pixels ... [32..4096, ...; default: 0]``."""
    return f"{param.flag}: {param.help} [{param.describe_range()}; default: {_show(param.default)}]"


def _param_label(param: Param) -> str:
    return param.name.replace("_", " ")


def _float_spins(param: Param) -> bool:
    """True when a spin box of 3 decimals holds every value of the range (fractions, sizes in GB)."""
    low = param.min if param.min is not None else -1e30
    return param.max is not None and (param.max <= 1.0 or low >= 0.01) and round(param.default, 3) == param.default


def _param_widget(param: Param):
    """The magicgui widget for ``param``, set to its default (see the module docstring)."""
    from magicgui import widgets

    common = dict(name=param.name, label=_param_label(param), tooltip=param_tooltip(param))
    if param.multiple and param.choices:
        select = widgets.Select(choices=list(param.choices), value=list(param.default), **common)
        select.native.setMaximumHeight(_ROW_PIXELS * len(param.choices) + 6)  # all rows, no empty space
        return select
    if param.choices:
        return widgets.ComboBox(choices=list(param.choices), value=str(param.default), **common)
    if param.type is bool:
        return widgets.CheckBox(value=bool(param.default), **common)
    if param.type is int and not param.multiple:
        low = -_INT_LIMIT if param.min is None else int(param.min)
        low = min(low, 0) if param.zero_means is not None else low
        high = _INT_LIMIT if param.max is None else int(param.max)
        return widgets.SpinBox(value=param.default, min=low, max=high, step=param.multiple_of or 1, **common)
    if param.type is float and _float_spins(param):
        spin = widgets.FloatSpinBox(value=param.default, min=param.min if param.min is not None else -1e30,
                                    max=param.max, step=10.0 ** -_SPIN_DECIMALS, **common)
        spin.native.setDecimals(_SPIN_DECIMALS)
        return spin
    return widgets.LineEdit(value=_show(param.default) if param.multiple else str(param.default), **common)


def _read_widget(widget, param: Param) -> Any:
    """The raw value ``widget`` shows for ``param`` (validated when the config is built)."""
    value = widget.value
    if param.multiple and isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip() and v.strip() != "none")
    if param.multiple:
        return tuple(value)
    return value


def _write_widget(widget, param: Param, value: Any) -> None:
    """Show ``value`` (validated by ``param``) in ``widget``."""
    value = param.convert(value)
    if param.multiple and param.choices:
        widget.value = list(value)
    elif param.multiple:
        widget.value = ", ".join(map(str, value))
    elif param.choices:
        widget.value = str(value)
    elif widget.widget_type == "LineEdit":
        widget.value = str(value)
    else:
        widget.value = value


class OptionsPanel:
    """The option widgets of one task, grouped as in the spec (``groups``: {group: [widgets]})."""

    def __init__(self, config_cls: type, *, without: Iterable[str] = ()):
        self.config_cls = config_cls
        skip = set(without)
        self.params = {p.name: p for p in spec_of(config_cls) if p.name not in skip}
        self.widgets = {name: _param_widget(p) for name, p in self.params.items()}
        self.groups: dict[str, list] = {}
        for name, param in self.params.items():
            self.groups.setdefault(param.group, []).append(self.widgets[name])

    def values(self) -> dict[str, Any]:
        return {name: _read_widget(self.widgets[name], p) for name, p in self.params.items()}

    def config(self):
        """The config the widgets show; options without a widget keep their default. Raises ConfigError."""
        return self.config_cls.from_dict(self.values())

    def show(self, config) -> None:
        """Show every option of ``config`` that has a widget."""
        for name, param in self.params.items():
            _write_widget(self.widgets[name], param, getattr(config, name))

    def qt_widget(self, *, expanded: Iterable[str] = ()):
        """The panel as one Qt widget: a collapsible section per group (``expanded`` ones open)."""
        from magicgui.widgets import Container
        from qtpy.QtWidgets import QVBoxLayout, QWidget
        from superqt import QCollapsible

        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 0, 0, 0)
        opened = set(expanded)
        for group, members in self.groups.items():
            section = QCollapsible(f"{group} options")
            section.addWidget(Container(widgets=members, labels=True).native)
            if group in opened:
                section.expand(animate=False)
            layout.addWidget(section)
        return panel
