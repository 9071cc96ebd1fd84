"""Checked TOML configuration: every key known, every type right, errors name the line.

A schema maps table names to `Field`s. `load_config` parses the file (``tomllib``,
or ``tomli`` on Python 3.10), fills defaults, and raises `ConfigError` for the first
unknown key, wrong type, missing required key or failed check, naming the key, its
table and the line it is on, before anything starts. The checks a `Field` runs
(`positive`, `between`, `one_of`, ...) live here too, one wording for every user.
A frozen dataclass whose fields are declared with `setting` is its own schema
(`fields_of`), so a checked table becomes a typed object in one step.

>>> schema = {"state": {"path": Field(str), "checkpoint_interval": Field(float, 30.0, positive)}}
>>> parse_config('[state]\\npath = "/var/lib/x.ecst"\\n', schema)["state"]
{'path': '/var/lib/x.ecst', 'checkpoint_interval': 30.0}
>>> parse_config('[state]\\npath = 3\\n', schema)
Traceback (most recent call last):
...
edgecal.errors.ConfigError: line 2: [state] path: expected a string, found 3
>>> parse_config('state = 5\\n', schema)
Traceback (most recent call last):
...
edgecal.errors.ConfigError: line 1: [state]: expected a table, found 5
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .tomllines import key_lines

__all__ = ["REQUIRED", "ConfigError", "Field", "at_least", "between", "check_table", "fields_of", "key_lines",
           "load_config", "many", "non_empty", "non_negative", "one_of", "parse_config", "positive", "read_config",
           "setting"]

REQUIRED = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table", list: "a list"}
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Field:
    """One key: its type, default (`REQUIRED` if none) and an optional ``check(value) -> error or None``."""

    type: type
    default: Any = REQUIRED
    check: Check | None = None

    def convert(self, value: Any) -> tuple[Any, str | None]:
        if value is None and self.default is None:  # an optional key left unset, as its filled-in default says
            return None, None
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            return value, f"expected {_TYPE_NAMES.get(self.type, self.type.__name__)}, found {_short(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return value, f"expected a finite number, found {value!r}"
        if self.check is None:
            return value, None
        try:
            return value, self.check(value)
        except (ValueError, TypeError, OverflowError) as err:  # e.g. a path with a NUL character
            return value, f"cannot be used: {err}; found {_short(value)}"


# -- checks: one wording for the daemon's tables and every source's keys ---------------------------
def positive(value: float) -> str | None:
    return None if value > 0 else f"must be > 0, found {value}"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be >= 0, found {value}"


def at_least(low: int) -> Check:
    return lambda value: None if value >= low else f"must be >= {low}, found {value}"


def between(low: float, high: float) -> Check:
    return lambda value: None if low <= value <= high else f"must be {low}..{high}, found {value}"


def one_of(*choices: str | Callable[[], list[str]]) -> Check:
    """``value`` must be one of ``choices``; a single callable gives the names when the check runs (a registry)."""

    def check(value: Any) -> str | None:
        names = list(choices[0]()) if len(choices) == 1 and callable(choices[0]) else list(choices)
        return None if value in names else f"unknown {value!r}; known: {', '.join(map(str, names))}"

    return check


def non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


Fields = Mapping[str, Field]


# -- typed tables ------------------------------------------------------------------------------------
def setting(type_: type, default: Any = REQUIRED, check: Check | None = None) -> Any:
    """A dataclass field that is also its config `Field` (see `fields_of`)."""
    meta = {"field": Field(type_, default, check)}
    if default is REQUIRED:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def many(fields: Fields) -> Callable[[Mapping[str, Any]], Fields]:
    """Schema entry for an array of tables (``[[name]]``) whose entries all have ``fields``."""
    return lambda entry: fields


def fields_of(cls: type) -> dict[str, Field]:
    """The schema of a dataclass declared with `setting`: key -> `Field`."""
    return {f.name: f.metadata["field"] for f in dataclasses.fields(cls)}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- reading -----------------------------------------------------------------------------------------
def _tomllib() -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError("reading a TOML config on Python 3.10 needs the tomli package, which is missing; "
                              "expected it installed with edgecal: pip install 'tomli>=1.1'") from None
    return tomllib


def _line_of(lines: Mapping[tuple[str, int, str], int], table: str, index: int) -> Callable[[str], int | None]:
    """The line of a key of the ``index``-th ``[table]`` (or ``[[table]]``), None when unknown."""
    return lambda key: lines.get((table, index, key))


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


Schema = Mapping[str, "Fields | Callable[[Mapping[str, Any]], Fields]"]


def parse_config(text: str, schema: Schema) -> dict[str, Any]:
    """Check ``text`` against ``schema`` (table name -> fields); arrays of tables are lists.

    An array of tables (``[[source]]``) maps to a callable ``entry -> fields``: `many`
    for fixed fields, or one whose result depends on the entry (a ``kind`` key that
    decides the other keys). Any other table must be a single table.
    """
    toml = _tomllib()  # outside the try: a missing parser is not a fault of the file
    try:
        raw = toml.loads(text)
    except ValueError as err:  # tomllib.TOMLDecodeError says the line and column itself
        raise ConfigError(f"not valid TOML: {err}") from None
    lines = key_lines(text)

    def table_line(table: str) -> str:
        line = lines.get((table, 0, "")) or lines.get(("", 0, table))
        return f"line {line}: " if line else ""

    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ConfigError(f"{table_line(unknown[0])}unknown table [{unknown[0]}]; known tables: {', '.join(sorted(schema))}")
    out: dict[str, Any] = {}
    for table, fields in schema.items():
        value = raw.get(table, [] if callable(fields) else {})
        if callable(fields):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{table_line(table)}[[{table}]]: expected an array of tables (write [[{table}]] "
                                  f"headers), found {_short(value)}")
            out[table] = [check_table(v, fields(v) if callable(fields) else fields, f"[[{table}]] #{i + 1}",
                                      _line_of(lines, table, i))
                          for i, v in enumerate(value)]
        elif isinstance(value, dict):
            out[table] = check_table(value, fields, f"[{table}]", _line_of(lines, table, 0))
        else:
            raise ConfigError(f"{table_line(table)}[{table}]: expected a table, found {_short(value)}")
    return out


def read_config(path: str | Path) -> str:
    """The text of a config file; `ConfigError` naming the file when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from err


def load_config(path: str | Path, schema: Schema) -> dict[str, Any]:
    """`parse_config` of a file; errors start with the file name."""
    text = read_config(path)
    try:
        return parse_config(text, schema)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
