"""`SocketSource`: applications on the same machine push tensors to a local Unix socket.

The source listens on an ``AF_UNIX`` stream socket at ``path`` (mode 0660: the
daemon's user and group may connect, nobody else; there is no network listener). A
stale socket file left by a crash is removed at `SocketSource.open`; a live one (another
process answers on it) or a file that is not a socket is refused. Several applications
may be connected at once, up to ``max_clients``; further connections wait in the listen
backlog until one closes (a client that cannot send within its timeout gives the sample up).
A connection that sends nothing for ``idle_timeout`` seconds is closed and counted
(``clients_idle_closed``), so silent clients cannot hold the slots; `SocketClient`
notices the close and connects again on its next push.

What an application sends (a subset of firmware_interface/PROTOCOL.md; no handshake,
no credits, nothing is sent back; `SocketClient` / `push_sample` do all of it):

1. Frames as in PROTOCOL.md section 1: ``COBS(24-byte header, payload, CRC-32) 0x00``,
   protocol version 1, sequence numbers counting the connection's frames from 0, payloads
   of at most ``max_payload`` bytes.
2. A tensor table: one ``TENSOR_INFO`` frame per tensor (section 3.2), tensor ids
   0, 1, ..., n-1, header ``total`` = the tensor's size in bytes. A ``TENSOR_INFO`` for
   tensor id 0 starts a new table, so shapes may change between samples.
3. Each sample: every tensor of the table in id order as ``TENSOR_CHUNK`` frames (header
   sample id, tensor id, byte offset, total; offsets contiguous from 0, the last one
   flagged ``LAST``), then one ``SAMPLE_END`` (sample id; payload u16 count of tensors).
   Sample ids go up by one per sample within a connection.

Anything damaged is counted and dropped, never delivered: a tensor with a missing,
corrupt or out-of-order chunk is discarded whole (the sample keeps its intact tensors),
frames of other types are ignored. A connection that announces a tensor above
``max_tensor_bytes`` or a table above ``max_sample_bytes``, or sends chunks before a
complete table, is closed with an error logged. Memory is bounded per connection (one
frame decoder, one sample's buffers) and the source is `LIVE`: when the daemon is
behind it drops whole samples, the applications never wait for it.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import stat
import struct
import threading
import time
from collections import deque
from typing import Any

from ..config import Field
from ..errors import InputError
from ..link.frames import MIN_PAYLOAD, PAYLOAD_LIMIT
from .base import Sample, Source, SourceError, register_source
from .client import SocketClient, push_sample
from .connection import TALLIES, ClientError, Connection, Limits
from .fields import Counters, at_least, between, checked_config, non_empty

log = logging.getLogger("edgecal")
MODE = 0o660
RECV_BYTES = 1 << 16
CHECK_EVERY = 1.0  # seconds between checks that the socket file is still ours
LINK_COUNTERS = ("frames_ok", "frames_corrupt", "frames_foreign", "frames_missing", "frames_duplicate", "resync_bytes")
__all__ = ["SocketClient", "SocketSource", "push_sample"]


@register_source
class SocketSource(Source):
    """Samples pushed by local applications over a Unix socket.

    Parameters (keys of a ``[[source]]`` table with ``kind = "socket"``)
    ----------
    path : str
        Where the socket is created (its folder must exist, e.g. systemd's RuntimeDirectory).
    max_clients : int
        Connections served at once (default 4; others wait); each holds at most one sample's buffers.
    max_payload : int
        Largest frame payload accepted (128..16384, default 16384).
    max_tensor_bytes, max_sample_bytes : int
        Largest tensor / sample a connection may announce (defaults 16 MiB / 64 MiB).
    idle_timeout : float
        Seconds a connection may send nothing before it is closed (default 30), freeing its slot.
    """

    KIND = "socket"
    FIELDS = {
        "path": Field(str, check=non_empty),
        "max_clients": Field(int, 4, between(1, 64)),
        "max_payload": Field(int, PAYLOAD_LIMIT, between(MIN_PAYLOAD, PAYLOAD_LIMIT)),
        "max_tensor_bytes": Field(int, 16 << 20, at_least(1)),
        "max_sample_bytes": Field(int, 64 << 20, at_least(1)),
        "idle_timeout": Field(float, 30.0, between(0.01, 86400.0)),
    }
    LIVE = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**checked_config(self.KIND, self.FIELDS, config))
        c = self.config
        self.path = c["path"]
        self.limits = Limits(c["max_payload"], c["max_tensor_bytes"], c["max_sample_bytes"])
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._inode: tuple[int, int] | None = None
        self._clients: dict[int, tuple[socket.socket, Connection]] = {}
        self._heard: dict[int, float] = {}  # fd -> when it last sent anything
        self._next_idle = 0.0
        self._last_idle_log = -1e9
        self._ready: deque[dict] = deque()
        self._next_check = 0.0
        self._last_full_log = -1e9
        self._closed = Counters(*TALLIES, *LINK_COUNTERS)  # totals of connections that ended
        self._events = Counters("clients_accepted", "client_errors", "clients_idle_closed", "reopens")
        self._lock = threading.Lock()
        self._opened = False

    # -- Source ----------------------------------------------------------------------------------
    def open(self) -> None:
        self.close()
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            os.chmod(self.path, MODE)  # before listen(): nobody can connect in between
            sock.listen(16)  # connections over max_clients wait here (and their pushes time out)
            st = os.stat(self.path)
        except OSError as err:
            sock.close()
            if err.errno in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR):
                raise InputError(f"socket {self.path}: cannot create it ({err.strerror}); expected a writable "
                                 "folder (e.g. systemd RuntimeDirectory=edgecal)") from err
            raise SourceError(f"socket {self.path}: cannot listen ({err.strerror or err})") from err
        sock.setblocking(False)
        self._listener, self._inode = sock, (st.st_dev, st.st_ino)
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._next_check = time.monotonic() + CHECK_EVERY
        if self._opened:
            self._events.add("reopens")
        self._opened = True
        log.info("socket %s: listening", self.path)

    def read(self, timeout: float) -> Sample | None:
        if self._selector is None:
            raise SourceError(f"socket {self.path}: read() before open()")
        deadline = time.monotonic() + timeout
        while not self._ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            now = time.monotonic()
            if now >= self._next_check:
                self._check_file()
            if now >= self._next_idle:
                self._close_idle(now)
            for key, _ in self._selector.select(max(0.0, min(remaining, CHECK_EVERY, self._next_idle - now))):
                if key.data is None:
                    self._accept()
                else:
                    self._receive(key.data)
        return Sample(self._ready.popleft())

    def close(self) -> None:
        for fd in list(self._clients):
            self._drop(fd, deliver=False)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            if self._inode is not None and self._same_file():
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
        self._inode = None
        self._ready.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            totals = self._closed.snapshot()
            for _, conn in self._clients.values():
                for k, v in conn.counters().items():
                    totals[k] += v
            active = len(self._clients)
        return {**totals, **self._events.snapshot(), "clients_active": active}

    # -- the socket file ---------------------------------------------------------------------------
    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise InputError(f"socket {self.path}: a file that is not a socket is in the way; "
                             "expected a free path (remove the file or choose another path)")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # nobody listens: left over from a crash
            log.info("socket %s: removed a stale socket file", self.path)
            return
        finally:
            probe.close()
        raise InputError(f"socket {self.path}: another process listens on it; expected a free path "
                         "(is another edgecal daemon running?)")

    def _same_file(self) -> bool:
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._inode

    def _check_file(self) -> None:
        self._next_check = time.monotonic() + CHECK_EVERY
        if not self._same_file():
            self._inode = None  # not ours any more: leave it alone
            raise SourceError(f"socket {self.path}: the socket file was removed or replaced; listening again")

    # -- connections ---------------------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:  # EMFILE and friends: the client will retry
            log.error("socket %s: cannot accept a connection (%s)", self.path, err.strerror or err)
            return
        sock.setblocking(False)
        conn = Connection(_peer(sock), self.limits)
        with self._lock:
            self._clients[sock.fileno()] = (sock, conn)
        self._heard[sock.fileno()] = time.monotonic()
        self._next_idle = min(self._next_idle, time.monotonic() + self.config["idle_timeout"])
        self._selector.register(sock, selectors.EVENT_READ, sock.fileno())
        self._events.add("clients_accepted")
        log.debug("socket %s: %s connected", self.path, conn.peer)
        if len(self._clients) >= self.config["max_clients"]:
            self._selector.unregister(self._listener)  # more connections wait in the backlog
            self._log_full()

    def _receive(self, fd: int) -> None:
        sock, conn = self._clients[fd]
        try:
            data = sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(fd, deliver=True)
            return
        self._heard[fd] = time.monotonic()
        try:
            self._ready.extend(conn.feed(data))
        except ClientError as err:
            self._events.add("client_errors")
            log.error("socket %s: %s: %s; closing the connection", self.path, conn.peer, err)
            self._drop(fd, deliver=True)  # what arrived intact before is good

    def _drop(self, fd: int, deliver: bool) -> None:
        sock, conn = self._clients[fd]
        last = conn.finish()
        if deliver:
            self._ready.extend(last)
        full = len(self._clients) >= self.config["max_clients"]
        if self._selector is not None:
            self._selector.unregister(sock)
            if full and self._listener is not None:
                self._selector.register(self._listener, selectors.EVENT_READ, None)
        sock.close()
        self._heard.pop(fd, None)
        with self._lock:
            del self._clients[fd]
            for k, v in conn.counters().items():
                self._closed.add(k, v)
        log.debug("socket %s: %s disconnected", self.path, conn.peer)

    def _close_idle(self, now: float) -> None:
        """Close connections silent for ``idle_timeout`` seconds; their slots go to waiting clients."""
        idle = self.config["idle_timeout"]
        silent = [fd for fd, heard in self._heard.items() if now - heard >= idle]
        for fd in silent:
            self._events.add("clients_idle_closed")
            self._drop(fd, deliver=True)
        self._next_idle = min(self._heard.values(), default=now) + idle
        if silent and now - self._last_idle_log > 10.0:
            self._last_idle_log = now
            log.warning("socket %s: closed %d connections that sent nothing for %.1f s (idle_timeout)",
                        self.path, len(silent), idle)

    def _log_full(self) -> None:
        now = time.monotonic()
        if now - self._last_full_log > 10.0:
            self._last_full_log = now
            log.warning("socket %s: %d clients are connected (max_clients); new connections wait until one "
                        "closes", self.path, len(self._clients))


def _peer(sock: socket.socket) -> str:
    """The connecting process as logs name it: 'pid N (uid U)'."""
    try:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except (OSError, AttributeError):
        return "a client"
    return f"pid {pid} (uid {uid})"
