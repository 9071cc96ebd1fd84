"""`StreamSession`: samples from a `SerialHost` into a `Calibrator`, with provenance.

The session is what ``edgecal stream`` runs: it feeds every intact tensor to the
calibrator through the pipeline every command shares (`edgecal.pipeline`), stops
on a sample count, a duration, a stop event or when the device says it has no more
samples, checkpoints the calibrator's state (keeping the previous one), and summarises
the link (what was used, what was lost and why, the device's own counters) in a
mapping that goes into the table's ``provenance["link"]``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..calibrator import Calibrator
from ..errors import InputError
from ..pipeline import CheckpointPolicy, EmitPolicy, Item, Pipeline, StopPolicy
from ..table import CalibrationTable
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
    table: CalibrationTable | None = None  # the table the session's emit policy made, if any


class StreamSession:
    """Feeds a calibrator from a device, through an `edgecal.pipeline.Pipeline`.

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
    state : path, optional
        Checkpoint the calibrator's state here every ``checkpoint_every`` seconds and at the end
        (atomically, the previous checkpoint kept as ``<state>.prev``).
    emit : EmitPolicy, optional
        The table written at the end (default: none; `StreamResult.table` holds it).
    max_loss : float
        Loss rate (discarded / (used + discarded) tensors) above which a warning is logged.
    """

    def __init__(self, source: SerialHost, calibrator: Calibrator, *, tensors: Sequence[str] | None = None,
                 samples: int | None = None, duration: float | None = None, stop: threading.Event | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 on_tensor: Callable[[ReceivedTensor], None] | None = None,
                 state: str | os.PathLike[str] | None = None, checkpoint_every: float = 30.0,
                 emit: EmitPolicy | None = None, max_loss: float = 0.01) -> None:
        if source.device is None:
            raise InputError("StreamSession needs an opened SerialHost")
        if samples is not None and samples < 1 or duration is not None and duration <= 0:
            raise InputError(f"samples {samples} / duration {duration}: expected a positive count / number of seconds")
        self.source, self.calibrator, self.tensors, self.samples = source, calibrator, tensors, samples
        self.stop_event = stop or threading.Event()
        self.on_progress, self.on_tensor, self.max_loss = on_progress, on_tensor, max_loss
        self.pipeline = Pipeline(calibrator, CheckpointPolicy(state, checkpoint_every),
                                 StopPolicy(self.stop_event, duration=duration), emit or EmitPolicy(at_end=False),
                                 on_fold=self._folded)
        self.reason = ""
        self._backlog: list[ReceivedSample] = []
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
        src.sample_limit = self.samples
        try:
            src.start(self.tensors)
            ended = self.pipeline.feed(self._polled())
            self.reason = self.reason if ended == "exhausted" else ended
        except StopRequested:
            self.reason = "stopped"
        self._backlog += src.stop()  # e.g. the intact tensors of a last, partial sample
        while self._backlog:
            self.pipeline.fold(None, _arrays(self._backlog[0]))
        if self.on_progress is not None:
            self.on_progress(self.progress())  # the final figures
        provenance = self.provenance(self.reason)
        self._warn_loss(provenance)
        table = self.pipeline.finish(self.reason).table
        totals = src.totals()
        return StreamResult(self.reason, totals["samples_complete"], totals["used"], provenance, table)

    def _polled(self) -> Iterator[Item]:
        """The device's samples as pipeline inputs (None while none arrives), until it says it is done."""
        last_progress = time.monotonic()
        while True:
            try:
                self._backlog += self.source.poll(0.05)
            except StopRequested:
                self.reason = "stopped"
                return
            except LinkError as err:  # gone, or back with another model: keep what arrived intact
                if not self.source.totals()["used"]:
                    raise
                self.reason = "device-gone" if isinstance(err, DeviceGone) else "link-error"
                log.warning("%s; the table is made from what arrived before", err)
                return
            batch: list[Item] = [(None, _arrays(sample)) for sample in self._backlog]
            yield from batch or [None]  # None: nothing arrived, the pipeline still checks its stop policy
            self.reason = self._done()
            if self.reason:
                return
            now = time.monotonic()
            if self.on_progress is not None and now - last_progress >= 0.2:
                self.on_progress(self.progress())
                last_progress = now

    def _folded(self, key: Any, used: bool) -> None:
        """The pipeline folded the oldest received sample in: hand its tensors to ``on_tensor``."""
        sample = self._backlog.pop(0)
        if self.on_tensor is not None:
            for t in sample.tensors():
                self.on_tensor(t)

    def _done(self) -> str:
        if self.stop_event.is_set():
            return "stopped"
        if self.samples is not None and self.source.totals()["samples_complete"] >= self.samples:
            return "samples"
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


def _arrays(sample: ReceivedSample) -> dict[str, np.ndarray]:
    return {t.name: t.array for t in sample.tensors()}
