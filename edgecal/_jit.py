"""Numba settings for every edgecal kernel, in one place.

Kernels are compiled with ``cache=True`` (so a device pays the JIT cost once) and
``nogil=True`` (so a serial reader thread keeps draining its port while histograms
fill). ``fastmath`` is never used: it would let LLVM assume there are no NaNs and
silently miscount them.

The first process after installing compiles every kernel it uses (seconds on a
small board) and stores them; `on_cold_compile` lets the command line say so once,
before it starts, instead of appearing to hang. Later processes load the kernels
and never call it, nor does a new signature of a kernel already in the cache.

When no writable cache location exists (read-only root file system, no HOME),
Numba refuses ``cache=True`` at decoration time; edgecal then logs a warning and
compiles in memory instead of failing to import.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import numba
from numba.core import event

log = logging.getLogger("edgecal")

JIT_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True}


_warned: list[str] = []


def kernel(fn: Callable[..., Any]) -> Any:
    """Compile ``fn`` with edgecal's Numba options (cached when a cache is writable)."""
    try:
        return numba.njit(**JIT_OPTIONS)(fn)
    except RuntimeError as err:  # "cannot cache function ...: no locator available"
        if not _warned:
            _warned.append(fn.__name__)
            log.warning("Numba cache unavailable (%s); compiling in memory: every process pays the JIT time. "
                        "Set NUMBA_CACHE_DIR to a writable folder", err)
        return numba.njit(**{**JIT_OPTIONS, "cache": False})(fn)


class _ColdCompile(event.Listener):
    """Calls the registered callbacks, once per process, when an edgecal kernel compiles with an empty cache."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.fired = False
        self.lock = threading.Lock()

    def on_start(self, ev: Any) -> None:
        dispatcher = (ev.data or {}).get("dispatcher")
        with self.lock:
            if self.fired or not self.callbacks or not _cold(dispatcher):
                return
            self.fired = True
        for callback in self.callbacks:
            callback()

    def on_end(self, ev: Any) -> None:
        pass


def _cold(dispatcher: Any) -> bool:
    """True for an edgecal kernel compiled with ``cache=True`` whose cache holds none of its signatures."""
    func = getattr(dispatcher, "py_func", None)
    if not getattr(func, "__module__", "").startswith("edgecal.") or _warned:
        return False  # not ours, or compiled in memory: every process pays, "later runs" would be untrue
    index = getattr(getattr(getattr(dispatcher, "_cache", None), "_cache_file", None), "_index_path", None)
    return index is None or not os.path.exists(index)


_listener: _ColdCompile | None = None


def on_cold_compile(callback: Callable[[], None]) -> None:
    """Call ``callback`` (once per process) before the first edgecal kernel compiles into an empty cache."""
    global _listener
    if _listener is None:
        _listener = _ColdCompile()
        event.register("numba:compile", _listener)
    _listener.callbacks.append(callback)
