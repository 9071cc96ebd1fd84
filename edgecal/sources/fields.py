"""Building blocks of the sources' ``FIELDS``: the list checks sources need, and config checking.

The scalar checks (`positive`, `between`, `one_of`, ...) are `edgecal.config`'s, re-exported
here so a source module imports its building blocks from one place.

Every source checks its keyword arguments against its ``FIELDS`` on construction, so a
source built from Python gets the same one-line errors as one built from the daemon's
TOML file (where `edgecal.config` adds the line number first).

>>> from edgecal.config import Field
>>> fields = {"rate": Field(float, 1.0, positive), "mode": Field(str, "a", one_of("a", "b"))}
>>> checked_config("demo", fields, {"rate": 2})
{'rate': 2.0, 'mode': 'a'}
>>> checked_config("demo", fields, {"mode": "c"})
Traceback (most recent call last):
...
edgecal.errors.ConfigError: source demo mode: unknown 'c'; known: a, b
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from ..config import (Check, ConfigError, Field, at_least, between, check_table, non_empty, non_negative, one_of,
                      positive)

__all__ = ["Check", "Counters", "at_least", "between", "checked_config", "entry_point", "exactly_one", "names",
           "non_empty", "non_negative", "numbers", "one_of", "positive"]
ENTRY_POINT = re.compile(r"^([A-Za-z_][\w.]*|[^:]+\.py):[A-Za-z_]\w*$")


def names(value: list) -> str | None:
    """A list of tensor names: non-empty strings, no repeats."""
    if not all(isinstance(v, str) and v for v in value):
        return f"expected a list of tensor names (non-empty strings), found {value!r}"
    return None if len(set(value)) == len(value) else f"names a tensor twice: {value!r}"


def numbers(value: list) -> str | None:
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return None if ok else f"expected a list of numbers, found {value!r}"


def entry_point(value: str) -> str | None:
    if ENTRY_POINT.match(value):
        return None
    return f"{value!r} is not an entry point; expected 'package.module:function' or '/path/to/file.py:function'"


def checked_config(kind: str, fields: Mapping[str, Field], config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with defaults filled in; `ConfigError` naming the first bad key.

    A ``kind`` key equal to ``kind`` is accepted and dropped (the daemon may pass it on).
    """
    values = dict(config)
    if "kind" in values:
        if values.pop("kind") != kind:
            raise ConfigError(f"source {kind} kind: {config['kind']!r} does not name this source")
    return check_table(values, fields, f"source {kind}", lambda key: None)


def exactly_one(kind: str, config: Mapping[str, Any], *keys: str) -> str:
    """The one key of ``keys`` set (not None) in ``config``; `ConfigError` when none or several are."""
    given = [k for k in keys if config.get(k) is not None]
    if len(given) != 1:
        found = ", ".join(given) if given else "neither"
        raise ConfigError(f"source {kind}: give exactly one of {' or '.join(keys)}; found {found}")
    return given[0]


class Counters:
    """Named integer counters shared between a source's reader thread and the daemon's main thread."""

    def __init__(self, *keys: str) -> None:
        self._values = dict.fromkeys(keys, 0)
        self._lock = threading.Lock()

    def add(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._values[key] += amount

    def __getitem__(self, key: str) -> int:
        return self._values[key]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)
