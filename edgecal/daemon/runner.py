"""`SourceRunner`: one thread per source, feeding a bounded queue.

The thread opens its source, reads samples and puts them on the daemon's queue.
The queue is bounded, so memory is bounded whatever the input rate: a LIVE
source (a device or socket peer that cannot wait) loses whole samples when the
queue is full and counts them; any other source waits (backpressure). A
transient `SourceError` closes the source and reopens it after a backoff that
doubles up to 30 s; an unexpected exception is logged and treated the same way,
so no source can take the daemon down.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from ..sources import Sample, Source, SourceError, SourceExhausted

log = logging.getLogger("edgecal")
MAX_BACKOFF = 30.0


class SourceRunner(threading.Thread):
    """Runs ``source`` until `stop` is called or it is exhausted."""

    def __init__(self, source: Source, out: queue.Queue[tuple[SourceRunner, Sample]], label: str,
                 first_backoff: float = 0.5) -> None:
        super().__init__(name=f"edgecal-source-{label}", daemon=True)
        self.source, self.out, self.label = source, out, label
        self.first_backoff = first_backoff
        self.halt = threading.Event()
        self.exhausted = False
        self.counts = {"delivered": 0, "dropped_queue_full": 0, "restarts": 0, "errors": 0}
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.halt.set()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self.counts)
        try:
            counts.update(self.source.stats())
        except Exception as err:  # a source's counters must never break the status line
            log.warning("source %s: stats failed: %s", self.label, err)
        return counts

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def run(self) -> None:
        backoff = self.first_backoff
        while not self.halt.is_set():
            try:
                self.source.open()
                backoff = self.first_backoff
                self._pump()
            except SourceExhausted:
                self.exhausted = True
                log.info("source %s: exhausted", self.label)
                break
            except Exception as err:
                kind = "lost" if isinstance(err, SourceError) else "failed unexpectedly"
                self._count("errors")
                log.warning("source %s %s (%s); reopening in %.1f s", self.label, kind, err, backoff)
                self._close()
                if self.halt.wait(backoff):
                    break
                backoff = min(2 * backoff, MAX_BACKOFF)
                self._count("restarts")
        self._close()

    def _pump(self) -> None:
        while not self.halt.is_set():
            sample = self.source.read(0.2)
            if sample is None:
                continue
            self._count("delivered")
            if self.source.LIVE:
                try:
                    self.out.put_nowait((self, sample))
                except queue.Full:
                    self._count("dropped_queue_full")
                continue
            while not self.halt.is_set():
                try:
                    self.out.put((self, sample), timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _close(self) -> None:
        try:
            self.source.close()
        except Exception as err:
            log.warning("source %s: close failed: %s", self.label, err)
