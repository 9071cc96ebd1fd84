"""`open_regular` and `read_regular`: reading a file that must be a regular file of bounded size.

A FIFO would block the reader forever and a device such as ``/dev/zero`` never ends,
so both are refused before a byte is read: the file is opened without blocking and
checked with ``fstat``. `read_regular` also refuses a file larger than the caller's
limit, so what a reader holds in memory is bounded by that limit, not by the file.
"""

from __future__ import annotations

import os
import stat
from typing import IO

from .errors import InputError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str:
    """What a ``st_mode`` is, in words ("a regular file", "a FIFO", ...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike[str], what: str = "file") -> IO[bytes]:
    """``path`` opened for binary reading; `InputError` unless it is a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise InputError(f"cannot read {what} {path}: {err.strerror or err}") from err
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"cannot read {what} {path}: it is {kind_of(mode)}; expected a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], limit: int, what: str = "file") -> bytes:
    """Every byte of the regular file ``path``; `InputError` if it holds more than ``limit`` bytes."""
    with open_regular(path, what) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise InputError(f"cannot read {what} {path}: {size} bytes; expected at most {limit}")
        try:
            data = _read_upto(fh, size, limit)
        except OSError as err:
            raise InputError(f"cannot read {what} {path}: {err.strerror or err}") from err
    if len(data) > limit:
        raise InputError(f"cannot read {what} {path}: more than {limit} bytes; expected at most {limit}")
    return data


def _read_upto(fh: IO[bytes], size: int, limit: int) -> bytes:
    """At most ``limit + 1`` bytes, asking for the ``size`` fstat gave and then 1 MiB at a time.

    ``fh.read(limit + 1)`` would allocate the whole limit (1 GiB for a state) up front: a
    board with little memory or strict overcommit fails there, for a file of a few kB.
    """
    data = bytearray()
    want = size + 1  # one more: a file that grew since fstat is read on, up to the limit
    while len(data) <= limit:
        asked = min(want, limit + 1 - len(data))
        chunk = fh.read(asked)
        data += chunk
        if len(chunk) < asked:  # a short read of a regular file: its end
            break
        want = 1 << 20
    return bytes(data)
