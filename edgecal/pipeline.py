"""`Pipeline`: feed -> checkpoint -> compute -> save, written once for every way edgecal calibrates.

`edgecal calibrate` (files), `edgecal stream` (a serial link) and the daemon (sources in
threads) run this one loop; they differ only in the small policy objects they give it:

* `CheckpointPolicy`: where the state goes and how often; the state is written atomically and
  the previous one stays as ``<state>.prev``; a failed write raises, or is logged and retried;
* `StopPolicy`: a `threading.Event` (which `stop_on_signals` sets on SIGTERM and SIGINT), a
  sample count, a duration; the end of the inputs always stops a run;
* `EmitPolicy`: which table is written where, every N samples, every T seconds, on request
  and when the run ends.

Inputs are iterables of ``(key, tensors)`` pairs. ``tensors`` maps tensor names to arrays (one
sample), or is a `Calibrator` holding one prepared input (a file's state, all or nothing), or a
callable returning either (read only when the input is new). ``key`` identifies the input: a
key already in the state's ``consumed`` set is skipped, and a new one is recorded, so a run
stopped in the middle and started again never counts an input twice (None: no identity; a
tuple: the key recorded first, then older keys of the same input). None in place of a pair
means "nothing yet": the run checks its policies and goes on.

>>> import numpy as np
>>> from edgecal import Calibrator
>>> run = Pipeline(Calibrator(64)).run([("a", {"x": np.arange(4.0)}), ("a", {"x": np.ones(9)})])
>>> run.reason, run.used, run.skipped
('exhausted', 1, 1)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write
from .calibrator import Calibrator
from .errors import EdgecalError, InputError
from .methods import DEFAULT_METHOD
from .table import CalibrationTable

log = logging.getLogger("edgecal")

Tensors = Mapping[str, np.ndarray] | Calibrator
Key = str | tuple[str, ...] | None
Item = tuple[Key, Tensors | Callable[[], Tensors]] | None


@dataclass
class CheckpointPolicy:
    """Where and how often the state is checkpointed.

    ``path`` None: no checkpoint. ``retry_interval`` None: a failed write raises; a number of
    seconds: it is logged, the old checkpoint stays whole, and the write is tried again then.
    """

    path: str | os.PathLike[str] | None = None
    interval: float = 30.0
    keep_previous: bool = True
    retry_interval: float | None = None

    def write(self, cal: Calibrator) -> None:
        """The state to ``path`` atomically, the one it replaces kept as ``<path>.prev``."""
        assert self.path is not None
        path = Path(self.path)
        data = cal.to_bytes()
        if self.keep_previous:
            keep_previous(path)
        atomic_write(path, data)


@dataclass
class StopPolicy:
    """When a run stops: ``event`` set, ``samples`` inputs folded in, or ``duration`` seconds passed."""

    event: threading.Event = field(default_factory=threading.Event)
    samples: int | None = None
    duration: float | None = None

    def __post_init__(self) -> None:
        if self.samples is not None and self.samples < 1 or self.duration is not None and self.duration <= 0:
            raise InputError(f"stop after {self.samples} samples / {self.duration} s: expected a positive count / "
                             "number of seconds")

    def reason(self, samples: int, elapsed: float) -> str:
        """"stopped", "samples" or "duration" when the run must stop, else ""."""
        if self.event.is_set():
            return "stopped"
        if self.samples is not None and samples >= self.samples:
            return "samples"
        if self.duration is not None and elapsed >= self.duration:
            return "duration"
        return ""


@dataclass
class EmitPolicy:
    """Which table is written where, and when.

    The table is ``compute(cal)`` if given (e.g. a model search), else ``cal.compute(method,
    scheme=scheme, **params)``, with ``provenance()`` merged into its metadata, saved to ``path``
    as ``format`` with ``options`` (``path`` None: computed and kept in `Pipeline.table`, not
    written). It is written every ``every_samples`` new samples, every ``every_seconds``, when
    ``request`` is set, and at the end of a run (``at_end``; after an interruption only with
    ``on_interrupt``). ``retry_interval`` as in `CheckpointPolicy`. A run that ends with no tensor
    raises `InputError` with ``require_tensors``, else writes nothing; periodic writes wait for one.
    """

    path: str | os.PathLike[str] | None = None
    method: str = DEFAULT_METHOD
    scheme: str = "symmetric"
    params: dict[str, Any] = field(default_factory=dict)
    format: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    every_samples: int = 0
    every_seconds: float = 0.0
    at_end: bool = True
    on_interrupt: bool = True
    require_tensors: bool = True
    retry_interval: float | None = None
    request: threading.Event = field(default_factory=threading.Event)
    provenance: Callable[[], dict[str, Any]] | None = None
    compute: Callable[[Calibrator], CalibrationTable] | None = None

    def table(self, cal: Calibrator) -> CalibrationTable:
        table = self.compute(cal) if self.compute else cal.compute(self.method, scheme=self.scheme, **self.params)
        if self.provenance is not None:
            table = table.replace_meta(provenance=self.provenance())
        if self.path is not None:
            table.save(self.path, format=self.format, **self.options)
        return table


@dataclass
class PipelineResult:
    """How a run ended (``reason``: exhausted, stopped, interrupted, samples, duration) and what it folded in."""

    reason: str
    used: int
    skipped: int
    table: CalibrationTable | None


def keep_previous(path: Path) -> None:
    """Make ``<path>.prev`` the current checkpoint (a hard link: atomic, no extra space)."""
    if not path.exists():
        return
    prev, tmp = path.with_name(path.name + ".prev"), path.with_name(f".{path.name}.prev.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:  # no hard links on this file system: copy
            shutil.copyfile(path, tmp)
        os.replace(tmp, prev)
    except OSError as err:
        log.warning("could not keep the previous checkpoint as %s: %s", prev, err)


def load_checkpoint(path: str | os.PathLike[str], bins: int, model_hash: str | None = None) -> Calibrator:
    """The state at ``path``, else its ``.prev`` copy, else a new calibrator; never a wrong state.

    Any failure to rebuild a checkpoint counts as damage, not only a `StateError`: a file
    whose checksum is right but whose content is not (a counter of 2**63 or more that
    no histogram can hold) must not stop an unattended run from starting.
    """
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".prev")):
        if not candidate.exists():
            continue
        try:
            cal = Calibrator.load_state(candidate)
        except Exception as err:  # noqa: BLE001  the boundary between a file on disk and a running service
            log.error("checkpoint %s is unusable (%s: %s); trying the previous one", candidate, type(err).__name__, err)
            continue
        if candidate != path:
            log.warning("resuming from the previous checkpoint %s", candidate)
        if cal.bins != bins:
            log.warning("checkpoint %s has %d bins, the config says %d; keeping %d", candidate, cal.bins, bins, cal.bins)
        return cal
    return Calibrator(bins, model_hash=model_hash)


@contextlib.contextmanager
def stop_on_signals(event: threading.Event, second_interrupts: bool = False) -> Iterator[threading.Event]:
    """SIGTERM and SIGINT set ``event`` (the run stops between inputs, checkpointed) while inside.

    With ``second_interrupts`` a second signal raises `KeyboardInterrupt` at once, for a person
    who will not wait for a large input to finish.
    """
    def handler(signum: int, frame: Any) -> None:
        if second_interrupts and event.is_set():
            raise KeyboardInterrupt
        event.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield event
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class Pipeline:
    """One calibrator fed from inputs, checkpointed and turned into tables by its policies.

    ``reject_bad``: an input the calibrator refuses (`EdgecalError`) is logged, counted as
    rejected and its key recorded, instead of raising (for unattended runs). ``budget``: an
    object with ``admit(name) -> bool`` and ``add(name)`` that decides which tensor names may
    get a histogram. ``on_fold(key, used)`` is called after every input.
    """

    def __init__(self, calibrator: Calibrator, checkpoint: CheckpointPolicy | None = None,
                 stop: StopPolicy | None = None, emit: EmitPolicy | None = None, *, reject_bad: bool = False,
                 budget: Any = None, on_fold: Callable[[Key, bool], None] | None = None) -> None:
        self.cal = calibrator
        self.checkpoint_policy = checkpoint or CheckpointPolicy()
        self.stop_policy = stop or StopPolicy()
        self.emit_policy = emit or EmitPolicy()
        self.reject_bad, self.budget, self.on_fold = reject_bad, budget, on_fold
        self.counts = {"samples": 0, "rejected": 0, "skipped_consumed": 0, "tables": 0, "checkpoints": 0,
                       "write_errors": 0}
        self.pending: dict[Any, list[tuple[Any, str | None]]] = {}
        self.table: CalibrationTable | None = None
        self.since_emit = 0
        self.started = now = time.monotonic()
        self.next_checkpoint = now + self.checkpoint_policy.interval
        every = self.emit_policy.every_seconds
        self.next_emit: float | None = now + every if every else None

    # -- feeding -------------------------------------------------------------------------------
    def fold(self, key: Key, tensors: Tensors | Callable[[], Tensors], *, token: Any = None,
             committer: Any = None, label: str = "input") -> bool:
        """Fold one input in unless its key is already consumed; True when it was used.

        ``token`` goes back through ``committer.commit([token, ...])`` once the input is in a
        checkpoint; if ``committer.KEEP_CONSUMED`` is false its key is then dropped from the state.
        """
        keys = (key,) if isinstance(key, str) else tuple(key or ())
        used = False
        if any(k in self.cal.consumed for k in keys):
            self.counts["skipped_consumed"] += 1  # already in the checkpoint
        else:
            used = self._observe(tensors, label)
            if keys:
                self.cal.consumed.add(keys[0])
        if token is not None and committer is not None:
            self.pending.setdefault(committer, []).append((token, keys[0] if keys else None))
        if self.on_fold is not None:
            self.on_fold(key, used)
        return used

    def _observe(self, tensors: Tensors | Callable[[], Tensors], label: str) -> bool:
        try:
            if callable(tensors):
                tensors = tensors()
            if isinstance(tensors, Calibrator):
                self.cal.merge(tensors)
            else:
                self._observe_arrays(tensors)
        except EdgecalError as err:
            if not self.reject_bad:
                raise
            self.counts["rejected"] += 1
            log.warning("%s: sample rejected: %s", label, err)
            return False
        self.counts["samples"] += 1
        self.since_emit += 1
        return True

    def _observe_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            if self.budget is None:
                self.cal.observe(name, array)
            elif self.budget.admit(name):
                self.cal.observe(name, array)
                self.budget.add(name)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, inputs: Iterable[Item]) -> PipelineResult:
        """Fold ``inputs`` in until they end or the stop policy says so; then `finish`."""
        return self.finish(self.feed(inputs))

    def feed(self, inputs: Iterable[Item]) -> str:
        """Fold ``inputs`` in, checkpointing and writing tables when due; returns why it stopped.

        "exhausted" when the inputs ended, "interrupted" on `KeyboardInterrupt` (the input being
        read is not folded in), else the stop policy's reason.
        """
        try:
            for item in inputs:
                if item is not None:
                    self.fold(*item)
                reason = self.stop_reason()
                if reason:
                    return reason
                self.tick()
        except KeyboardInterrupt:
            return "interrupted"
        return "exhausted"

    def stop_reason(self) -> str:
        return self.stop_policy.reason(self.counts["samples"], time.monotonic() - self.started)

    def tick(self, now: float | None = None) -> None:
        """Checkpoint and write a table when they are due."""
        now = time.monotonic() if now is None else now
        if self.checkpoint_policy.path is not None and now >= self.next_checkpoint:
            self.checkpoint()
        if self.emit_due(now):
            self.emit(now=now)

    def finish(self, reason: str) -> PipelineResult:
        """The last checkpoint, and the last table as the emit policy says."""
        self.checkpoint()
        policy = self.emit_policy
        if policy.at_end and (policy.on_interrupt or reason not in ("stopped", "interrupted")):
            self.emit(final=True)
        return PipelineResult(reason, self.counts["samples"], self.counts["skipped_consumed"], self.table)

    # -- writing -------------------------------------------------------------------------------
    def checkpoint(self) -> bool:
        """Write the state now; True when written (False: no path, or a failure to retry later)."""
        policy = self.checkpoint_policy
        if policy.path is None:
            return False
        try:
            policy.write(self.cal)
        except OSError as err:
            if policy.retry_interval is None:
                raise
            self.counts["write_errors"] += 1
            self.next_checkpoint = time.monotonic() + policy.retry_interval
            log.error("checkpoint to %s failed (%s); the previous one is kept, retrying in %.0f s",
                      policy.path, err, policy.retry_interval)
            return False
        self.counts["checkpoints"] += 1
        self.next_checkpoint = time.monotonic() + policy.interval
        self._commit()
        return True

    def _commit(self) -> None:
        """Hand tokens back to their sources now that their data is checkpointed."""
        for committer, items in list(self.pending.items()):
            try:
                committer.commit([token for token, _ in items])
            except Exception as err:  # noqa: BLE001  keep the keys: a restart must still skip these
                log.warning("%s: commit failed (%s); will retry after the next checkpoint",
                            getattr(committer, "KIND", "source"), err)
                continue
            if not getattr(committer, "KEEP_CONSUMED", True):  # the data is gone: its keys are no longer needed
                self.cal.consumed -= {key for _, key in items if key is not None}
            del self.pending[committer]

    def emit_due(self, now: float) -> bool:
        policy = self.emit_policy
        if policy.request.is_set():
            return True
        if policy.every_samples and self.since_emit >= policy.every_samples:
            return True
        return self.next_emit is not None and now >= self.next_emit

    def emit(self, final: bool = False, now: float | None = None) -> CalibrationTable | None:
        """Compute (and write) the table now; None when there is nothing yet or a write to retry failed."""
        policy = self.emit_policy
        now = time.monotonic() if now is None else now
        self.next_emit = now + policy.every_seconds if policy.every_seconds else None
        policy.request.clear()
        if not self.cal.names() and not (final and policy.require_tensors):
            return None
        try:
            table = policy.table(self.cal)
        except Exception as err:
            if policy.retry_interval is None:
                raise
            self.counts["write_errors"] += 1
            self.next_emit = now + policy.retry_interval
            log.error("writing table %s failed (%s: %s); the old table stays, retrying", policy.path,
                      type(err).__name__, err)
            return None
        self.counts["tables"] += 1
        self.since_emit = 0
        self.table = table
        return table
