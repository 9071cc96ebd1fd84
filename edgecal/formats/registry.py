"""The format registry and the `save_table` / `load_table` entry points."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..atomic import atomic_write
from ..errors import InputError, StateError, UnknownNameError
from ..plugins import load_group
from ..regular_file import read_regular
from ..typed_value import typed_value

if TYPE_CHECKING:
    from ..table import CalibrationTable

MAX_TABLE_BYTES = 256 << 20  # a table is a few hundred bytes per tensor


@dataclass(frozen=True)
class Format:
    """A table format: ``write(table, **options) -> bytes`` and optionally ``read(bytes) -> table``.

    ``sniff(head)`` says whether the first bytes of a file look like this format.
    ``options`` maps each option the writer takes to its kind (bool, int, float or
    str); `check_options` converts text such as ``-O skip_unsupported=true`` to it.
    """

    name: str
    suffixes: tuple[str, ...]
    write: Callable[..., bytes]
    read: Callable[[bytes], CalibrationTable] | None = None
    sniff: Callable[[bytes], bool] | None = None
    description: str = ""
    options: Mapping[str, type] = field(default_factory=dict)
    #: checks the typed options as a whole before any work (e.g. that a file they name reads)
    check: Callable[[Mapping[str, Any]], Any] | None = None

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` converted to their kinds (see `edgecal.typed_value`); `InputError` for an unknown or bad one."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(f"{k} ({v.__name__})" for k, v in self.options.items()) or "none"
            raise InputError(f"format {self.name!r} has no option {unknown[0]!r}; accepted: {accepted}")
        typed = {k: typed_value(v, self.options[k], f"format {self.name!r} option {k!r}") for k, v in options.items()}
        if self.check is not None:
            self.check(typed)
        return typed


_FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    """Make ``fmt`` available by its name; a module calling this on import is a format plugin as it stands."""
    _FORMATS[fmt.name] = fmt
    return fmt


def _register_plugin(name: str, obj: Any) -> None:
    """An ``edgecal.formats`` entry point: a module that registered itself, or a `Format`."""
    if isinstance(obj, Format):
        register_format(obj)
    elif not inspect.ismodule(obj):
        raise TypeError(f"expected a module or an edgecal.formats.Format, found {type(obj).__name__}")


def _formats() -> dict[str, Format]:
    """Every registered format, the plugins' loaded on first use."""
    load_group("edgecal.formats", _register_plugin)
    return _FORMATS


def get_format(name: str) -> Format:
    """The format registered as ``name``; `UnknownNameError` lists the known ones."""
    _formats()
    try:
        return _FORMATS[name]
    except KeyError:
        raise UnknownNameError("format", name, list(_FORMATS)) from None


def format_names() -> list[str]:
    """Names of every registered format."""
    return sorted(_formats())


def _by_suffix(path: Path) -> Format | None:
    suffix = path.suffix.lower()
    for fmt in _formats().values():
        if suffix in fmt.suffixes:
            return fmt
    return None


def detect_format(path: str | os.PathLike[str], head: bytes | None = None) -> Format:
    """The format of ``path``: by its content when ``head`` is given, else by suffix."""
    if head is not None:
        for fmt in _formats().values():
            if fmt.read is not None and fmt.sniff is not None and fmt.sniff(head):
                return fmt
    found = _by_suffix(Path(path))
    if found is None:
        known = ", ".join(f"{f.name} ({' '.join(f.suffixes)})" for f in _FORMATS.values())
        raise InputError(f"cannot tell the table format of {path}; pass a format, one of: {known}")
    return found


def save_table(table: CalibrationTable, path: str | os.PathLike[str], format: str | None = None, **options: Any) -> None:
    """Encode ``table`` and write it atomically; nothing is written if encoding fails."""
    fmt = get_format(format) if format else detect_format(path)
    atomic_write(path, fmt.write(table, **fmt.check_options(options)))


def load_table(path: str | os.PathLike[str], format: str | None = None) -> CalibrationTable:
    """Read a table (a regular file of at most `MAX_TABLE_BYTES`) in ``format`` or the format its content shows."""
    data = read_regular(path, MAX_TABLE_BYTES, "table")
    fmt = get_format(format) if format else detect_format(path, data[:64])
    if fmt.read is None:
        readable = ", ".join(f.name for f in _FORMATS.values() if f.read is not None)
        raise InputError(f"format {fmt.name!r} can be written but not read; readable formats: {readable}")
    try:
        return fmt.read(data)
    except (StateError, InputError) as err:
        raise type(err)(f"{path}: {err}") from err
