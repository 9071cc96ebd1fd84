"""Checked TOML configuration: every key known, every type right, errors name the line.

A schema maps table names to `Field`s. `load_config` parses the file (``tomllib``,
or ``tomli`` on Python 3.10), fills defaults, and raises `ConfigError` for the first
unknown key, wrong type, missing required key or failed check, naming the key, its
table and the line it is on, before anything starts.

>>> schema = {"state": {"path": Field(str), "checkpoint_interval": Field(float, 30.0)}}
>>> parse_config('[state]\\npath = "/var/lib/x.ecst"\\n', schema)["state"]
{'path': '/var/lib/x.ecst', 'checkpoint_interval': 30.0}
>>> parse_config('[state]\\npath = 3\\n', schema)
Traceback (most recent call last):
...
edgecal.config.ConfigError: line 2: [state] path: expected a string, found 3
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

REQUIRED = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table", list: "a list"}


class ConfigError(InputError):
    """A configuration file that cannot be used as written."""


@dataclass(frozen=True)
class Field:
    """One key: its type, default (`REQUIRED` if none) and an optional ``check(value) -> error or None``."""

    type: type
    default: Any = REQUIRED
    check: Callable[[Any], str | None] | None = None

    def convert(self, value: Any) -> tuple[Any, str | None]:
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            return value, f"expected {_TYPE_NAMES.get(self.type, self.type.__name__)}, found {value!r}"
        return value, self.check(value) if self.check else None


def _tomllib() -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise InputError("reading a TOML config on Python 3.10 needs tomli: pip install 'edgecal[toml]'") from None
    return tomllib


def key_lines(text: str) -> dict[tuple[str, int, str], int]:
    """(table, index within an array of tables, key) -> 1-based line of its ``key =``."""
    lines: dict[tuple[str, int, str], int] = {}
    table, index, seen = "", 0, {}
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*(\[\[?)\s*([^\]]+?)\s*\]\]?", line)
        if header:
            table = header.group(2)
            index = seen[table] = seen.get(table, -1) + 1 if header.group(1) == "[[" else 0
            lines.setdefault((table, index, ""), number)
            continue
        key = re.match(r"\s*([A-Za-z0-9_-]+)\s*=", line)
        if key:
            lines.setdefault((table, index, key.group(1)), number)
    return lines


def check_table(values: Mapping[str, Any], fields: Mapping[str, Field], where: str,
                line_of: Callable[[str], int | None]) -> dict[str, Any]:
    """Defaults filled in, every key of ``values`` known and well typed."""

    def fail(key: str, message: str) -> ConfigError:
        line = line_of(key)
        return ConfigError(f"{'line %d: ' % line if line else ''}{where} {key}: {message}")

    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise fail(key, f"unknown key; known keys: {', '.join(sorted(fields))}")
        out[key], problem = fields[key].convert(value)
        if problem:
            raise fail(key, problem)
    for key, field in fields.items():
        if key not in out:
            if field.default is REQUIRED:
                raise fail(key, "is required")
            out[key] = field.default
    return out


Fields = Mapping[str, Field]
Schema = Mapping[str, "Fields | Callable[[Mapping[str, Any]], Fields]"]


def parse_config(text: str, schema: Schema) -> dict[str, Any]:
    """Check ``text`` against ``schema`` (table name -> fields); arrays of tables are lists.

    A table whose fields depend on its content (``[[source]]`` tables whose ``kind``
    decides the other keys) maps to a callable ``entry -> fields`` and must be an
    array of tables.
    """
    try:
        raw = _tomllib().loads(text)
    except ValueError as err:  # tomllib.TOMLDecodeError says the line and column itself
        raise ConfigError(f"not valid TOML: {err}") from None
    lines = key_lines(text)
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ConfigError(f"line {lines.get((unknown[0], 0, ''), '?')}: unknown table [{unknown[0]}]; "
                          f"known tables: {', '.join(sorted(schema))}")
    out: dict[str, Any] = {}
    for table, fields in schema.items():
        value = raw.get(table, [] if callable(fields) else {})
        if callable(fields) and not isinstance(value, list):
            raise ConfigError(f"line {lines.get((table, 0, ''), '?')}: [{table}] must be an array of tables: write [[{table}]]")
        if isinstance(value, list):
            out[table] = [check_table(v, fields(v) if callable(fields) else fields, f"[[{table}]] #{i + 1}",
                                      lambda k, i=i, t=table: lines.get((t, i, k)))
                          for i, v in enumerate(value)]
        else:
            out[table] = check_table(value, fields, f"[{table}]", lambda k, t=table: lines.get((t, 0, k)))
    return out


def load_config(path: str | Path, schema: Schema) -> dict[str, Any]:
    """`parse_config` of a file; errors start with the file name."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from err
    try:
        return parse_config(text, schema)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
