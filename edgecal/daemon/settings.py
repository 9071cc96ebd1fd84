"""The daemon's configuration file: schema, defaults and the checks run before start.

See scripts/edgecal.toml for a commented example. Every key is checked (type,
range, names of methods, formats, schemes and source kinds, method parameters,
format options) when the file is read, so a bad config stops `edgecal daemon`
with one error naming the key and its line before any source opens; a bad config
given to a running daemon by SIGHUP is logged and the old one kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..calibrator import DEFAULT_BINS
from ..config import ConfigError, Field, load_config
from ..errors import EdgecalError, InputError
from ..histogram import check_bins
from ..formats import detect_format, get_format
from ..methods import get_method, method_names
from ..sources import source_class, source_kinds
from ..table import SCHEMES


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _not_negative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _power_of_two(v: int) -> str | None:
    try:
        check_bins(v)
    except InputError as err:
        return str(err)
    return None


def _one_of(names: list[str]) -> Any:
    return lambda v: None if v in names else f"unknown {v!r}; known: {', '.join(names)}"


def _folder_exists(v: str) -> str | None:
    return None if Path(v).parent.is_dir() else f"folder {Path(v).parent} does not exist"


def _source_fields(entry: Mapping[str, Any]) -> Mapping[str, Field]:
    kind = entry.get("kind")
    if kind not in source_kinds():
        return {"kind": Field(str, check=_one_of(source_kinds()))}
    return {"kind": Field(str), **source_class(kind).FIELDS}


SCHEMA = {
    "calibrator": {"bins": Field(int, DEFAULT_BINS, _power_of_two), "model_hash": Field(str, None)},
    "state": {"path": Field(str, check=_folder_exists), "checkpoint_interval": Field(float, 30.0, _positive)},
    "output": {
        "path": Field(str, check=_folder_exists),
        "format": Field(str, None),
        "method": Field(str, "kl", lambda v: _one_of(method_names())(v)),
        "params": Field(dict, {}),
        "scheme": Field(str, "symmetric", _one_of(list(SCHEMES))),
        "options": Field(dict, {}),
        "every_samples": Field(int, 0, _not_negative),
        "every_seconds": Field(float, 0.0, _not_negative),
        "on_stop": Field(bool, True),
    },
    "daemon": {
        "queue_samples": Field(int, 64, _positive),
        "status_interval": Field(float, 5.0, _positive),
        "exit_when_exhausted": Field(bool, True),
        "retry_interval": Field(float, 5.0, _positive),
    },
    "source": _source_fields,
}


@dataclass(frozen=True)
class Settings:
    """A checked configuration."""

    path: Path
    calibrator: dict[str, Any]
    state: dict[str, Any]
    output: dict[str, Any]
    daemon: dict[str, Any]
    sources: list[dict[str, Any]]


def load_settings(path: str | Path) -> Settings:
    """Read and check ``path``; `ConfigError` names the first problem's key and line."""
    cfg = load_config(path, SCHEMA)
    if not cfg["source"]:
        raise ConfigError(f"{path}: no [[source]] table; expected at least one activation source")
    out = cfg["output"]
    try:
        method = get_method(out["method"])
        method.resolve(out["params"])
        fmt = get_format(out["format"]) if out["format"] else detect_format(out["path"])
        fmt.check_options(out["options"])
    except EdgecalError as err:
        raise ConfigError(f"{path}: [output]: {err}") from None
    return Settings(Path(path), cfg["calibrator"], cfg["state"], out, cfg["daemon"], cfg["source"])
