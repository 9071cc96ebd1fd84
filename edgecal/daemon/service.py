"""`Daemon`: the long-running calibration service (`edgecal daemon --config FILE`).

One main thread owns the `Calibrator`; one `SourceRunner` thread per source feeds
it through a bounded queue. The main loop folds samples in, checkpoints the state
every ``checkpoint_interval`` seconds (atomically; the previous checkpoint stays
as ``<state>.prev``), writes a table every N samples, every T seconds, on SIGUSR1
and on stop, and talks to systemd: READY=1 once the kernels are warm, STATUS=
with counters, WATCHDOG=1 from this loop only (a hung loop stops the pings), and
STOPPING=1. SIGTERM/SIGINT stop it (drain, checkpoint, table, exit 0); SIGHUP
reloads the config and keeps the histograms (a config that fails any check is
refused with one log line and the running one kept). A failed write (disk full, read-only
file system) is logged, the old file stays whole, and the write is retried.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..calibrator import Calibrator
from ..errors import EdgecalError
from ..sources import Source, source_class
from .notify import Notifier
from .runner import SourceRunner
from .settings import Settings, SourceSettings, load_settings
from .tensors import TensorBudget

log = logging.getLogger("edgecal")
STOP_BUDGET = 5.0  # seconds for source threads to finish; systemd allows far more


def load_checkpoint(path: Path, bins: int, model_hash: str | None) -> Calibrator:
    """The state at ``path``, else its ``.prev`` copy, else a new calibrator; never a wrong state.

    Any failure to rebuild a checkpoint counts as damage, not only a `StateError`: a file
    whose checksum is right but whose content is not (a counter of 2**63 or more that
    no histogram can hold) must not stop the daemon from starting.
    """
    for candidate in (path, path.with_name(path.name + ".prev")):
        if not candidate.exists():
            continue
        try:
            cal = Calibrator.load_state(candidate)
        except Exception as err:  # the boundary between a file on disk and a running service
            log.error("checkpoint %s is unusable (%s: %s); trying the previous one", candidate, type(err).__name__, err)
            continue
        if candidate != path:
            log.warning("resuming from the previous checkpoint %s", candidate)
        if cal.bins != bins:
            log.warning("checkpoint %s has %d bins, the config says %d; keeping %d", candidate, cal.bins, bins, cal.bins)
        return cal
    return Calibrator(bins, model_hash=model_hash)


def _keep_previous(path: Path) -> None:
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


class Daemon:
    """Runs until stopped by a signal (or until every source is exhausted)."""

    def __init__(self, config: str | Path, notifier: Notifier | None = None) -> None:
        self.settings: Settings = load_settings(config)
        self.notifier = notifier or Notifier()
        s = self.settings
        self.sources = build_sources(s.sources)
        self.cal = load_checkpoint(Path(s.state.path), s.calibrator.bins, s.calibrator.model_hash)
        self.tensors = TensorBudget(s.calibrator.max_tensors, self.cal.names())
        self.queue: queue.Queue[tuple[SourceRunner, Any]] = queue.Queue(s.daemon.queue_samples)
        self.runners: list[SourceRunner] = []
        self.pending: dict[SourceRunner, list[tuple[Any, str | None]]] = {}
        self.flags = {name: threading.Event() for name in ("stop", "reload", "emit")}
        self.counts = {"samples": 0, "rejected": 0, "skipped_consumed": 0, "tables": 0, "checkpoints": 0,
                       "write_errors": 0}
        now = time.monotonic()
        self.due = {"checkpoint": now + s.state.checkpoint_interval, "status": now, "watchdog": now,
                    "emit_time": now + s.output.every_seconds if s.output.every_seconds else None}
        self.since_emit = 0

    # -- life cycle ------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; returns the exit code (0)."""
        handlers = {signal.SIGTERM: "stop", signal.SIGINT: "stop", signal.SIGHUP: "reload", signal.SIGUSR1: "emit"}
        previous = {sig: signal.signal(sig, lambda signum, _f: self.flags[handlers[signum]].set()) for sig in handlers}
        try:
            from ..warmup import warm_kernels

            warm_kernels()
            self._start_sources()
            self.notifier.send(ready=True, status="ready")
            log.info("edgecal daemon ready: %d sources, state %s", len(self.runners), self.settings.state.path)
            while not self.flags["stop"].is_set():
                self._step()
            return self._shutdown()
        except Exception:
            log.error("unexpected failure; checkpointing what was folded in before exiting")
            self._checkpoint()
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _step(self) -> None:
        try:
            runner, sample = self.queue.get(timeout=0.2)
            self._fold(runner, sample)
        except queue.Empty:
            if self._all_exhausted():
                log.info("every source is exhausted; stopping")
                self.flags["stop"].set()
        now = time.monotonic()
        if self.flags["reload"].is_set():
            self.flags["reload"].clear()
            self._reload()
        if now >= self.due["checkpoint"]:
            self._checkpoint()
        if self._emit_due(now):
            self._emit()
        if now >= self.due["status"]:
            self.due["status"] = now + self.settings.daemon.status_interval
            self.notifier.send(status=self.status_line())
        wd = self.notifier.watchdog_seconds
        if wd and now >= self.due["watchdog"]:
            self.due["watchdog"] = now + wd / 2
            self.notifier.send(watchdog=True)

    def _shutdown(self) -> int:
        self.notifier.send(stopping=True, status="stopping")
        deadline = time.monotonic() + STOP_BUDGET
        for r in self.runners:
            r.stop()
        for r in self.runners:
            r.join(max(0.0, deadline - time.monotonic()))
        while True:
            try:
                self._fold(*self.queue.get_nowait())
            except queue.Empty:
                break
        self._checkpoint()
        if self.settings.output.on_stop and self.cal.names():
            self._emit()
        log.info("edgecal daemon stopped: %s", self.status_line())
        return 0

    # -- data --------------------------------------------------------------------------------
    def _fold(self, runner: SourceRunner, sample: Any) -> None:
        if self.cal.model_hash is None:
            self.cal.model_hash = runner.source.model_hash()
        key = runner.source.consumed_key(sample.token) if sample.token is not None else None
        if key is not None and key in self.cal.consumed:
            self.counts["skipped_consumed"] += 1  # already in the checkpoint; only its deletion was lost
        else:
            try:
                for name, array in sample.arrays.items():
                    if self.tensors.admit(name):
                        self.cal.observe(name, array)
                        self.tensors.add(name)
            except EdgecalError as err:
                self.counts["rejected"] += 1
                log.warning("source %s: sample rejected: %s", runner.label, err)
            else:
                self.counts["samples"] += 1
                self.since_emit += 1
            if key is not None:
                self.cal.consumed.add(key)
        if sample.token is not None:
            self.pending.setdefault(runner, []).append((sample.token, key))

    def _all_exhausted(self) -> bool:
        return bool(self.runners) and self.settings.daemon.exit_when_exhausted and all(
            r.exhausted or not r.is_alive() for r in self.runners) and self.queue.empty()

    # -- writing -------------------------------------------------------------------------------
    def _checkpoint(self) -> bool:
        s = self.settings
        path = Path(s.state.path)
        try:
            data = self.cal.to_bytes()
            _keep_previous(path)
            atomic_write(path, data)
        except OSError as err:
            self.counts["write_errors"] += 1
            self.due["checkpoint"] = time.monotonic() + s.daemon.retry_interval
            log.error("checkpoint to %s failed (%s); the previous one is kept, retrying in %.0f s",
                      path, err, s.daemon.retry_interval)
            return False
        self.counts["checkpoints"] += 1
        self.due["checkpoint"] = time.monotonic() + s.state.checkpoint_interval
        self._commit()
        return True

    def _commit(self) -> None:
        """Hand tokens back to their sources now that their data is checkpointed."""
        for runner, items in list(self.pending.items()):
            try:
                runner.source.commit([token for token, _ in items])
            except Exception as err:  # keep the keys: a restart must still skip these
                log.warning("source %s: commit failed (%s); will retry after the next checkpoint", runner.label, err)
                continue
            if not runner.source.KEEP_CONSUMED:  # the data is gone from the source: its keys are no longer needed
                self.cal.consumed -= {key for _, key in items if key is not None}
            del self.pending[runner]

    def _emit_due(self, now: float) -> bool:
        out = self.settings.output
        if self.flags["emit"].is_set():
            return True
        if out.every_samples and self.since_emit >= out.every_samples:
            return True
        return self.due["emit_time"] is not None and now >= self.due["emit_time"]

    def _emit(self) -> bool:
        out = self.settings.output
        now = time.monotonic()
        self.due["emit_time"] = now + out.every_seconds if out.every_seconds else None
        self.flags["emit"].clear()
        if not self.cal.names():
            return False
        try:
            table = self.cal.compute(out.method, scheme=out.scheme, **out.params)
            table = table.replace_meta(provenance={"daemon": self.provenance()})
            table.save(out.path, format=out.format, **out.options)
        except Exception as err:  # a table that cannot be computed or written must not stop the histograms
            self.counts["write_errors"] += 1
            self.due["emit_time"] = now + self.settings.daemon.retry_interval
            log.error("writing table %s failed (%s: %s); the old table stays, retrying", out.path,
                      type(err).__name__, err)
            return False
        self.counts["tables"] += 1
        self.since_emit = 0
        return True

    # -- sources and reload ------------------------------------------------------------------
    def _start_sources(self) -> None:
        for cfg, source in zip(self.settings.sources, self.sources):
            runner = SourceRunner(source, self.queue, cfg.label)
            self.runners.append(runner)
            runner.start()

    def _reload(self) -> None:
        """Apply the config file again, or keep the running one whole and log one line saying why."""
        try:
            new = load_settings(self.settings.path)
            sources = build_sources(new.sources) if new.sources != self.settings.sources else self.sources
        except Exception as err:  # whatever is wrong with the new file, the running daemon must not die of it
            log.error("reload refused, keeping the running config: %s", str(err).replace("\n", " ") or repr(err))
            return
        old, self.settings = self.settings, new
        if new.calibrator.bins != self.cal.bins:
            log.warning("reload: bins stay %d (the histograms are kept); restart to change them", self.cal.bins)
        if new.daemon.queue_samples != old.daemon.queue_samples:
            log.warning("reload: queue_samples stays %d; restart to change it", old.daemon.queue_samples)
        self.tensors.limit = new.calibrator.max_tensors
        if sources is not self.sources:
            self._checkpoint()
            for r in self.runners:
                r.stop()
            for r in self.runners:
                r.join(STOP_BUDGET)
            self.runners, self.sources = [], sources
            self._start_sources()
        log.info("reloaded %s", new.path)

    def provenance(self) -> dict[str, Any]:
        return {**self.counts, **self.tensors.counts(), "sources": {r.label: r.stats() for r in self.runners}}

    def status_line(self) -> str:
        dropped = sum(r.stats().get("dropped_queue_full", 0) for r in self.runners)
        refused = self.tensors.counts()["tensors_refused"]
        return (f"{self.counts['samples']} samples, {len(self.cal.names())} tensors, {dropped} dropped, "
                f"{refused} tensors refused, {self.counts['tables']} tables, {self.counts['checkpoints']} checkpoints, "
                f"{self.counts['write_errors']} write errors")


def build_sources(configs: tuple[SourceSettings, ...]) -> list[Source]:
    """One source object per ``[[source]]`` table (no I/O: each opens in its own thread)."""
    return [source_class(cfg.kind)(**cfg.options) for cfg in configs]
