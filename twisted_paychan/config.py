"""
``twistd paychan --config FILE``: the server's options from a file, TOML or INI.

The file uses the options' own names, without the dashes in front::

    # paychan.toml                          ; paychan.ini
    listen = "tcp:4242:interface=0.0.0.0"   [paychan]
    data-dir = "/var/lib/paychan"           listen = tcp:4242:interface=0.0.0.0
    min-channel = 200000                    data-dir = /var/lib/paychan
    verbose = true                          verbose = true

A file ending in ``.ini``, ``.cfg`` or ``.conf`` is read as INI (one ``[paychan]`` section); any
other as TOML (a top-level table, or a ``[paychan]`` one). Underscores may stand for dashes.
Values go through the same checks as on the command line, and the command line wins: the file
sets the starting values, then the command line is parsed over them. An unknown name, a bad
value or a file that cannot be read is a usage error of one line naming the file.
"""

from __future__ import annotations

import configparser
import os
from typing import Any, Union

from twisted.python import usage

__all__ = ["ConfigValue", "read_config", "apply_config", "config_path_in"]

ConfigValue = Union[str, int, float, bool]

_INI_SUFFIXES = (".ini", ".cfg", ".conf")
_SECTION = "paychan"
_NOT_SETTABLE = frozenset({"config", "help", "version"})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def config_path_in(argv: list[str]) -> Union[str, None]:
    """The ``--config`` named in ``argv`` (the last one, as for any option), read before the
    command line is parsed so that the command line can be parsed over the file's values. A
    ``--`` ends the options, as for getopt."""
    found = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(argv):
            found = argv[i + 1]
            i += 1
        elif arg.startswith("--config="):
            found = arg[len("--config="):]
        i += 1
    return found


def _read_toml(path: str, data: bytes) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise usage.UsageError(f"{path}: TOML needs Python 3.11 or later; write the file as INI (.ini)") from None
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise usage.UsageError(f"{path}: not valid TOML: {e}") from None
    if set(table) == {_SECTION} and isinstance(table[_SECTION], dict):
        table = table[_SECTION]
    return table


def _read_ini(path: str, data: bytes) -> dict[str, Any]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(data.decode("utf-8"), source=path)
    except (UnicodeDecodeError, configparser.Error) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise usage.UsageError(f"{path}: not valid INI: {first}") from None
    others = [s for s in parser.sections() if s != _SECTION]
    if others:
        raise usage.UsageError(f"{path}: unknown section [{others[0]}] (the options go in [{_SECTION}])")
    return dict(parser[_SECTION]) if parser.has_section(_SECTION) else {}


def read_config(path: str) -> dict[str, ConfigValue]:
    """The name/value pairs of the file at ``path`` (names with dashes)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise usage.UsageError(f"cannot read the config file {path}: {e.strerror or e}") from None
    ini = os.path.splitext(path)[1].lower() in _INI_SUFFIXES
    table = _read_ini(path, data) if ini else _read_toml(path, data)
    values: dict[str, ConfigValue] = {}
    for key, value in table.items():
        if not isinstance(value, (str, int, float, bool)):
            raise usage.UsageError(f"{path}: {key} must be a string, a number or true/false, not a {type(value).__name__}")
        values[key.replace("_", "-")] = value
    return values


def _flag(path: str, name: str, value: ConfigValue) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise usage.UsageError(f"{path}: {name} is a flag: give true or false, not {value!r}")


def apply_config(options: usage.Options, path: str, values: dict[str, ConfigValue]) -> None:
    """Set ``options`` from ``values`` as if they had been given on the command line, each
    through the option's own parser and checks."""
    flags = {str(flag[0]) for flag in getattr(options, "optFlags", [])}
    for name, value in values.items():
        # Long names only (a short synonym maps to another name), and none of the commands.
        if name in _NOT_SETTABLE or options.synonyms.get(name) != name:
            raise usage.UsageError(f"{path}: unknown option {name!r} (see twistd paychan --help)")
        if name in flags:
            options[name] = 1 if _flag(path, name, value) else 0
            continue
        if isinstance(value, bool):
            raise usage.UsageError(f"{path}: {name} takes a value, not {str(value).lower()}")
        dispatch: Any = options._dispatch[name]
        try:
            if isinstance(dispatch, usage.CoerceParameter):
                dispatch.dispatch(name, str(value))
            else:
                dispatch(name, str(value))
        except usage.UsageError as e:
            said = str(e)
            raise usage.UsageError(f"{path}: {said}" if f"--{name}" in said else f"{path}: {name} = {value!r}: {said}") from None
