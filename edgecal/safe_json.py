"""`load_json`: JSON from a file edgecal reads (tables, states), every failure one line.

Besides syntax errors, ``json.loads`` raises `RecursionError` on deeply nested
arrays and `ValueError` on integers of more than 4,300 digits; both become a
`StateError` naming what was read.

>>> load_json(b'{"a": [1, 2]}', "table")
{'a': [1, 2]}
>>> load_json(b"[" * 100000, "table")
Traceback (most recent call last):
...
edgecal.errors.StateError: table is nested too deeply; expected a flat JSON document
"""

from __future__ import annotations

import json
from typing import Any

from .errors import StateError


def load_json(raw: bytes, what: str) -> Any:
    """``raw`` parsed as JSON; one-line `StateError` for bad UTF-8, syntax, deep nesting or huge numbers."""
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise StateError(f"{what} is nested too deeply; expected a flat JSON document") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError, and ints over 4300 digits
        raise StateError(f"{what} is not valid JSON ({' '.join(str(err).split())[:120]})") from None
