"""`StreamSession`: samples from a `SerialHost` into a `Calibrator`, with provenance.

The session is what ``edgecal stream`` runs: it feeds every intact tensor to the
calibrator, stops on a sample count, a duration, a stop event or when the device
says it has no more samples, checkpoints the calibrator's state, and summarises
the link (what was used, what was lost and why, the device's own counters) in a
mapping that goes into the table's ``provenance["link"]``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..calibrator import Calibrator
from ..errors import InputError
from .assembler import ReceivedSample, ReceivedTensor
from .control import StopRequested
from .errors import DeviceGone, LinkError
from .frames import PROTOCOL_VERSION
from .host import SerialHost

log = logging.getLogger("edgecal")


@dataclass
class StreamResult:
    """How a session ended and what it saw."""

    reason: str  # "samples", "duration", "stopped", "finished" (device had no more), "device-gone", "link-error"
    samples: int
    tensors_used: int
    provenance: dict[str, Any] = field(default_factory=dict)


class StreamSession:
    """Feeds a calibrator from a device.

    Parameters
    ----------
    source : SerialHost
        An opened host (`SerialHost.open` done).
    calibrator : Calibrator
        Receives every intact tensor; its model hash is set from the device, or must match it.
    tensors : sequence of str, optional
        Tensor names to stream (default: all).
    samples, duration : optional
        Stop after this many complete samples / seconds.
    stop : threading.Event, optional
        Set it (e.g. from a signal handler) to end the session cleanly.
    on_progress : callable, optional
        Called about every 0.2 s with `progress()`.
    on_tensor : callable, optional
        Called with every `ReceivedTensor` after it was observed.
    checkpoint : callable, optional
        Called every ``checkpoint_every`` seconds (e.g. to save the calibrator's state).
    max_loss : float
        Loss rate (discarded / (used + discarded) tensors) above which a warning is logged.
    """

    def __init__(self, source: SerialHost, calibrator: Calibrator, *, tensors: Sequence[str] | None = None,
                 samples: int | None = None, duration: float | None = None, stop: threading.Event | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 on_tensor: Callable[[ReceivedTensor], None] | None = None,
                 checkpoint: Callable[[], None] | None = None, checkpoint_every: float = 30.0,
                 max_loss: float = 0.01) -> None:
        if source.device is None:
            raise InputError("StreamSession needs an opened SerialHost")
        if samples is not None and samples < 1 or duration is not None and duration <= 0:
            raise InputError(f"samples {samples} / duration {duration}: expected a positive count / number of seconds")
        self.source, self.calibrator, self.tensors = source, calibrator, tensors
        self.samples, self.duration, self.stop_event = samples, duration, stop or threading.Event()
        self.on_progress, self.on_tensor, self.checkpoint = on_progress, on_tensor, checkpoint
        self.checkpoint_every, self.max_loss = checkpoint_every, max_loss
        self._start = time.monotonic()
        model = source.device.hello.model_hash
        if calibrator.model_hash is None:
            calibrator.model_hash = model
        elif calibrator.model_hash != model:
            raise InputError(f"the state holds model {calibrator.model_hash}; the device on {source.url} runs "
                             f"model {model}; expected the same model (use another --state)")

    def run(self) -> StreamResult:
        """Stream until a stop condition; always stops the device and closes the run's accounting."""
        src = self.source
        reason = "stopped"
        last_progress = last_checkpoint = time.monotonic()
        src.sample_limit = self.samples
        try:
            src.start(self.tensors)
            while True:
                self._feed(src.poll(0.05))
                reason = self._done()
                if reason:
                    break
                now = time.monotonic()
                if self.on_progress is not None and now - last_progress >= 0.2:
                    self.on_progress(self.progress())
                    last_progress = now
                if self.checkpoint is not None and now - last_checkpoint >= self.checkpoint_every:
                    self.checkpoint()
                    last_checkpoint = now
        except StopRequested:
            reason = "stopped"
        except LinkError as err:  # gone, or back with another model: keep what arrived intact
            if not src.totals()["used"]:
                raise
            reason = "device-gone" if isinstance(err, DeviceGone) else "link-error"
            log.warning("%s; the table is made from what arrived before", err)
        self._feed(src.stop())  # e.g. the intact tensors of a last, partial sample
        if self.on_progress is not None:
            self.on_progress(self.progress())  # the final figures
        provenance = self.provenance(reason)
        self._warn_loss(provenance)
        totals = src.totals()
        return StreamResult(reason, totals["samples_complete"], totals["used"], provenance)

    def _feed(self, samples: list[ReceivedSample]) -> None:
        for sample in samples:
            for t in sample.tensors():
                self.calibrator.observe(t.name, t.array)
                if self.on_tensor is not None:
                    self.on_tensor(t)

    def _done(self) -> str:
        if self.stop_event.is_set():
            return "stopped"
        if self.samples is not None and self.source.totals()["samples_complete"] >= self.samples:
            return "samples"
        if self.duration is not None and time.monotonic() - self._start >= self.duration:
            return "duration"
        if self.source.finished:
            return "finished"
        return ""

    def progress(self) -> dict[str, Any]:
        """Live figures: samples, tensors, bytes/s, frames lost and corrupt, tensors discarded."""
        src = self.source
        totals, links = src.totals(), src.link_counters()
        elapsed = max(time.monotonic() - self._start, 1e-9)
        return {"samples": totals["samples_complete"], "tensors": totals["used"], "discarded": totals["discarded"],
                "bytes_per_s": src.bytes_read / elapsed, "frames_missing": links["frames_missing"],
                "frames_corrupt": links["frames_corrupt"], "elapsed": elapsed}

    def provenance(self, reason: str) -> dict[str, Any]:
        """The ``link`` provenance mapping for the table."""
        src = self.source
        assert src.device is not None
        totals = src.totals()
        seen = totals["used"] + totals["discarded"]
        return {
            "port": src.url, "baud": src.baudrate, "protocol": PROTOCOL_VERSION,
            "firmware": src.device.hello.firmware, "ended": reason,
            "samples": totals["samples_complete"], "tensors_used": totals["used"],
            "tensors_discarded": totals["discarded"], "tensors_unused": totals["unused"],
            "chunks_stray": totals["bad_chunks"], "loss_rate": totals["discarded"] / seen if seen else 0.0,
            **src.link_counters(), "device": src.device_counters(),
        }

    def _warn_loss(self, p: dict[str, Any]) -> None:
        if p["loss_rate"] > self.max_loss:
            log.warning("the link lost %.2f%% of tensors (%d of %d: %d frames missing, %d corrupt); above the "
                        "%.2f%% limit, check the cable, the baud rate and the device's transmit buffer",
                        100 * p["loss_rate"], p["tensors_discarded"], p["tensors_used"] + p["tensors_discarded"],
                        p["frames_missing"], p["frames_corrupt"], 100 * self.max_loss)
