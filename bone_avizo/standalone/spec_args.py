"""Parameter spec -> argparse flags, and parsed flags (+ an optional config file) -> config."""
from __future__ import annotations

import argparse
import difflib
import logging
from typing import Any, Iterable, Mapping

from bone_avizo.config import ConfigBase, Param, load_config_file
from bone_avizo.errors import ConfigError

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
                        help="JSON or YAML file of options (top-level keys, and per-command sections such as "
                             "'fit: {...}'); flags given on the command line override it")
    add_config_keys(parser, (p.name for p in spec))


def add_config_keys(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """Declare ``names`` as keys this command's config file may hold."""
    known = parser.get_default("_config_keys") or frozenset()
    parser.set_defaults(_config_keys=frozenset(known) | frozenset(names))


def share_config_keys(parsers: Mapping[str, argparse.ArgumentParser]) -> None:
    """Tell every command the config keys of all commands (to name the command a misplaced key belongs to)."""
    keys = {name: parser.get_default("_config_keys") or frozenset() for name, parser in parsers.items()}
    for parser in parsers.values():
        parser.set_defaults(_command_keys=keys)


# a command also reads these commands' sections of a config file (below its own section)
INHERITED_SECTIONS = {"cv": ("fit",)}


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def config_from_args(config_cls: type[ConfigBase], args: argparse.Namespace, **overrides):
    """Defaults <- config file <- flags given on the command line <- explicit overrides."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        names = {p.name for p in config_cls.SPEC}
        values.update({k: v for k, v in _config_file_options(args).items() if k in names})
    for param in config_cls.SPEC:
        value = getattr(args, param.name, None)
        if value is not None:
            values[param.name] = value
    values.update(overrides)
    config = config_cls.from_dict(values)
    log.debug("%s: %s", config_cls.__name__, config.to_dict())
    return config


def _config_file_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options the --config file gives this command, keys with '_': its top-level keys, then the
    sections of the commands it inherits, then its own section (``predict: {...}``); a run record
    (a mapping with ``options``) gives its options. A key that no option of this command has is an
    error naming the closest valid key and the command it belongs to."""
    path = args.config
    data = load_config_file(path)
    command = getattr(args, "command", None)
    keys: dict[str, frozenset] = getattr(args, "_command_keys", None) or {}
    known = getattr(args, "_config_keys", None) or frozenset(k for ks in keys.values() for k in ks)
    if isinstance(data.get("options"), Mapping):  # a run's record: its options, the rest is not options
        record_command = data.get("command")
        if record_command not in (None, command, *INHERITED_SECTIONS.get(command, ())):
            raise ConfigError(f"config file {path} records a {record_command} run, whose options are not "
                              f"{command}'s; give it to {record_command}, or copy the options wanted into a "
                              f"'{command}:' section of a new file")
        options = _normalised(data["options"])
        return {k: v for k, v in options.items() if k in known or not _check_key(k, path, command, known, keys,
                                                                                  skip=record_command)}
    values = {}
    sections = [*INHERITED_SECTIONS.get(command, ()), command]
    top = {k: v for k, v in data.items() if k not in keys}  # a command's name is its section
    for key in _normalised(top):
        _check_key(key, path, command, known, keys)
    values.update(_normalised(top))
    for section in sections:
        given = data.get(section)
        if section not in keys or given is None:
            continue
        if not isinstance(given, Mapping):
            raise ConfigError(f"config file {path}: section '{section}' must be a mapping of {section} options")
        options = _normalised(given)
        for key in options:
            if section == command:
                _check_key(key, path, command, known, keys, section=section)
        values.update({k: v for k, v in options.items() if k in known})
    return values


def _normalised(options: Mapping) -> dict[str, Any]:
    return {str(k).replace("-", "_"): v for k, v in options.items()}


def _check_key(key: str, path, command: str | None, known: frozenset, keys: dict[str, frozenset], *,
               section: str | None = None, skip: str | None = None) -> bool:
    """Raise ConfigError for a key this command has no option for (unless it is an option of ``skip``'s
    command: then return True, the key is to be left out)."""
    if key in known:
        return False
    owners = [name for name, names in keys.items() if key in names and name != command]
    if skip in owners:
        return True
    where = f" in section '{section}'" if section else ""
    message = f"config file {path}: '{key}'{where} is not an option of {command or 'this command'}"
    if owners:
        raise ConfigError(f"{message}; it is an option of {', '.join(owners)}: put it in a '{owners[0]}:' section")
    close = difflib.get_close_matches(key, sorted(known), n=1)
    elsewhere = difflib.get_close_matches(key, sorted({k for ks in keys.values() for k in ks} - known), n=1)
    if close:
        message += f"; did you mean '{close[0]}'?"
    elif elsewhere:
        owner = next(name for name, names in keys.items() if elsewhere[0] in names)
        message += f"; did you mean '{elsewhere[0]}' (an option of {owner}: put it in a '{owner}:' section)?"
    else:
        message += "; --help lists the options (a flag --x-y is the key x_y)"
    raise ConfigError(message)
