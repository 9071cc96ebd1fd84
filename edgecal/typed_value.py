"""`typed_value`: a format option or method parameter given as text or as a value, checked against its kind.

Text comes from ``-O KEY=VALUE`` and ``-p KEY=VALUE``; values come from TOML or
Python. One wording for every caller:

- ``bool``: a bool, or the text ``true``/``false``, ``1``/``0``, ``yes``/``no``
  (any case); anything else (``maybe``, ``2``) is refused;
- ``int``: an integer (not a bool), or its decimal text;
- ``float``: a real number (not a bool), or its decimal text; it must be finite
  (``nan``, ``inf`` and ``1e400`` are refused);
- ``str``: text, kept as given.

>>> typed_value("yes", bool, "option 'x'"), typed_value("256", int, "p"), typed_value("99.9", float, "p")
(True, 256, 99.9)
>>> typed_value("maybe", bool, "option 'x'")
Traceback (most recent call last):
...
edgecal.errors.InputError: option 'x': found 'maybe'; expected true or false (or 1/0, yes/no)
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from .errors import InputError

TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_EXPECTED = {bool: "true or false (or 1/0, yes/no)", int: "an integer", float: "a finite number", str: "text"}


def typed_value(value: Any, kind: type, what: str) -> Any:
    """``value`` as ``kind`` (bool, int, float or str); `InputError` naming ``what``, the value found and the kind."""
    result = _convert(value, kind)
    if result is None:
        raise InputError(f"{what}: found {value!r}; expected {_EXPECTED[kind]}")
    return result


def _convert(value: Any, kind: type) -> Any:
    is_bool = isinstance(value, bool) or type(value).__name__ == "bool_"
    if kind is str:
        return value if isinstance(value, str) else None
    if kind is bool:
        if is_bool:
            return bool(value)
        text = value.strip().lower() if isinstance(value, str) else None
        return True if text in TRUE else False if text in FALSE else None
    if is_bool:
        return None
    if kind is int:
        if isinstance(value, numbers.Integral):
            return int(value)
        return int(value) if isinstance(value, str) and _INT.fullmatch(value.strip()) else None
    if isinstance(value, str):
        value = float(value) if _FLOAT.fullmatch(value.strip()) else None
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    return None
