"""`DeviceLink`: talking to a device -- handshake, tensor table, control frames, table push.

It owns the port (a `Transport`) and dispatches every intact frame by its type through
one table. Frames that belong to a streaming run (TENSOR_CHUNK, SAMPLE_END, and the
ACK and STATS that drive a run) go on to the handlers its user registers with
`DeviceLink.subscribe`; a device reset goes to ``on_reset``. `SerialHost` is that user.
Library code: it logs, never prints; every wait is bounded and can be interrupted with
a `threading.Event`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, NamedTuple

from ..errors import StopRequested
from .errors import FrameError, HandshakeTimeout, LinkError, ProtocolVersionError, TablePushError
from .frames import (ACK, ERROR, F_BOOT, F_LAST, HELLO, HELLO_ACK, LIST_REQ, LOG, MAX_TENSORS, MIN_PAYLOAD,
                     PAYLOAD_LIMIT, PROTOCOL_VERSION, STATS, TABLE_ACK, TABLE_CHUNK, TABLE_STATUS, TENSOR_INFO, Frame,
                     HelloAck, TensorInfo, hello_payload, parse_ack, parse_error, parse_hello_ack, parse_log,
                     parse_stats, parse_table_ack, parse_tensor_info)
from .transport import Disconnected, Transport

log = logging.getLogger("edgecal")
LOG_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}


class DeviceInfo(NamedTuple):
    """The device as the handshake describes it."""

    hello: HelloAck
    tensors: list[TensorInfo]


class DeviceLink:
    """The control side of the protocol over one port (see `SerialHost` for the parameters)."""

    def __init__(self, url: str, *, baudrate: int = 921600, timeout: float = 5.0, max_payload: int = PAYLOAD_LIMIT,
                 max_tensor_bytes: int = 64 << 20, stop: threading.Event | None = None, list_timeout: float = 1.0,
                 table_timeout: float = 2.0) -> None:
        if not MIN_PAYLOAD <= max_payload <= PAYLOAD_LIMIT:
            raise LinkError(f"max_payload {max_payload}; expected {MIN_PAYLOAD}..{PAYLOAD_LIMIT}")
        self.url, self.baudrate, self.timeout, self.max_payload = url, int(baudrate), float(timeout), max_payload
        self.max_tensor_bytes = max_tensor_bytes
        self.list_timeout, self.table_timeout = list_timeout, table_timeout  # per request / per push try
        self.stop_event = stop or threading.Event()
        self._link = Transport(url, self.baudrate, max_payload)
        self._hello: HelloAck | None = None
        self.boot_id: int | None = None
        self._infos: dict[int, TensorInfo] = {}
        self.acks: dict[int, tuple[int, int]] = {}  # acknowledged type -> (run id, sample id) of the latest ACK
        self._table_ack: tuple[int, int, int] | None = None
        self.device: DeviceInfo | None = None
        self.last_frame = time.monotonic()
        self._device_totals: dict[str, int] = {}
        self.device_stats: dict[str, int] = {}  # the latest STATS of the current boot
        self.events = {"device_resets": 0, "reconnects": 0, "stalls": 0, "malformed": 0, "device_logs": 0,
                       "device_errors": 0}
        self.on_reset: Callable[[], None] | None = None  # called when the device booted anew
        self._subscribers: dict[int, list[Callable[[Frame], None]]] = {}
        self._dispatch: dict[int, Callable[[Frame], None]] = {
            TENSOR_INFO: self._on_tensor_info, LOG: self._on_log, ERROR: self._on_error, ACK: self._on_ack,
            STATS: self._on_stats, TABLE_ACK: self._on_table_ack,
        }

    def subscribe(self, ftype: int, handler: Callable[[Frame], None]) -> None:
        """Call ``handler`` with every intact, new frame of type ``ftype`` (after the link's own handling)."""
        self._subscribers.setdefault(ftype, []).append(handler)

    def open(self) -> DeviceInfo:
        """Open the port and perform the handshake; returns the device's description."""
        self.open_port()
        try:
            self.device = self.handshake(self.timeout)
        except Disconnected as err:
            self.close()
            raise LinkError(f"{self.url}: the port failed during the handshake ({err})") from None
        except BaseException:
            self.close()
            raise
        return self.device

    def close(self) -> None:
        """Close the port (the run, if any, is not stopped: call `stop` first)."""
        self._link.close()

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        """Whether the port is open."""
        return self._link.is_open

    @property
    def bytes_read(self) -> int:
        """Bytes received from the port so far."""
        return self._link.bytes_read

    def push_table(self, data: bytes) -> tuple[int, int]:
        """Send an ``.ecal`` table to the device; returns (bytes, CRC-32) the device acknowledged."""
        if not self._link.is_open or self.device is None:
            raise LinkError("push_table() needs an open link")
        chunk = max(MIN_PAYLOAD, min(self.device.hello.rx_max_payload or MIN_PAYLOAD, PAYLOAD_LIMIT))
        crc = int.from_bytes(data[-4:], "little")
        try:
            for _ in range(3):
                self._table_ack = None
                for off in range(0, len(data), chunk):
                    last = F_LAST if off + chunk >= len(data) else 0
                    self.send(TABLE_CHUNK, data[off : off + chunk], offset=off, total=len(data), flags=last)
                try:
                    self.wait(lambda: self._table_ack is not None, self.table_timeout, interruptible=False)
                except TimeoutError:
                    continue
                ack = self._table_ack
                if ack is None:
                    continue
                status, size, got = ack
                if status == 0 and (size, got) == (len(data), crc):
                    return size, got
                if status not in (0, 2):
                    raise TablePushError(f"{self.url}: the device refused the table: {TABLE_STATUS.get(status, status)}")
        except Disconnected as err:
            raise TablePushError(f"{self.url}: the link failed while pushing the table ({err})") from None
        raise TablePushError(f"{self.url}: no acknowledgement of the table after 3 tries; expected a TABLE_ACK")

    def device_counters(self) -> dict[str, int]:
        """The device's STATS counters, summed over its boots."""
        keys = set(self._device_totals) | set(self.device_stats)
        return {k: self._device_totals.get(k, 0) + self.device_stats.get(k, 0) for k in sorted(keys)
                if k not in ("uptime_ms", "run_samples")}

    def link_counters(self) -> dict[str, int]:
        """Frame-level counters: intact, missing (sequence gaps), duplicated, corrupt by reason."""
        d = self._link.decoder.counters
        return {"frames_ok": d.frames, "frames_missing": self._link.rx_seq.missing,
                "frames_duplicate": self._link.rx_seq.duplicates, "frames_corrupt": d.corrupt,
                "cobs_errors": d.cobs_errors, "crc_errors": d.crc_errors,
                "header_errors": d.short + d.magic + d.length_errors, "oversize": d.oversize,
                "foreign_version": d.foreign_version, "resync_bytes": d.resync_bytes, **self.events}

    # -- transport ----------------------------------------------------------------------------
    def open_port(self) -> None:
        """(Re)open the port (`PortError` when it cannot be)."""
        self._link.open()

    def send(self, ftype: int, payload: bytes = b"", **fields: int) -> None:
        """Send one frame (`Disconnected` when the port failed)."""
        self._link.send(ftype, payload, **fields)

    def pump(self) -> None:
        """One read (at most a few ms); handles every frame it completes."""
        for frame in self._link.read():
            self.last_frame = time.monotonic()
            try:
                self._handle(frame)
            except FrameError as err:
                self.events["malformed"] += 1
                log.debug("%s: malformed frame ignored: %s", self.url, err)

    def wait(self, done: Callable[[], bool], timeout: float, resend: Callable[[], None] | None = None,
             interval: float = 0.25, interruptible: bool = True) -> None:
        """Pump until ``done()``; TimeoutError after ``timeout`` s; ``resend`` every ``interval`` s.

        The stop event interrupts it (`StopRequested`) unless it is part of stopping itself.
        """
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while not done():
            now = time.monotonic()
            if interruptible and self.stop_event.is_set():
                raise StopRequested()
            if now >= deadline:
                raise TimeoutError()
            if resend is not None and now >= next_send:
                resend()
                next_send = now + interval
            self.pump()

    # -- frames -------------------------------------------------------------------------------
    def _handle(self, frame: Frame) -> None:
        if frame.type == HELLO_ACK:
            self._link.rx_seq.resync()
            self._link.rx_seq.accept(frame.seq)
            self._on_hello_ack(frame)
            return
        if frame.version != PROTOCOL_VERSION or not self._link.rx_seq.accept(frame.seq):
            return
        own = self._dispatch.get(frame.type)
        if own is not None:
            own(frame)
        for handler in self._subscribers.get(frame.type, ()):
            handler(frame)

    def _on_tensor_info(self, frame: Frame) -> None:
        self._infos[frame.tensor_id] = parse_tensor_info(frame)

    def _on_log(self, frame: Frame) -> None:
        level, text = parse_log(frame.payload)
        self.events["device_logs"] += 1
        log.log(LOG_LEVELS.get(level, logging.INFO), "device: %s", text)

    def _on_error(self, frame: Frame) -> None:
        code, text = parse_error(frame.payload)
        self.events["device_errors"] += 1
        log.error("%s: device reported error %d: %s", self.url, code, text)

    def _on_table_ack(self, frame: Frame) -> None:
        self._table_ack = parse_table_ack(frame.payload)

    def _on_hello_ack(self, frame: Frame) -> None:
        """Checks the version and tracks boots; a new boot goes to ``on_reset``."""
        ack = parse_hello_ack(frame.payload)
        if ack.version != PROTOCOL_VERSION or frame.version != PROTOCOL_VERSION:
            raise ProtocolVersionError(
                f"{self.url}: the device speaks edgecal link protocol version {ack.version or frame.version}, "
                f"this edgecal speaks version {PROTOCOL_VERSION}; update the device's firmware_interface or edgecal"
            )
        new_boot = self.boot_id is not None and ack.boot_id != self.boot_id
        if new_boot:  # the device's counters restart with it
            self.events["device_resets"] += 1
            for k, v in self.device_stats.items():
                self._device_totals[k] = self._device_totals.get(k, 0) + v
            self.device_stats = {}
        self.boot_id = ack.boot_id
        if not frame.flags & F_BOOT:
            self._hello = ack
        if (new_boot or frame.flags & F_BOOT) and self.on_reset is not None:
            self.on_reset()

    def _on_ack(self, frame: Frame) -> None:
        acked, _, run_id = parse_ack(frame.payload)
        self.acks[acked] = (run_id, frame.sample_id)

    def _on_stats(self, frame: Frame) -> None:
        self.device_stats = parse_stats(frame.payload)

    # -- handshake ------------------------------------------------------------------------------
    def handshake(self, timeout: float) -> DeviceInfo:
        """HELLO until a HELLO_ACK, then the tensor table; `HandshakeTimeout` after ``timeout`` s."""
        self._hello = None
        try:
            self.wait(lambda: self._hello is not None, timeout,
                      lambda: self.send(HELLO, hello_payload(self.max_payload)), 0.25)
        except TimeoutError:
            raise HandshakeTimeout(
                f"{self.url}: no answer at {self.baudrate} baud within {timeout:g} s; expected a device running "
                "edgecal's firmware_interface (check the port, the baud rate and the firmware)"
            ) from None
        ack = self._hello
        assert ack is not None
        if not MIN_PAYLOAD <= ack.max_payload <= self.max_payload or not 0 < ack.tensor_count <= MAX_TENSORS:
            raise LinkError(f"{self.url}: the device announced max payload {ack.max_payload} and {ack.tensor_count} "
                            f"tensors; expected {MIN_PAYLOAD}..{self.max_payload} and 1..{MAX_TENSORS}")
        self._link.decoder.set_max_payload(ack.max_payload)
        return DeviceInfo(ack, self._list(ack.tensor_count))

    def _list(self, count: int) -> list[TensorInfo]:
        self._infos = {}
        for _ in range(4):
            self.send(LIST_REQ)
            try:
                self.wait(lambda: all(i in self._infos for i in range(count)), self.list_timeout)
                break
            except TimeoutError:
                continue
        else:
            raise LinkError(f"{self.url}: the device described {len(self._infos)} of its {count} tensors "
                            "after 4 requests; expected TENSOR_INFO for each")
        tensors = [self._infos[i] for i in range(count)]
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise LinkError(f"{self.url}: the device lists tensor names twice: {names}")
        for t in tensors:
            if t.nbytes > self.max_tensor_bytes:
                raise LinkError(f"{self.url}: tensor {t.name!r} is {t.nbytes} bytes; this host takes at most "
                                f"{self.max_tensor_bytes} per tensor")
        return tensors
