"""`Daemon`: the long-running calibration service (`edgecal daemon --config FILE`).

One main thread owns the `Calibrator`; one `SourceRunner` thread per source feeds
it through a bounded queue. The main loop folds samples in, checkpoints the state
every ``checkpoint_interval`` seconds (atomically; the previous checkpoint stays
as ``<state>.prev``), writes a table every N samples, every T seconds, on SIGUSR1
and on stop, and talks to systemd: READY=1 once the kernels are warm, STATUS=
with counters, WATCHDOG=1 from this loop only (a hung loop stops the pings), and
STOPPING=1. The loop itself (fold, checkpoint, table) is `edgecal.pipeline.Pipeline`'s, as for
`calibrate` and `stream`. SIGTERM/SIGINT stop it (drain, checkpoint, table, exit 0); SIGHUP
reloads the config and keeps the histograms (a config that fails any check is
refused with one log line and the running one kept). A failed write (disk full, read-only
file system) is logged, the old file stays whole, and the write is retried.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ..calibrator import Calibrator
from ..pipeline import (
    CheckpointPolicy,
    EmitPolicy,
    Pipeline,
    StopPolicy,
    load_checkpoint,
    stop_on_signals,
)
from ..sources import Source, source_class
from .notify import Notifier
from .runner import SourceRunner
from .settings import Settings, SourceSettings, load_settings
from .tensors import TensorBudget

log = logging.getLogger("edgecal")
STOP_BUDGET = 5.0  # seconds for source threads to finish; systemd allows far more


class Daemon:
    """Runs until stopped by a signal (or until every source is exhausted).

    The folding, checkpointing and table writing are an `edgecal.pipeline.Pipeline`'s; the
    daemon adds the source threads, the queue between them and the pipeline, reload and systemd.
    """

    def __init__(self, config: str | Path, notifier: Notifier | None = None) -> None:
        self.settings: Settings = load_settings(config)
        self.notifier = notifier or Notifier()
        s = self.settings
        self.sources = build_sources(s.sources)
        cal = load_checkpoint(Path(s.state.path), s.calibrator.bins, s.calibrator.model_hash)
        cal.stage_bytes = s.calibrator.stage_bytes
        self.tensors = TensorBudget(s.calibrator.max_tensors, cal.names())
        self.queue: queue.Queue[tuple[SourceRunner, Any]] = queue.Queue(s.daemon.queue_samples)
        self.runners: list[SourceRunner] = []
        self.flags = {name: threading.Event() for name in ("stop", "reload", "emit")}
        self.pipeline = Pipeline(cal, _checkpoint_policy(s), StopPolicy(self.flags["stop"]),
                                 self._emit_policy(s), reject_bad=True, budget=self.tensors)
        now = time.monotonic()
        self._due = {"status": now, "watchdog": now}

    @property
    def cal(self) -> Calibrator:
        return self.pipeline.cal

    @property
    def counts(self) -> dict[str, int]:
        return self.pipeline.counts

    @property
    def due(self) -> dict[str, float | None]:
        """When the next checkpoint, table, status line and watchdog ping are due (monotonic seconds)."""
        return {**self._due, "checkpoint": self.pipeline.next_checkpoint, "emit_time": self.pipeline.next_emit}

    def _emit_policy(self, s: Settings) -> EmitPolicy:
        out = s.output
        return EmitPolicy(out.path, out.method, out.scheme, dict(out.params), out.format, dict(out.options),
                          every_samples=out.every_samples, every_seconds=out.every_seconds, at_end=out.on_stop,
                          require_tensors=False, retry_interval=s.daemon.retry_interval, request=self.flags["emit"],
                          provenance=lambda: {"daemon": self.provenance()})

    # -- life cycle ------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; returns the exit code (0)."""
        handlers = {signal.SIGHUP: "reload", signal.SIGUSR1: "emit"}
        previous = {sig: signal.signal(sig, lambda signum, _f: self.flags[handlers[signal.Signals(signum)]].set())
                    for sig in handlers}
        try:
            with stop_on_signals(self.flags["stop"]):
                return self._serve()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _serve(self) -> int:
        try:
            from ..warmup import warm_kernels

            warm_kernels(self.settings.calibrator.bins, [self.settings.output.method])
            self._start_sources()
            self.notifier.send(ready=True, status="ready")
            log.info("edgecal daemon ready: %d sources, state %s", len(self.runners), self.settings.state.path)
            while not self.pipeline.stop_reason():
                self._step()
            return self._shutdown()
        except Exception:
            log.error("unexpected failure; checkpointing what was folded in before exiting")
            self._checkpoint()
            raise

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
        self.pipeline.tick(now)
        if now >= self._due["status"]:
            self._due["status"] = now + self.settings.daemon.status_interval
            self.notifier.send(status=self.status_line())
        wd = self.notifier.watchdog_seconds
        if wd and now >= self._due["watchdog"]:
            self._due["watchdog"] = now + wd / 2
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
        self.pipeline.finish("stopped")
        log.info("edgecal daemon stopped: %s", self.status_line())
        return 0

    # -- data --------------------------------------------------------------------------------
    def _fold(self, runner: SourceRunner, sample: Any) -> None:
        if self.cal.model_hash is None:
            self.cal.model_hash = runner.source.model_hash()
        key = runner.source.consumed_key(sample.token) if sample.token is not None else None
        self.pipeline.fold(key, sample.arrays, token=sample.token, committer=runner.source,
                           label=f"source {runner.label}")

    def _all_exhausted(self) -> bool:
        return bool(self.runners) and self.settings.daemon.exit_when_exhausted and all(
            r.exhausted or not r.is_alive() for r in self.runners) and self.queue.empty()

    # -- writing -------------------------------------------------------------------------------
    def _checkpoint(self) -> bool:
        """Checkpoint now (atomically, the previous one kept as ``.prev``); False: failed, retried later."""
        return self.pipeline.checkpoint()

    def _emit(self) -> bool:
        """Write the table now; False when there is no tensor yet or the write failed (retried later)."""
        return self.pipeline.emit() is not None

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
        self.pipeline.checkpoint_policy, self.pipeline.emit_policy = _checkpoint_policy(new), self._emit_policy(new)
        if new.calibrator.bins != self.cal.bins:
            log.warning("reload: bins stay %d (the histograms are kept); restart to change them", self.cal.bins)
        if new.daemon.queue_samples != old.daemon.queue_samples:
            log.warning("reload: queue_samples stays %d; restart to change it", old.daemon.queue_samples)
        self.tensors.limit = new.calibrator.max_tensors
        if new.calibrator.stage_bytes != self.cal.stage_bytes:
            self.cal.stage_bytes = new.calibrator.stage_bytes
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


def _checkpoint_policy(s: Settings) -> CheckpointPolicy:
    return CheckpointPolicy(s.state.path, s.state.checkpoint_interval, keep_previous=True,
                            retry_interval=s.daemon.retry_interval)


def build_sources(configs: tuple[SourceSettings, ...]) -> list[Source]:
    """One source object per ``[[source]]`` table (no I/O: each opens in its own thread)."""
    return [source_class(cfg.kind)(**cfg.options) for cfg in configs]
