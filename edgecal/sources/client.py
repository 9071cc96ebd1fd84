"""`SocketClient` and `push_sample`: how an application hands its tensors to the edgecal daemon.

The application side of `edgecal.sources.socket`: tensors are sent as link-protocol
frames (a tensor table, then each sample's chunks and a SAMPLE_END) over the daemon's
local Unix socket. Pushing never raises because the daemon is missing, busy or gone: it
returns False and the application carries on (the inference must not wait for
calibration). Each socket operation waits at most ``timeout`` seconds. A connection the
daemon closed (its ``idle_timeout``) is noticed before the next push, which connects again. Arrays that
cannot be sent (empty, complex, object, more than 8 dimensions, ...) raise ValueError.

Typical use, inside the application's inference loop::

    from edgecal.sources.socket import SocketClient
    client = SocketClient("/run/edgecal/activations.sock")
    ...
    client.push({"conv1": conv1_out, "fc1": fc1_out})   # True when sent

or, for an occasional sample, ``push_sample(path, arrays)`` (one connection per call).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ..link.frames import (DTYPES, F_LAST, MAX_RANK, MAX_TENSORS, MIN_PAYLOAD, PAYLOAD_LIMIT, SAMPLE_END,
                           TENSOR_CHUNK, TENSOR_INFO, encode_frame)

CODES = {np.dtype(d): code for code, d in DTYPES.items()}
FLUSH_BYTES = 1 << 18


class _Tensor(NamedTuple):
    name: str
    code: int
    shape: tuple[int, ...]
    data: memoryview


def _prepare(arrays: Mapping[str, Any]) -> list[_Tensor]:
    """The tensors of one sample in wire form; ValueError naming the first that cannot be sent."""
    if not arrays or len(arrays) > MAX_TENSORS:
        raise ValueError(f"a sample of {len(arrays)} tensors; expected 1..{MAX_TENSORS}")
    out = []
    for name, value in arrays.items():
        a = np.asarray(value)
        raw = name.encode("utf-8") if isinstance(name, str) else b""
        if not 1 <= len(raw) <= 64 or "\n" in name:
            raise ValueError(f"tensor name {name!r}; expected 1-64 UTF-8 bytes on one line")
        wire = a.dtype.newbyteorder("<")  # the wire is little-endian whatever the host is
        if wire not in CODES:
            known = ", ".join(sorted({np.dtype(d).name for d in DTYPES.values()}))
            raise ValueError(f"tensor {name!r}: dtype {a.dtype} cannot be sent; expected one of {known}")
        if a.size == 0 or a.ndim > MAX_RANK:
            raise ValueError(f"tensor {name!r}: shape {a.shape}; expected at least one element and at most "
                             f"{MAX_RANK} dimensions")
        a = np.ascontiguousarray(a, dtype=wire)
        out.append(_Tensor(name, CODES[wire], tuple(a.shape), a.data.cast("B")))
    return out


def _info_payload(t: _Tensor) -> bytes:
    raw = t.name.encode("utf-8")
    return (struct.pack("<BBH", t.code, len(t.shape), 0) + struct.pack(f"<{len(t.shape)}I", *t.shape)
            + bytes([len(raw)]) + raw)


class SocketClient:
    """A connection to an edgecal socket source that pushes whole samples.

    Parameters
    ----------
    path : str
        The socket the daemon listens on (its ``[[source]] kind = "socket"`` path).
    timeout : float
        Longest wait of one connect or send, in seconds; past it the sample is given up.
    max_payload : int
        Bytes of tensor data per frame; at most the daemon's ``max_payload`` (default both 16384).
    """

    def __init__(self, path: str, *, timeout: float = 1.0, max_payload: int = PAYLOAD_LIMIT) -> None:
        if not MIN_PAYLOAD <= max_payload <= PAYLOAD_LIMIT:
            raise ValueError(f"max_payload {max_payload}; expected {MIN_PAYLOAD}..{PAYLOAD_LIMIT}")
        self.path, self.timeout, self.max_payload = str(path), float(timeout), max_payload
        self.sent = self.failed = 0
        self.last_error: str | None = None
        self._sock: socket.socket | None = None
        self._seq = self._sample_id = 0
        self._table: list[tuple[str, int, tuple[int, ...]]] | None = None
        self._buf = bytearray()

    def push(self, arrays: Mapping[str, Any]) -> bool:
        """Send one sample (name -> array); True when it was handed over whole, False otherwise."""
        tensors = _prepare(arrays)
        if self._sock is not None and _closed_by_peer(self._sock):  # e.g. the daemon's idle_timeout
            self.close()
        if self._sock is None and not self._connect():
            self.failed += 1
            return False
        try:
            signature = [(t.name, t.code, t.shape) for t in tensors]
            if signature != self._table:
                for tid, t in enumerate(tensors):
                    self._frame(TENSOR_INFO, _info_payload(t), tensor_id=tid, total=len(t.data))
                self._table = signature
            for tid, t in enumerate(tensors):
                self._chunks(tid, t)
            self._frame(SAMPLE_END, struct.pack("<H", len(tensors)), sample_id=self._sample_id)
            self._flush()
        except OSError as err:  # timeout, daemon gone: the cut sample is discarded on its side
            self.last_error = f"sending to {self.path}: {err}"
            self.close()
            self.failed += 1
            return False
        self._sample_id = (self._sample_id + 1) & 0xFFFFFFFF
        self.sent += 1
        return True

    def close(self) -> None:
        """Close the connection (the next `push` opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()

    def __enter__(self) -> SocketClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as err:
            sock.close()
            self.last_error = f"connecting to {self.path}: {err.strerror or err}"
            return False
        self._sock, self._seq, self._sample_id, self._table = sock, 0, 0, None
        return True

    def _chunks(self, tid: int, t: _Tensor) -> None:
        size = len(t.data)
        for off in range(0, size, self.max_payload):
            last = off + self.max_payload >= size
            self._frame(TENSOR_CHUNK, t.data[off : off + self.max_payload], sample_id=self._sample_id,
                        tensor_id=tid, offset=off, total=size, flags=F_LAST if last else 0)

    def _frame(self, ftype: int, payload: bytes | memoryview, **fields: int) -> None:
        self._buf += encode_frame(ftype, bytes(payload), seq=self._seq, **fields)
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        if len(self._buf) >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        assert self._sock is not None
        if self._buf:
            self._sock.sendall(self._buf)
            self._buf.clear()


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the daemon closed the connection (it never sends anything: readable means closed)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # with a timeout set, recv would wait for it first, MSG_DONTWAIT or not
    try:
        sock.recv(1, socket.MSG_PEEK)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


def push_sample(path: str, arrays: Mapping[str, Any], *, timeout: float = 1.0) -> bool:
    """Send one sample over a connection of its own; True when it was handed over whole.

    >>> push_sample("/nonexistent/edgecal.sock", {"x": [1.0, 2.0]})
    False
    """
    with SocketClient(path, timeout=timeout) as client:
        return client.push(arrays)
