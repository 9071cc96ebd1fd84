"""`SerialLinkSource`: a device running firmware_interface, over a serial port or any pyserial URL.

An adapter over `edgecal.link.SerialHost` (handshake, credits, reassembly into
samples, loss accounting, device resets): each sample the host emits becomes one
`Sample`. A sample whose tensors were partly lost on the link is delivered with the
tensors that arrived intact (as ``edgecal stream`` uses them); the lost ones are
counted in `SerialLinkSource.stats`.

The link reconnects by itself for ``reconnect_timeout`` seconds; past that the source
raises `SourceError` and the daemon reopens it with backoff. A device that comes back
running another model (other model hash or tensor table) is refused with
`edgecal.errors.InputError`: its activations must not fold into this model's
histograms. When the device says it has no more samples (a FINAL STATS), the source
raises `SourceExhausted`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from ..config import Field
from ..errors import InputError
from ..link import LinkError, ProtocolVersionError, ReceivedSample, SerialHost, StopRequested
from ..link.frames import MIN_PAYLOAD, PAYLOAD_LIMIT
from .base import Sample, Source, SourceError, SourceExhausted, register_source
from .fields import at_least, between, checked_config, names, non_empty, non_negative, positive

log = logging.getLogger("edgecal")
POLL = 0.05


@register_source
class SerialLinkSource(Source):
    """Samples streamed by a device over the edgecal link protocol.

    Parameters (keys of a ``[[source]]`` table with ``kind = "serial"``)
    ----------
    url : str
        ``/dev/ttyACM0``, ``/dev/serial/by-id/...``, ``socket://host:port``, ... (`serial.serial_for_url`).
    baud : int
        Line speed (default 921600; ignored by USB-CDC and sockets).
    tensors : list of str
        Tensor names to stream (default: every tensor of the device).
    timeout : float
        Seconds to wait for the handshake (default 5).
    reconnect_timeout : float
        Seconds the link itself keeps reopening a vanished port before `SourceError` (default 5).
    idle_timeout : float
        Seconds without a frame while streaming before the handshake is repeated (default 3).
    window : int
        Samples of credit the device may be ahead (default 8).
    max_payload, max_tensor_bytes, max_sample_bytes : int
        Largest frame payload, tensor and total of the streamed tensors the host accepts
        (defaults 16384, 64 MiB and 64 MiB).
    """

    KIND = "serial"
    FIELDS = {
        "url": Field(str, check=non_empty),
        "baud": Field(int, 921600, at_least(1)),
        "tensors": Field(list, [], names),
        "timeout": Field(float, 5.0, positive),
        "reconnect_timeout": Field(float, 5.0, non_negative),
        "idle_timeout": Field(float, 3.0, positive),
        "window": Field(int, 8, between(1, 1 << 16)),
        "max_payload": Field(int, PAYLOAD_LIMIT, between(MIN_PAYLOAD, PAYLOAD_LIMIT)),
        "max_tensor_bytes": Field(int, 64 << 20, at_least(1)),
        "max_sample_bytes": Field(int, 64 << 20, at_least(1)),
    }
    LIVE = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**checked_config(self.KIND, self.FIELDS, config))
        c = self.config
        self.link = SerialHost(c["url"], baudrate=c["baud"], timeout=c["timeout"], max_payload=c["max_payload"],
                                 window=c["window"], reconnect_timeout=c["reconnect_timeout"],
                                 idle_timeout=c["idle_timeout"], max_tensor_bytes=c["max_tensor_bytes"],
                                 max_sample_bytes=c["max_sample_bytes"])
        self._device: tuple[str, list] | None = None  # model hash and tensor table of the first handshake
        self._ready: deque[dict[str, np.ndarray]] = deque()
        self._error: SourceError | None = None
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {}
        self._counts = {"samples": 0, "samples_partial": 0, "reopens": 0}

    def open(self) -> None:
        url = self.config["url"]
        self._error = None
        try:
            info = self.link.open()
            self._check_device(info.hello.model_hash, info.tensors)
            self.link.start(self.config["tensors"] or None)
        except ProtocolVersionError:
            self.link.close()
            raise
        except (LinkError, StopRequested) as err:  # port missing, no answer yet, lost during the handshake
            self.link.close()
            raise SourceError(str(err) if url in str(err) else f"{url}: {err}") from err
        except InputError:
            self.link.close()
            raise
        self._update_stats()

    def read(self, timeout: float) -> Sample | None:
        deadline = time.monotonic() + timeout
        while not self._ready:
            if self._error is not None:
                err, self._error = self._error, None
                raise err
            if self.link.finished:
                raise SourceExhausted(f"{self.config['url']}: the device has no more samples")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._update_stats()
                return None
            self._poll(min(POLL, remaining))
        sample = Sample(self._ready.popleft())
        self._update_stats()
        return sample

    def close(self) -> None:
        try:
            self.link.stop()  # a partial last sample it closes is not read any more
        except LinkError as err:
            log.warning("%s: %s", self.config["url"], err)
        self.link.close()
        self._update_stats()

    def model_hash(self) -> str | None:
        return self._device[0] if self._device else None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._snapshot)

    # -- internals ------------------------------------------------------------------------------------
    def _check_device(self, model_hash: str, tensors: list) -> None:
        if self._device is None:
            self._device = (model_hash, tensors)
            return
        if self._device != (model_hash, tensors):
            raise InputError(f"{self.config['url']}: the device now runs model {model_hash} with "
                             f"{len(tensors)} tensors; expected model {self._device[0]} as when this source "
                             "started (restart with a new state to calibrate the new model)")
        self._counts["reopens"] += 1

    def _poll(self, timeout: float) -> None:
        try:
            samples = self.link.poll(timeout)  # what arrived intact comes before an error
        except (LinkError, StopRequested) as err:
            self._error = SourceError(str(err))
            self.link.close()
            return
        for s in samples:
            self._deliver(s)

    def _deliver(self, sample: ReceivedSample) -> None:
        self._counts["samples"] += 1
        self._counts["samples_partial"] += not sample.complete
        self._ready.append(sample.arrays)

    def _update_stats(self) -> None:
        totals = self.link.totals()
        snap: dict[str, Any] = {
            **self._counts, "tensors_used": totals["used"], "tensors_discarded": totals["discarded"],
            "tensors_unused": totals["unused"], **self.link.link_counters(), "device": self.link.device_counters(),
        }
        with self._lock:
            self._snapshot = snap
