"""Opening a port by URL, with errors that say what to do.

Any URL `serial.serial_for_url` accepts works: ``/dev/ttyACM0``,
``/dev/serial/by-id/...``, ``socket://host:port``, ``rfc2217://host:port``,
``loop://``. Errors become `PortError` with one line naming the port and, when it
is a permissions problem, the dialout group.
"""

from __future__ import annotations

import errno
import re
import select
from typing import Any

import serial

from .errors import PortError

WRITE_TIMEOUT = 2.0  # a device that stops reading must not hang the host


def _errno(err: BaseException) -> int | None:
    for e in (err, err.__cause__, err.__context__):
        if isinstance(e, OSError) and e.errno:
            return e.errno
    match = re.search(r"\[Errno (\d+)\]", str(err))
    return int(match.group(1)) if match else None


def port_error(url: str, err: BaseException) -> PortError:
    """A `PortError` for a failure to open or use ``url``."""
    code = _errno(err)
    if code in (errno.EACCES, errno.EPERM):
        return PortError(
            f"cannot open {url}: permission denied; add your user to the dialout group "
            "(sudo usermod -aG dialout $USER, then log in again) or run with access to the port"
        )
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return PortError(f"cannot open {url}: no such device; check the cable and the name (ls /dev/serial/by-id/)")
    if code == errno.EBUSY:
        return PortError(f"cannot open {url}: the port is busy; close the program that holds it")
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return PortError(f"cannot open {url}: {text}")


def open_port(url: str, baudrate: int, read_timeout: float) -> Any:
    """Open ``url`` at ``baudrate`` (8N1, raw) with a read timeout; `PortError` on failure."""
    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=read_timeout, write_timeout=WRITE_TIMEOUT)
    except (serial.SerialException, OSError, ValueError) as err:
        raise port_error(url, err) from err


def read_available(port: Any, limit: int) -> bytes:
    """What the port has now, up to ``limit`` bytes, waiting at most its read timeout for the first one.

    pyserial's ``read(n)`` keeps reading until it has n bytes and, when the device hangs
    up meanwhile, raises and loses what it had read; this never asks for more than is
    there. Sockets report only "readable" as their waiting count, so they are read with
    one ``recv`` instead.
    """
    sock = getattr(port, "_socket", None)
    if sock is not None:
        ready, _, _ = select.select([sock], [], [], port.timeout)
        if not ready:
            return b""
        data = sock.recv(limit)
        if not data:
            raise serial.SerialException("socket disconnected")
        return data
    waiting = port.in_waiting
    return port.read(min(max(waiting, 1), limit))
