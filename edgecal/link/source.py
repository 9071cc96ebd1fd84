"""`SerialSource`: the host end of the link, yielding intact tensors from a device.

On top of `DeviceLink` (handshake, control, table push) it runs streaming runs:
it starts one with sample credits, reassembles tensors, keeps credits flowing,
notices device resets, silent devices and vanished ports and recovers from all
three without losing what was received, and stops the device cleanly. Library
code: it logs, never prints. Typical use (it needs a device, so it is not a doctest)::

    with SerialSource("socket://127.0.0.1:5555") as src:
        info = src.open()                 # handshake: info.hello, info.tensors
        src.start(["conv1_relu"])         # default: every tensor
        for t in src:                     # until the device has no more samples
            calibrator.observe(t.name, t.array)
        src.stop()
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Iterator, Sequence

from ..errors import InputError
from .assembler import ReceivedTensor, SampleAssembler, id_distance
from .control import DeviceInfo, DeviceLink, StopRequested
from .errors import DeviceGone, HandshakeTimeout, LinkError, PortError
from .frames import (CREDIT, F_FINAL, PAYLOAD_LIMIT, START, STOP, Frame, credit_payload, parse_ack, start_payload,
                     tensor_mask)
from .transport import Disconnected

log = logging.getLogger("edgecal")
RUN_TOTALS = ("used", "discarded", "unused", "samples_complete", "bad_chunks")
__all__ = ["DeviceInfo", "SerialSource", "StopRequested"]


class SerialSource(DeviceLink):
    """Tensors streamed by a device running firmware_interface.

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
        super().__init__(url, baudrate=baudrate, timeout=timeout, max_payload=max_payload,
                         max_tensor_bytes=max_tensor_bytes, stop=stop, list_timeout=list_timeout,
                         table_timeout=table_timeout)
        self.window, self.reconnect_timeout, self.idle_timeout = max(1, window), reconnect_timeout, idle_timeout
        self.max_sample_bytes, self.start_timeout = max_sample_bytes, start_timeout
        self._asm: SampleAssembler | None = None
        self._selected: list[str] | None = None
        self._run_id = int.from_bytes(os.urandom(2), "little")
        self._running = self._need_restart = self.finished = False
        self._final_end: int | None = None
        self._granted, self._last_credit = 0, 0.0
        self._run_stats = 0
        self._resume_from: tuple[int | None, int, int] | None = None  # boot id, next sample id, credit left
        self._out: list[ReceivedTensor] = []
        self._deferred: Exception | None = None
        self._totals = dict.fromkeys(RUN_TOTALS, 0)
        self.sample_limit: int | None = None  # complete samples wanted in all; later tensors are unused

    # -- public -----------------------------------------------------------------------------
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

    def poll(self, timeout: float = 0.05) -> list[ReceivedTensor]:
        """Tensors completed within about ``timeout`` seconds (returns early when there are some).

        Tensors completed before an error are returned first; the error is raised by the next call.
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

    def _poll_frames(self, timeout: float) -> None:
        try:
            if self._need_restart:
                self._restart()
            deadline = time.monotonic() + timeout
            while not self._out and time.monotonic() < deadline:
                self._pump()
            self._credit()
            self._watchdog()
        except Disconnected as err:
            self._reconnect(err)

    def __iter__(self) -> Iterator[ReceivedTensor]:
        while not self.finished and not self._stop.is_set():
            yield from self.poll()

    def stop(self) -> None:
        """Stop the device and close the run; tensors still arriving are counted as unused."""
        if self._asm is None:
            return
        self._asm.accepting = False
        end = self._final_end
        if self._link.is_open:
            self._acks.pop(STOP, None)
            try:
                self._wait(lambda: STOP in self._acks, 1.5, lambda: self._send(STOP), 0.25, interruptible=False)
                end = self._acks[STOP][1]
                self._pump()  # the STATS that follows the ACK
            except (TimeoutError, Disconnected):
                log.warning("%s: the device did not acknowledge STOP; counting its last samples from what arrived", self.url)
        self._retire(end, cut=True)

    def totals(self) -> dict[str, int]:
        """Tensor accounting over every run so far (including the current one)."""
        t = dict(self._totals)
        if self._asm is not None:
            for k in RUN_TOTALS:
                t[k] += getattr(self._asm, k)
        return t

    # -- frames of a run -----------------------------------------------------------------------
    def _on_chunk(self, frame: Frame) -> None:
        if self._take_sample_frame(frame):
            self._out += self._asm.on_chunk(frame)  # type: ignore[union-attr]

    def _on_sample_end(self, frame: Frame) -> None:
        if self._take_sample_frame(frame):
            self._asm.on_sample_end(frame)  # type: ignore[union-attr]

    def _take_sample_frame(self, frame: Frame) -> bool:
        """Whether the run takes this frame; a sample before the START's ACK begins the run provisionally.

        The ACK is sent before the run's first sample, so such a frame means the ACK was
        lost: the run's samples count from the first one seen until a repeated ACK names
        the true first id (PROTOCOL.md 4.4).
        """
        if self._asm is None:
            return False
        if self._asm.base is None:
            self._asm.begin_run(frame.sample_id)
        return True

    def _on_hello_ack(self, frame: Frame) -> bool:
        rebooted = super()._on_hello_ack(frame)
        if rebooted and self._asm is not None and not self._need_restart:
            log.warning("%s: the device reset (boot id %d); partial tensors are discarded, streaming restarts",
                        self.url, self._boot_id)
            self._retire(None)
            self._need_restart = True
        return rebooted

    def _on_ack(self, frame: Frame) -> None:
        super()._on_ack(frame)
        acked, _, run_id = parse_ack(frame.payload)
        if acked == START and run_id == self._run_id and self._asm is not None and not self._running:
            if self._resume_from is not None and self._resume_from[0] == self._boot_id:
                lost = id_distance(self._resume_from[1], frame.sample_id)  # samples sent while we were away
                if 0 < lost <= self._resume_from[2]:  # the device had no credit for more
                    self._totals["discarded"] += lost * len(self._asm.selected)
            self._resume_from = None
            self._asm.rebase(frame.sample_id)
            self._running = True
            self._run_stats = 0

    def _on_stats(self, frame: Frame) -> None:
        super()._on_stats(frame)
        if self._running:
            self._run_stats = self._device_stats["run_samples"]
            if frame.flags & F_FINAL and not self.finished:
                self.finished = True
                self._final_end = frame.sample_id
                log.info("%s: the device has no more samples", self.url)

    # -- runs -------------------------------------------------------------------------------
    def _start_run(self, ids: list[int]) -> None:
        assert self.device is not None
        self._run_id = (self._run_id + 1) & 0xFFFFFFFF
        self._asm = SampleAssembler(self.device.tensors, ids)
        if self.sample_limit is not None:
            self._asm.limit = max(0, self.sample_limit - self._totals["samples_complete"])
        self._asm.horizon = self.window
        self._running, self._run_stats, self.finished, self._final_end = False, 0, False, None
        payload = start_payload(self._run_id, self.window, tensor_mask(ids, len(self.device.tensors)))
        try:
            # a reset right after the ACK retires the run at once: poll() then restarts it
            self._wait(lambda: self._running or self._need_restart, self.start_timeout,
                       lambda: self._send(START, payload), min(0.5, self.start_timeout / 4))
        except TimeoutError:
            self._asm = None
            raise LinkError(f"{self.url}: the device did not acknowledge START; expected an ACK") from None
        self._granted, self._last_credit, self._last_frame = self.window, time.monotonic(), time.monotonic()

    def _credit(self) -> None:
        if not self._running or self._asm is None:
            return
        want = max(self._asm.samples_seen, self._run_stats) + self.window
        now = time.monotonic()
        if want > self._granted or now - self._last_credit > 0.2:
            self._send(CREDIT, credit_payload(self._run_id, want))
            self._granted, self._last_credit = max(want, self._granted), now
            self._asm.horizon = self._granted

    def _watchdog(self) -> None:
        if self._running and time.monotonic() - self._last_frame > self.idle_timeout:
            self.events["stalls"] += 1
            log.warning("%s: no frame for %g s; repeating the handshake", self.url, self.idle_timeout)
            self._retire(None)
            self._need_restart = True

    def _restart(self) -> None:
        try:
            info = self._handshake(self.timeout)
        except HandshakeTimeout as err:
            raise Disconnected(str(err)) from None
        self._verify(info)
        self._need_restart = False
        self._start_run([t.id for t in info.tensors if t.name in (self._selected or [])])

    def _verify(self, info: DeviceInfo) -> None:
        assert self.device is not None
        old, new = self.device, info
        if new.hello.model_hash != old.hello.model_hash or new.tensors != old.tensors:
            raise LinkError(f"{self.url}: the device now runs model {new.hello.model_hash} with other tensors; "
                            f"expected model {old.hello.model_hash} as before the reset")

    def _reconnect(self, err: Disconnected) -> None:
        self.events["reconnects"] += 1
        self._retire(None)
        self.close()
        log.warning("%s: lost the device (%s); reconnecting for up to %g s", self.url, err, self.reconnect_timeout)
        deadline = time.monotonic() + self.reconnect_timeout
        while True:
            if self._stop.is_set():
                raise StopRequested()
            if time.monotonic() > deadline:
                raise DeviceGone(f"{self.url}: the device did not come back within {self.reconnect_timeout:g} s")
            try:
                self._open_port()
                info = self._handshake(min(self.timeout, 2.0))
                self._verify(info)
                self._need_restart = False
                self._start_run([t.id for t in info.tensors if t.name in (self._selected or [])])
                log.warning("%s: reconnected; streaming again", self.url)
                return
            except (PortError, HandshakeTimeout, Disconnected, TimeoutError):
                self.close()
                self._stop.wait(0.2)

    def _retire(self, end: int | None, cut: bool = False) -> None:
        """Close the current run's accounting (``cut``: it ended by our STOP, see `SampleAssembler.end_run`)."""
        if self._asm is not None:
            nxt = self._asm.next_sample_id
            if end is None and nxt is not None and self._running:  # reconciled if the same boot comes back
                self._resume_from = (self._boot_id, nxt, max(0, self._granted - self._asm.samples_seen))
            self._asm.end_run(end, cut)
            for k in RUN_TOTALS:
                self._totals[k] += getattr(self._asm, k)
        self._asm = None
        self._running = False
