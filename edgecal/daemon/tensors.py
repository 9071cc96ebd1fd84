"""`TensorBudget`: at most ``max_tensors`` histograms, whatever names the sources send.

Every tensor name costs a histogram for as long as the daemon runs, so the number of
names is bounded by configuration (``[calibrator] max_tensors``), never by the
inputs. Tensors with further names are refused and counted; each newly refused name
is logged once, at most `WARNINGS` lines per `WINDOW` seconds (the rest are counted
and summed up in one line when the window ends). Refused names are remembered up to
`REMEMBER` of them (``tensor_names_refused`` stops there), so even the bookkeeping
of refusals has a bound.

>>> budget = TensorBudget(2, ["a"])
>>> [budget.admit(n) for n in ("a", "b")], budget.add("b"), budget.admit("c"), budget.admit("c")
([True, True], None, False, False)
>>> budget.counts()
{'tensors_refused': 2, 'tensor_names_refused': 1}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("edgecal")
REMEMBER = 1024
WARNINGS = 10
WINDOW = 60.0


class TensorBudget:
    """Which tensor names may get a histogram; counts of those refused."""

    def __init__(self, limit: int, known: Iterable[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.known = set(known)
        self.refused_names: set[str] = set()
        self.refused = 0
        self._clock = clock
        self._window_end = -1.0
        self._warned = 0
        self._suppressed = 0
        if len(self.known) > limit:
            log.warning("the checkpoint holds %d tensors, more than max_tensors = %d; keeping them, refusing new names",
                        len(self.known), limit)

    def admit(self, name: str) -> bool:
        """True when ``name`` has (or may get) a histogram; False counts one refused tensor."""
        if name in self.known or len(self.known) < self.limit:
            return True
        self.refused += 1
        if name not in self.refused_names:
            if len(self.refused_names) < REMEMBER:  # beyond: still refused and counted, no longer named
                self.refused_names.add(name)
                self._warn(name)
        return False

    def add(self, name: str) -> None:
        """``name`` now has a histogram."""
        self.known.add(name)

    def counts(self) -> dict[str, int]:
        return {"tensors_refused": self.refused, "tensor_names_refused": len(self.refused_names)}

    def _warn(self, name: str) -> None:
        now = self._clock()
        if now >= self._window_end:
            if self._suppressed:
                log.warning("%d more tensor names were refused (max_tensors = %d); their warnings were suppressed",
                            self._suppressed, self.limit)
            self._window_end, self._warned, self._suppressed = now + WINDOW, 0, 0
        if self._warned < WARNINGS:
            self._warned += 1
            log.warning("tensor %r refused: %d tensors already have histograms (max_tensors = %d); "
                        "its data is counted as refused", name, len(self.known), self.limit)
        else:
            self._suppressed += 1
