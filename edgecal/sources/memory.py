"""`MemorySource`: samples held in this process; the template for a new source, and a test double.

A new source is one module like this one: a `Source` subclass with a ``KIND``, its
config keys in ``FIELDS`` (checked by `checked_config`, so a bad key is one line in
Python and in the daemon's TOML alike), and `open` / `read` / `commit` / `stats`.
`register_source` makes it a ``kind`` of the daemon's ``[[source]]`` tables; a
separate distribution names the module in the ``edgecal.sources`` entry-point group.

Samples reach a memory source in two ways: given to the constructor (Python use), or
published under a channel name with `MemorySource.publish`, which a daemon config then
names (``kind = "memory"``, ``channel = "..."``): that is how the daemon runs in one
process in the tests, the way python-can's virtual bus stands in for hardware.

>>> src = MemorySource([{"x": np.ones(3, np.float32)}])
>>> src.open()
>>> sorted(src.read(0.0).arrays), src.stats()
(['x'], {'samples': 1, 'bytes': 12, 'committed': 0})
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from ..config import Field
from .base import Sample, Source, SourceExhausted, register_source
from .fields import Counters, checked_config, non_empty

SampleArrays = Mapping[str, np.ndarray]


@register_source
class MemorySource(Source):
    """Yields given dicts of arrays in order, then reports `SourceExhausted`."""

    KIND = "memory"
    FIELDS: ClassVar[Mapping[str, Field]] = {
        "channel": Field(str, "default", non_empty),  # the name `publish` filled
    }
    LIVE = False  # the samples wait in memory: a full queue makes the reader wait, nothing is dropped
    _channels: ClassVar[dict[str, list[SampleArrays]]] = {}
    _channels_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, samples: Iterable[SampleArrays] | None = None, **config: Any) -> None:
        super().__init__(**checked_config(self.KIND, self.FIELDS, config))
        self._given = None if samples is None else list(samples)
        self._queue: deque[tuple[int, SampleArrays]] = deque()
        self._counters = Counters("samples", "bytes", "committed")

    @classmethod
    def publish(cls, channel: str, samples: Iterable[SampleArrays]) -> None:
        """Make ``samples`` what every memory source on ``channel`` delivers from its next `open`."""
        with cls._channels_lock:
            cls._channels[channel] = list(samples)

    def open(self) -> None:
        """Queue the samples; a reopen starts again after the last one read (none is delivered twice)."""
        if self._given is None:
            with self._channels_lock:
                self._given = list(self._channels.get(self.config["channel"], []))
        done = self._counters["samples"]
        self._queue = deque(enumerate(self._given))
        for _ in range(min(done, len(self._queue))):
            self._queue.popleft()

    def read(self, timeout: float) -> Sample | None:
        """The next sample; `SourceExhausted` after the last (a live source returns None on a quiet ``timeout``)."""
        if not self._queue:
            raise SourceExhausted(f"memory source {self.config['channel']!r}: all {len(self._given or [])} "
                                  "samples delivered")
        index, arrays = self._queue.popleft()
        sample = Sample({name: np.asarray(a) for name, a in arrays.items()}, token=index)
        self._counters.add("samples")
        self._counters.add("bytes", sample.nbytes)
        return sample

    def commit(self, tokens: list[Any]) -> None:
        """Nothing to delete: the samples are counted only (a spool would delete its files here)."""
        self._counters.add("committed", len(tokens))

    def stats(self) -> dict[str, Any]:
        return self._counters.snapshot()
