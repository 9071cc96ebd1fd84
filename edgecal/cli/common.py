"""Pieces every edgecal subcommand shares: progress line, KEY=VALUE arguments, tables of text."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..calibrator import DEFAULT_BINS, Calibrator
from ..errors import InputError
from ..formats import Format, detect_format, get_format
from ..methods import Method, get_method
from ..text import printable
from ..typed_value import typed_value

class Progress:
    """One self-overwriting status line on stderr, only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0
        self._start = time.monotonic()

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self._last >= 0.2):
            self._last = now
            sys.stderr.write(f"\r\x1b[K{terminal_safe(text)}")
            sys.stderr.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def key_values(items: list[str] | None, what: str) -> dict[str, str]:
    """``KEY=VALUE`` arguments as text; the format or method they go to gives each its kind."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"{what} {item!r} is not KEY=VALUE")
        out[key] = raw
    return out


def method_params(method: Method, items: list[str] | None) -> dict[str, Any]:
    """``-p KEY=VALUE`` arguments typed by the kind of each parameter's default, then checked by the method."""
    params: dict[str, Any] = {}
    for key, raw in key_values(items, "--param").items():
        kind = type(method.defaults.get(key))
        known = kind in (bool, int, float, str)
        params[key] = typed_value(raw, kind, f"method {method.name!r} parameter {key!r}") if known else raw
    return method.resolve(params)


def mb(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def db(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.1f} dB"


def terminal_safe(text: str) -> str:
    r"""``text`` with its non-printable characters escaped as `printable` does, backslashes left alone.

    For whole lines (messages, logs) whose names are mostly ``repr``-quoted already:
    nothing in them can move the cursor or start a new line, and the backslash of a
    ``repr`` escape, or of a name the serial link already escaped, is not doubled.

    >>> print(terminal_safe("\x1b[2J\ron 'a\x00'"))
    \x1b[2J\ron 'a\x00'
    """
    return text if text.isprintable() else "".join(c if c.isprintable() else printable(c) for c in text)


def say(*parts: object) -> None:
    """Print one line to stdout, escaped by `terminal_safe` (names come from files, sockets, devices)."""
    print(terminal_safe("".join(str(p) for p in parts)))


def print_rows(rows: Sequence[Sequence[str]]) -> None:
    """Aligned columns; every cell escaped by `terminal_safe`, so a tensor name cannot move the cursor or add a line."""
    safe = [tuple(terminal_safe(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in safe) for i in range(len(safe[0]))]
    for r in safe:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def open_state(state: str | None, bins: int | None) -> Calibrator:
    if state and Path(state).exists():
        cal = Calibrator.load_state(state)
        if bins is not None and bins != cal.bins:
            raise InputError(f"--bins {bins} differs from the {cal.bins} bins of {state}; omit --bins to resume")
        return cal
    return Calibrator(bins or DEFAULT_BINS)


def output_spec(args: Any) -> tuple[Method, dict[str, Any], Format, dict[str, Any]]:
    """Method, its parameters, the output format and its options, all checked before any work."""
    method = get_method(args.method)
    params = method_params(method, args.param)
    out_format = get_format(args.format) if args.format else detect_format(args.out)
    options = out_format.check_options(key_values(args.option, "--option"))
    return method, params, out_format, options
