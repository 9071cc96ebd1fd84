"""`SerialHost`: the host end of the link, yielding whole samples from a device.

It composes a `DeviceLink` (port, handshake, control frames, table push) with one
`DeviceRun` at a time (an explicit state machine per streaming run). It starts runs,
keeps credits flowing, notices device resets, silent devices and vanished ports and
recovers from all three without losing what was received, and stops the device
cleanly. Library code: it logs, never prints. Typical use (it needs a device, so it is
not a doctest)::

    with SerialHost("socket://127.0.0.1:5555") as host:
        info = host.open()                # handshake: info.hello, info.tensors
        host.start(["conv1_relu"])        # default: every tensor
        for sample in host:               # until the device has no more samples
            for name, array in sample.arrays.items():
                calibrator.observe(name, array)
        host.stop()
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Iterator, Sequence

from ..errors import InputError
from .assembler import ID_MASK, ReceivedSample, id_distance
from .control import DeviceInfo, DeviceLink, StopRequested
from .errors import DeviceGone, HandshakeTimeout, LinkError, PortError
from .frames import (ACK, CREDIT, F_FINAL, PAYLOAD_LIMIT, SAMPLE_END, START, STATS, STOP, TENSOR_CHUNK, Frame,
                     credit_payload, parse_ack, start_payload, tensor_mask)
from .run import DeviceRun, RunEvent, RunState
from .transport import Disconnected

log = logging.getLogger("edgecal")
RUN_TOTALS = ("used", "discarded", "unused", "samples_complete", "bad_chunks")
__all__ = ["DeviceInfo", "SerialHost", "StopRequested"]


class SerialHost:
    """Samples streamed by a device running firmware_interface.

    Parameters
    ----------
    url : str
        Anything `serial.serial_for_url` opens: ``/dev/ttyACM0``, ``socket://host:port``, ...
    baudrate : int
        Line speed (ignored by USB-CDC, sockets and ptys).
    timeout : float
        Seconds to wait for the handshake before `HandshakeTimeout`.
    max_payload : int
        Largest frame payload the host accepts (the device may choose less).
    window : int
        Samples of credit the device may be ahead of the host.
    reconnect_timeout : float
        Seconds to keep reopening a vanished port before `DeviceGone`.
    idle_timeout : float
        Seconds without any frame while streaming before the handshake is repeated.
    max_tensor_bytes : int
        Largest tensor the host agrees to reassemble (the table comes from the device).
    max_sample_bytes : int
        Largest total of the selected tensors: the host holds one buffer per selected tensor,
        allocated when a run starts (default 64 MiB, sized for a 512 MB board).
    stop : threading.Event, optional
        Set it to make waits end promptly with `StopRequested`.
    list_timeout, table_timeout, start_timeout : float
        Seconds to wait for the tensor table (per LIST_REQ, 4 requests), for a TABLE_ACK
        (per try, 3 tries) and for the START's ACK.
    """

    def __init__(self, url: str, *, baudrate: int = 921600, timeout: float = 5.0, max_payload: int = PAYLOAD_LIMIT,
                 window: int = 8, reconnect_timeout: float = 30.0, idle_timeout: float = 3.0,
                 max_tensor_bytes: int = 64 << 20, max_sample_bytes: int = 64 << 20,
                 stop: threading.Event | None = None, list_timeout: float = 1.0, table_timeout: float = 2.0,
                 start_timeout: float = 2.0) -> None:
        self.link = DeviceLink(url, baudrate=baudrate, timeout=timeout, max_payload=max_payload,
                               max_tensor_bytes=max_tensor_bytes, stop=stop, list_timeout=list_timeout,
                               table_timeout=table_timeout)
        for ftype, handler in ((TENSOR_CHUNK, self._on_sample_frame), (SAMPLE_END, self._on_sample_frame),
                               (ACK, self._on_ack), (STATS, self._on_stats)):
            self.link.subscribe(ftype, handler)
        self.link.on_reset = self._on_reset
        self.window, self.reconnect_timeout, self.idle_timeout = max(1, window), reconnect_timeout, idle_timeout
        self.max_sample_bytes, self.start_timeout = max_sample_bytes, start_timeout
        self.run: DeviceRun | None = None
        self.finished = False  # the device said it has no more samples (FINAL STATS)
        self.sample_limit: int | None = None  # complete samples wanted in all; later tensors are unused
        self._run_id = int.from_bytes(os.urandom(2), "little")
        self._selected: list[str] | None = None
        self._need_restart = False
        self._resume: tuple[int | None, int, int] | None = None  # boot id, next sample id, credit left
        self._out: list[ReceivedSample] = []
        self._deferred: Exception | None = None
        self._totals = dict.fromkeys(RUN_TOTALS, 0)

    # -- the link's side ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.link.url

    @property
    def baudrate(self) -> int:
        return self.link.baudrate

    @property
    def timeout(self) -> float:
        return self.link.timeout

    @property
    def device(self) -> DeviceInfo | None:
        """The device as the last handshake described it (None before `open`)."""
        return self.link.device

    @property
    def events(self) -> dict[str, int]:
        """Resets, reconnects, stalls, malformed frames, device logs and errors so far."""
        return self.link.events

    @property
    def bytes_read(self) -> int:
        return self.link.bytes_read

    def open(self) -> DeviceInfo:
        """Open the port and perform the handshake; returns the device's description."""
        return self.link.open()

    def close(self) -> None:
        """Close the port (the run, if any, is not stopped: call `stop` first)."""
        self.link.close()

    def __enter__(self) -> SerialHost:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def push_table(self, data: bytes) -> tuple[int, int]:
        """Send an ``.ecal`` table to the device; returns (bytes, CRC-32) the device acknowledged."""
        return self.link.push_table(data)

    def link_counters(self) -> dict[str, int]:
        """Frame-level counters and link events (see `DeviceLink.link_counters`)."""
        return self.link.link_counters()

    def device_counters(self) -> dict[str, int]:
        """The device's STATS counters, summed over its boots."""
        return self.link.device_counters()

    # -- runs ----------------------------------------------------------------------------------
    def start(self, tensors: Sequence[str] | None = None) -> list[str]:
        """Start streaming ``tensors`` (names; default all); returns the names selected."""
        if self.device is None:
            raise LinkError("start() before open()")
        by_name = {t.name: t for t in self.device.tensors}
        if tensors is None:
            chosen = [t for t in self.device.tensors if t.nbytes > 0]
        else:
            unknown = [n for n in tensors if n not in by_name]
            if unknown:
                raise InputError(f"device has no tensor {unknown[0]!r}; it has: {', '.join(by_name)}")
            chosen = [by_name[n] for n in dict.fromkeys(tensors)]
        if not chosen:
            raise InputError("no tensor to stream: none selected, or every selected tensor is empty")
        declared = sum(t.nbytes for t in chosen)
        if declared > self.max_sample_bytes:
            raise InputError(f"{self.url}: the {len(chosen)} selected tensors declare {declared} bytes per sample; "
                             f"this host allows at most {self.max_sample_bytes} (raise max_sample_bytes, or select "
                             "fewer tensors)")
        self._selected = [t.name for t in chosen]
        try:
            self._start_run([t.id for t in chosen])
        except Disconnected as err:
            self._reconnect(err)
        return list(self._selected)

    def poll(self, timeout: float = 0.05) -> list[ReceivedSample]:
        """Samples completed within about ``timeout`` seconds (returns early when there are some).

        Samples completed before an error are returned first; the error is raised by the next call.
        """
        if self._deferred is not None:
            err, self._deferred = self._deferred, None
            raise err
        try:
            self._poll_frames(timeout)
        except (LinkError, StopRequested) as err:
            if not self._out:
                raise
            self._deferred = err  # counted as used: they must reach the caller
        out, self._out = self._out, []
        return out

    def __iter__(self) -> Iterator[ReceivedSample]:
        while not self.finished and not self.link.stop_event.is_set():
            yield from self.poll()

    def stop(self) -> list[ReceivedSample]:
        """Stop the device and close the run; returns the samples that closes (e.g. a partial last one).

        Tensors still arriving are counted as unused, and so are those the STOP cut off.
        """
        run = self.run
        if run is None:
            return []
        out = self._out + run.on_event(RunEvent.STOP)
        self._out = []
        event, end = RunEvent.GAVE_UP, None
        if self.link.is_open:
            self.link.acks.pop(STOP, None)
            try:
                self.link.wait(lambda: STOP in self.link.acks, 1.5, lambda: self.link.send(STOP), 0.25,
                               interruptible=False)
                event, end = RunEvent.STOP_ACKED, self.link.acks[STOP][1]
                self.link.pump()  # the STATS that follows the ACK
            except (TimeoutError, Disconnected):
                log.warning("%s: the device did not acknowledge STOP; counting its last samples from what arrived",
                            self.url)
        self._close_run(event, end)
        out, self._out = out + self._out, []
        return out

    def totals(self) -> dict[str, int]:
        """Tensor accounting over every run so far (including the current one)."""
        t = dict(self._totals)
        if self.run is not None:
            for k in RUN_TOTALS:
                t[k] += getattr(self.run.asm, k)
        return t

    # -- frames of a run -----------------------------------------------------------------------
    def _on_sample_frame(self, frame: Frame) -> None:
        if self.run is not None:
            self._out += self.run.on_frame(frame)

    def _on_ack(self, frame: Frame) -> None:
        acked, _, run_id = parse_ack(frame.payload)
        run = self.run
        if acked != START or run is None or run_id != run.run_id or run.state is not RunState.STARTING:
            return
        if self._resume is not None and self._resume[0] == self.link.boot_id:
            lost = id_distance(self._resume[1], frame.sample_id)  # samples sent while we were away
            if 0 < lost <= self._resume[2]:  # the device had no credit for more
                self._totals["discarded"] += lost * len(run.asm.selected)
        self._resume = None
        self._out += run.on_event(RunEvent.ACKED, frame.sample_id)

    def _on_stats(self, frame: Frame) -> None:
        run = self.run
        if run is None or run.state is not RunState.STREAMING:
            return
        run.device_run_samples = self.link.device_stats["run_samples"]
        if frame.flags & F_FINAL:
            self._out += run.on_event(RunEvent.FINAL, frame.sample_id)
            self.finished = True
            log.info("%s: the device has no more samples", self.url)

    def _on_reset(self) -> None:
        if self.run is not None and not self._need_restart:
            log.warning("%s: the device reset (boot id %d); partial tensors are discarded, streaming restarts",
                        self.url, self.link.boot_id)
            self._close_run(RunEvent.LOST)
            self._need_restart = True

    # -- run lifecycle --------------------------------------------------------------------------
    def _start_run(self, ids: list[int]) -> None:
        assert self.device is not None
        self._run_id = (self._run_id + 1) & ID_MASK
        limit = None if self.sample_limit is None else max(0, self.sample_limit - self._totals["samples_complete"])
        run = self.run = DeviceRun(self._run_id, self.device.tensors, ids, self.window, limit)
        self.finished = False
        payload = start_payload(self._run_id, self.window, tensor_mask(ids, len(self.device.tensors)))
        try:
            # a reset right after the ACK retires the run at once: poll() then restarts it
            self.link.wait(lambda: run.state is not RunState.STARTING or self._need_restart, self.start_timeout,
                           lambda: self.link.send(START, payload), min(0.5, self.start_timeout / 4))
        except TimeoutError:
            self.run = None
            raise LinkError(f"{self.url}: the device did not acknowledge START; expected an ACK") from None
        self.link.last_frame = time.monotonic()

    def _poll_frames(self, timeout: float) -> None:
        try:
            if self._need_restart:
                self._restart()
            deadline = time.monotonic() + timeout
            while not self._out and time.monotonic() < deadline:
                self.link.pump()
            self._credit()
            self._watchdog()
        except Disconnected as err:
            self._reconnect(err)

    def _credit(self) -> None:
        run = self.run
        grant = None if run is None else run.credit(time.monotonic())
        if grant is not None:
            assert run is not None
            self.link.send(CREDIT, credit_payload(run.run_id, grant))

    def _watchdog(self) -> None:
        run = self.run
        if run is None or run.state not in (RunState.STREAMING, RunState.FINISHED):
            return
        if time.monotonic() - self.link.last_frame > self.idle_timeout:
            self.events["stalls"] += 1
            log.warning("%s: no frame for %g s; repeating the handshake", self.url, self.idle_timeout)
            self._close_run(RunEvent.LOST)
            self._need_restart = True

    def _restart(self) -> None:
        try:
            info = self.link.handshake(self.timeout)
        except HandshakeTimeout as err:
            raise Disconnected(str(err)) from None
        self._resume_with(info)

    def _resume_with(self, info: DeviceInfo) -> None:
        """After a new handshake: the same model and table, or `LinkError`; then a new run."""
        assert self.device is not None
        old = self.device
        if info.hello.model_hash != old.hello.model_hash or info.tensors != old.tensors:
            raise LinkError(f"{self.url}: the device now runs model {info.hello.model_hash} with other tensors; "
                            f"expected model {old.hello.model_hash} as before the reset")
        self._need_restart = False
        self._start_run([t.id for t in info.tensors if t.name in (self._selected or [])])

    def _reconnect(self, err: Disconnected) -> None:
        self.events["reconnects"] += 1
        self._close_run(RunEvent.LOST)
        self.close()
        log.warning("%s: lost the device (%s); reconnecting for up to %g s", self.url, err, self.reconnect_timeout)
        deadline = time.monotonic() + self.reconnect_timeout
        while True:
            if self.link.stop_event.is_set():
                raise StopRequested()
            if time.monotonic() > deadline:
                raise DeviceGone(f"{self.url}: the device did not come back within {self.reconnect_timeout:g} s")
            try:
                self.link.open_port()
                self._resume_with(self.link.handshake(min(self.timeout, 2.0)))
                log.warning("%s: reconnected; streaming again", self.url)
                return
            except (PortError, HandshakeTimeout, Disconnected, TimeoutError):
                self.close()
                self.link.stop_event.wait(0.2)

    def _close_run(self, event: RunEvent, end: int | None = None) -> None:
        """End the current run with ``event`` (STOP_ACKED, GAVE_UP or LOST) and fold in its totals."""
        run = self.run
        if run is None:
            return
        nxt = run.asm.next_sample_id
        if event is RunEvent.LOST and nxt is not None and run.state is RunState.STREAMING:
            self._resume = (self.link.boot_id, nxt, max(0, run.granted - run.asm.samples_seen))  # if it comes back
        self._out += run.on_event(event, end)
        for k in RUN_TOTALS:
            self._totals[k] += getattr(run.asm, k)
        self.run = None
