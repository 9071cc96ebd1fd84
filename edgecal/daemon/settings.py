"""The daemon's configuration file: typed settings, defaults and the checks run before start.

See scripts/edgecal.toml for a commented example. Each table is a frozen dataclass
whose fields are declared once with `edgecal.config.setting` (type, default, check);
that declaration is also the schema the TOML file is checked against. Every key is
checked (type, range, names of methods, formats, schemes and source kinds, method
parameters through the method's own ``resolve``, format options, each source's
keys) when the file is read, so a bad config stops `edgecal daemon` with one error
naming the key and its line before any source opens; a bad config given to a
running daemon by SIGHUP is logged and the old one kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..calibrator import DEFAULT_BINS, DEFAULT_STAGE_BYTES
from ..config import (ConfigError, Field, between, fields_of, key_lines, non_negative, one_of, parse_config, positive,
                      read_config, setting)
from ..errors import EdgecalError, InputError
from ..formats import detect_format, get_format
from ..histogram import check_bins
from ..methods import DEFAULT_METHOD, get_method, method_names
from ..sources import source_class, source_kinds
from ..table import SCHEMES

MAX_TENSORS = 1 << 20


def _power_of_two(v: int) -> str | None:
    try:
        check_bins(v)
    except InputError as err:
        return str(err)
    return None


def _folder_exists(v: str) -> str | None:
    if not v.strip() or "\0" in v:
        return f"expected a file path, found {v!r}"
    return None if Path(v).parent.is_dir() else f"folder {Path(v).parent} does not exist"


@dataclass(frozen=True)
class CalibratorSettings:
    """``[calibrator]``: the histograms."""

    bins: int = setting(int, DEFAULT_BINS, _power_of_two)
    model_hash: str | None = setting(str, None)
    #: histograms kept at most; tensors with further names are refused and counted (memory bound)
    max_tensors: int = setting(int, 1024, between(1, MAX_TENSORS))
    #: bytes of the block where small arrays wait to be binned tensor by tensor (0: bin each at once)
    stage_bytes: int = setting(int, DEFAULT_STAGE_BYTES, between(0, 1 << 30))


@dataclass(frozen=True)
class StateSettings:
    """``[state]``: the checkpoint."""

    path: str = setting(str, check=_folder_exists)
    checkpoint_interval: float = setting(float, 30.0, positive)


@dataclass(frozen=True)
class OutputSettings:
    """``[output]``: the table written."""

    path: str = setting(str, check=_folder_exists)
    format: str | None = setting(str, None)
    method: str = setting(str, DEFAULT_METHOD, one_of(method_names))
    params: Mapping[str, Any] = setting(dict, {})
    scheme: str = setting(str, "symmetric", one_of(*SCHEMES))
    options: Mapping[str, Any] = setting(dict, {})
    every_samples: int = setting(int, 0, non_negative)
    every_seconds: float = setting(float, 0.0, non_negative)
    on_stop: bool = setting(bool, True)


@dataclass(frozen=True)
class DaemonSettings:
    """``[daemon]``: the service loop."""

    queue_samples: int = setting(int, 64, between(1, 1 << 16))
    status_interval: float = setting(float, 5.0, positive)
    exit_when_exhausted: bool = setting(bool, True)
    retry_interval: float = setting(float, 5.0, positive)


@dataclass(frozen=True)
class SourceSettings:
    """One ``[[source]]`` table: its kind and the keyword arguments of its class (checked, defaults filled)."""

    kind: str
    options: Mapping[str, Any]
    label: str


@dataclass(frozen=True)
class Settings:
    """A checked configuration."""

    path: Path
    calibrator: CalibratorSettings
    state: StateSettings
    output: OutputSettings
    daemon: DaemonSettings
    sources: tuple[SourceSettings, ...]


def _source_fields(entry: Mapping[str, Any]) -> Mapping[str, Field]:
    kind = entry.get("kind")
    if kind not in source_kinds():
        return {"kind": Field(str, check=one_of(source_kinds))}
    return {"kind": Field(str), **source_class(kind).FIELDS}


TABLES = {"calibrator": CalibratorSettings, "state": StateSettings, "output": OutputSettings, "daemon": DaemonSettings}
SCHEMA: dict[str, Any] = {**{name: fields_of(cls) for name, cls in TABLES.items()}, "source": _source_fields}


def _frozen(table: Mapping[str, Any]) -> dict[str, Any]:
    return {k: MappingProxyType(dict(v)) if isinstance(v, dict) else v for k, v in table.items()}


def check_method_params(output: OutputSettings) -> None:
    """The validation hook for ``[output] params``: the method's own ``resolve`` (names, types, bounds).

    Anything it raises is a config error here, so an out-of-range parameter (a KL search
    over a billion levels) stops the daemon when the config is read, never at the
    first table.
    """
    try:
        get_method(output.method).resolve(dict(output.params))
    except (EdgecalError, TypeError, ValueError, OverflowError) as err:
        raise InputError(str(err) or type(err).__name__) from None


def _format(output: OutputSettings) -> Any:
    return get_format(output.format) if output.format else detect_format(output.path)


def _check(what: str, line: int | None, check: Callable[[], object]) -> None:
    try:
        check()
    except (EdgecalError, TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"{'line %d: ' % line if line else ''}{what}: {err}") from None


def parse_settings(text: str, path: str | Path) -> Settings:
    """Check the config ``text`` (read from ``path``); `ConfigError` names the first problem's key and line."""
    cfg = parse_config(text, SCHEMA)
    if not cfg["source"]:
        raise ConfigError("no [[source]] table; expected at least one activation source")
    lines = key_lines(text)
    tables = {name: cls(**_frozen(cfg[name])) for name, cls in TABLES.items()}
    out = tables["output"]
    _check("[output] params", lines.get(("output", 0, "params")), lambda: check_method_params(out))
    key = "format" if out.format else "path"
    _check(f"[output] {key}", lines.get(("output", 0, key)), lambda: _format(out))
    _check("[output] options", lines.get(("output", 0, "options")), lambda: _format(out).check_options(dict(out.options)))
    sources = []
    for i, entry in enumerate(cfg["source"]):
        options = {k: v for k, v in entry.items() if k != "kind"}
        where, line = f"[[source]] #{i + 1}", lines.get(("source", i, ""))
        _check(where, line, lambda: source_class(entry["kind"])(**options))  # cross-key checks; construction does no I/O
        sources.append(SourceSettings(entry["kind"], MappingProxyType(options), f"{entry['kind']}#{i + 1}"))
    return Settings(Path(path), sources=tuple(sources), **tables)


def load_settings(path: str | Path) -> Settings:
    """Read and check ``path``; `ConfigError` starts with the file name and names the key and line."""
    text = read_config(path)
    try:
        return parse_settings(text, path)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
