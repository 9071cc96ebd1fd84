"""`atomic_write`: every file edgecal writes appears whole or not at all.

The bytes go to a temporary file in the destination's directory, are flushed and
fsync'ed, renamed over the destination, and the directory is fsync'ed, so a crash
or power loss leaves either the old file or the new one, never a mixture. On any
error the temporary file is removed and the old file is left untouched.

The destination must be a regular file or a new name: a symlink is followed and its
target replaced (the link stays a link), while a folder, device, FIFO or socket is
refused. Temporary files are named ``.<name>.edgecal-<pid>-<random>.tmp``; one left
behind by a process that was killed is removed by the next write of the same target.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from pathlib import Path

from .errors import WriteError
from .regular_file import kind_of

_TMP = ".{name}.edgecal-{pid}-"
_STARTED = time.time()


def check_writable(path: str | os.PathLike[str]) -> Path:
    """The file `atomic_write` would replace for ``path``; `InputError` if it cannot be written there."""
    target = Path(os.path.realpath(path))
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from err
    if mode is not None and not stat.S_ISREG(mode):
        raise WriteError(f"cannot write {path}: it is {kind_of(mode)}; expected a regular file or a new name")
    if not target.parent.is_dir():
        raise WriteError(f"cannot write {path}: folder {target.parent} does not exist")
    fd, tmp = _temp_file(target, path)
    os.close(fd)
    os.unlink(tmp)
    return target


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` (or the file its symlink points to) with ``data`` atomically."""
    target = check_writable(path)
    _remove_stale(target)
    fd, tmp = _temp_file(target, path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as err:
        _unlink(tmp)
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from err
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _temp_file(target: Path, shown: str | os.PathLike[str]) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(prefix=_TMP.format(name=target.name, pid=os.getpid()), suffix=".tmp",
                                dir=target.parent)
    except OSError as err:
        raise WriteError(f"cannot write {shown}: folder {target.parent}: {err.strerror or err}") from err


def _remove_stale(target: Path) -> None:
    """Remove our temporary files for ``target`` whose writing process is gone."""
    pattern = re.compile(re.escape(f".{target.name}.edgecal-") + r"(\d+)-[a-z0-9_]{8}\.tmp")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if m and not _alive(int(m.group(1)), target.parent / name):
            _unlink(str(target.parent / name))


def _alive(pid: int, tmp: Path) -> bool:
    """Whether the process that named ``tmp`` may still be writing it."""
    if pid == os.getpid():  # ours, or a previous process's of the same pid (pid 1 in a container)
        try:
            return os.stat(tmp).st_mtime >= _STARTED - 1.0
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not let a folder be opened
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
