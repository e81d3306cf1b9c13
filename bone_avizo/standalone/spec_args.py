"""Parameter spec -> argparse flags, and parsed flags (+ an optional config file) -> config."""
from __future__ import annotations

import argparse
import logging
from typing import Any

from bone_avizo.config import ConfigBase, Param, load_config_file

log = logging.getLogger(__name__)


def add_spec_arguments(parser: argparse.ArgumentParser, spec: tuple[Param, ...]) -> None:
    """One flag per Param, grouped as in the spec; defaults are left to the config (None here)."""
    groups: dict[str, Any] = {}
    for param in spec:
        group = groups.setdefault(param.group, parser.add_argument_group(param.group))
        help_text = f"{param.help} [{param.describe_range()}; default: {_show(param.default)}]"
        kwargs: dict[str, Any] = dict(dest=param.name, default=None, help=help_text)
        if param.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif param.multiple:  # repeatable: --planes xy yz and --planes xy --planes yz are the same
            kwargs["nargs"] = "+"
            kwargs["action"] = "extend"
            kwargs["metavar"] = param.name.upper()
        else:
            kwargs["metavar"] = param.name.upper() if not param.choices else "{" + ",".join(param.choices) + "}"
        group.add_argument(param.flag, **kwargs)
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="JSON or YAML file of options; flags given on the command line override it")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def config_from_args(config_cls: type[ConfigBase], args: argparse.Namespace, **overrides):
    """Defaults <- config file <- flags given on the command line <- explicit overrides."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        names = {p.name for p in config_cls.SPEC}
        file_values = load_config_file(args.config)
        options = file_values.get("options", file_values)
        values.update({k: v for k, v in options.items() if k.replace("-", "_") in names})
    for param in config_cls.SPEC:
        value = getattr(args, param.name, None)
        if value is not None:
            values[param.name] = value
    values.update(overrides)
    config = config_cls.from_dict(values)
    log.debug("%s: %s", config_cls.__name__, config.to_dict())
    return config
