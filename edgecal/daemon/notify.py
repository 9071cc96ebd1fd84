"""`Notifier`: the systemd notification protocol (sd_notify), with no dependency.

systemd passes ``NOTIFY_SOCKET`` to a ``Type=notify`` service; the service sends
datagrams such as ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` and ``STOPPING=1`` to
it. Without the variable (not under systemd) every call does nothing. An abstract
socket name starts with ``@``.

>>> Notifier(env={}).send(ready=True)     # not under systemd: a no-op
False
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("edgecal")


class Notifier:
    """Sends sd_notify messages when ``NOTIFY_SOCKET`` is set."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_seconds = int(usec) / 1e6 if watched else None

    @property
    def active(self) -> bool:
        return bool(self.address)

    def send(self, *, ready: bool = False, stopping: bool = False, watchdog: bool = False,
             status: str | None = None) -> bool:
        """Send one notification; True when it was delivered."""
        if not self.active:
            return False
        parts = [f"{key}=1" for key, on in (("READY", ready), ("STOPPING", stopping), ("WATCHDOG", watchdog)) if on]
        if status is not None:
            parts.append("STATUS=" + status.replace("\n", " "))
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)  # a reader that stopped reading must never stall the service
                sock.sendto("\n".join(parts).encode(), self.address)
            return True
        except BlockingIOError:
            return False
        except OSError as err:  # systemd gone or socket not ours: the service must keep running
            log.warning("sd_notify to %s failed: %s", self.address.replace("\0", "@"), err)
            return False
