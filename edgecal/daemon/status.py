"""`read_status`: what a daemon has on disk, read from its config without disturbing it.

``edgecal daemon status --config FILE`` shows it. The daemon writes two files: the
checkpoint (``[state] path``, with ``<path>.prev`` the one before) and the table
(``[output] path``). Both are written atomically, so reading them while the daemon
runs sees a whole old file or a whole new one. The checkpoint is the one a restart
would resume from: ``path`` when it loads, else ``<path>.prev``. Nothing here writes,
and a file that is missing or damaged is reported, not raised: a status read is how
a damaged checkpoint is found.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path

from ..calibrator import Calibrator
from ..errors import EdgecalError
from ..formats import detect_format, get_format, load_table
from ..table import CalibrationTable
from .settings import load_settings


@dataclass(frozen=True)
class FileFacts:
    """A file's existence, size and modification time (UTC, ISO 8601) with its age in seconds."""

    path: str
    exists: bool
    bytes: int | None = None
    modified: str | None = None
    age_seconds: float | None = None

    @classmethod
    def of(cls, path: Path) -> FileFacts:
        try:
            st = path.stat()
        except OSError:
            return cls(str(path), False)
        stamp = _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(str(path), True, st.st_size, stamp, max(time.time() - st.st_mtime, 0.0))


@dataclass(frozen=True)
class DaemonStatus:
    """The checkpoint and table of the daemon configured by ``config``.

    ``state`` is the checkpoint a restart resumes from (``state_from`` names which file)
    or None; ``state_errors`` lists, per damaged checkpoint file, why it is unusable.
    ``table`` is the last table written, None when absent, damaged (``table_error``) or in a
    write-only format (``table_readable`` false).
    """

    config: str
    checkpoint: FileFacts
    previous: FileFacts
    state: Calibrator | None
    state_from: str | None
    state_errors: list[str]
    output: FileFacts
    table_format: str
    table_readable: bool
    table: CalibrationTable | None
    table_error: str | None

    @property
    def ok(self) -> bool:
        """True when no file the daemon wrote is damaged."""
        return not self.state_errors and self.table_error is None


def _load_checkpoint(path: Path) -> tuple[Calibrator | None, str | None, list[str]]:
    errors: list[str] = []
    for candidate in (path, path.with_name(path.name + ".prev")):
        if not candidate.exists():
            continue
        try:
            return Calibrator.load_state(candidate), str(candidate), errors
        except Exception as err:  # noqa: BLE001  as the daemon's load_checkpoint: any failure is damage
            text = f"{type(err).__name__}: {err}"
            errors.append(text if str(candidate) in text else f"{candidate}: {text}")
    return None, None, errors


def read_status(config: str | Path) -> DaemonStatus:
    """The status of the daemon configured in ``config`` (checked as `edgecal daemon` checks it)."""
    s = load_settings(config)
    path, out = Path(s.state.path), Path(s.output.path)
    state, state_from, errors = _load_checkpoint(path)
    fmt = get_format(s.output.format) if s.output.format else detect_format(out)
    table, table_error = None, None
    if fmt.read is not None and out.exists():
        try:
            table = load_table(out, fmt.name)
        except (EdgecalError, OSError) as err:
            table_error = str(err)
    return DaemonStatus(str(s.path), FileFacts.of(path), FileFacts.of(path.with_name(path.name + ".prev")), state,
                        state_from, errors, FileFacts.of(out), fmt.name, fmt.read is not None, table, table_error)
