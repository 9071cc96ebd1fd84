"""Numba settings for every edgecal kernel, in one place.

Kernels are compiled with ``cache=True`` (so a device pays the JIT cost once) and
``nogil=True`` (so a serial reader thread keeps draining its port while histograms
fill). ``fastmath`` is never used: it would let LLVM assume there are no NaNs and
silently miscount them.

Numba itself is imported only when a kernel first runs, not when a module that
defines kernels is imported: ``edgecal --help``, table readers and the socket client
an application embeds then start in a fraction of the time and memory (importing
numba costs ~0.1-2 s and ~60 MB). `kernel` returns a small stand-in; its first call
imports numba and makes a Numba dispatcher of that kernel alone, and of the kernels it
calls, which it binds in the caller's globals first, so kernels that call kernels compile
as before. Each dispatcher is then bound wherever edgecal's modules hold its stand-in, so
later calls go straight to Numba. A command makes dispatchers for the few kernels it
runs, not for all sixty (each costs ~0.3 ms and ~80 KB to make).

The first process after installing compiles every kernel it uses (seconds on a
small board) and stores them; `on_cold_compile` lets the command line say so once,
before it starts, instead of appearing to hang. Later processes load the kernels
and never call it, nor does a new signature of a kernel already in the cache.

When no writable cache location exists (read-only root file system, no HOME),
Numba refuses ``cache=True`` at decoration time; edgecal then logs a warning and
compiles in memory instead of failing.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

log = logging.getLogger("edgecal")

JIT_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True}

_warned: list[str] = []
_pending: list[LazyKernel] = []
_lock = threading.RLock()
_made: list[LazyKernel] = []  # dispatchers made since the stand-ins were last replaced
_ROOT = __name__.partition(".")[0]
_ready = False
_cold_callbacks: list[Callable[[], None]] = []
_listener: Any = None
_fire_lock = threading.Lock()


class LazyKernel:
    """A kernel whose Numba dispatcher is made on first call (see the module docstring)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        functools.update_wrapper(self, fn)
        self.py_func = fn
        self.dispatcher: Any = None

    def __call__(self, *args: Any) -> Any:
        if self.dispatcher is None:
            materialise(self)
        return self.dispatcher(*args)


def _njit(fn: Callable[..., Any]) -> Any:
    import numba

    try:
        return numba.njit(**JIT_OPTIONS)(fn)
    except RuntimeError as err:  # "cannot cache function ...: no locator available"
        if not _warned:
            _warned.append(fn.__name__)
            log.warning("Numba cache unavailable (%s); compiling in memory: every process pays the JIT time. "
                        "Set NUMBA_CACHE_DIR to a writable folder", err)
        return numba.njit(**{**JIT_OPTIONS, "cache": False})(fn)


def _names(code: types.CodeType) -> set[str]:
    """Every global or attribute name ``code`` and the functions nested in it refer to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _bind_callees(fn: Callable[..., Any]) -> None:
    """Make dispatchers of the kernels ``fn`` calls and bind them where ``fn`` looks them up.

    Numba resolves a kernel's globals (``k(...)`` or ``module.k(...)``) when it compiles,
    and needs a dispatcher there, not a stand-in.
    """
    names, scope = _names(fn.__code__), fn.__globals__
    for name in names:
        value = scope.get(name)
        if isinstance(value, LazyKernel):
            scope[name] = _dispatcher(value)
        elif isinstance(value, types.ModuleType) and value.__name__.partition(".")[0] == _ROOT:
            for attr in names:
                inner = vars(value).get(attr)
                if isinstance(inner, LazyKernel):
                    setattr(value, attr, _dispatcher(inner))


def _dispatcher(stand_in: LazyKernel) -> Any:
    """The stand-in's dispatcher, made (with its callees') when missing. Call with ``_lock`` held."""
    global _ready
    if stand_in.dispatcher is None:
        _bind_callees(stand_in.py_func)
        stand_in.dispatcher = _njit(stand_in.py_func)
        _made.append(stand_in)
        _ready = True
    return stand_in.dispatcher


def _replace_stand_ins() -> None:
    """Put each new dispatcher where its stand-in is bound in edgecal's modules."""
    made = {id(k) for k in _made}
    _made.clear()
    for name, module in list(sys.modules.items()):
        if module is None or not (name == _ROOT or name.startswith(_ROOT + ".")):
            continue
        for attr, value in list(vars(module).items()):
            if id(value) in made and isinstance(value, LazyKernel):
                setattr(module, attr, value.dispatcher)


def materialise(stand_in: LazyKernel) -> Any:
    """Import numba and make ``stand_in``'s dispatcher (compiled on its first call); returns it."""
    with _lock:
        dispatcher = _dispatcher(stand_in)
        if _made:
            _replace_stand_ins()
    _listen()
    return dispatcher


def compile_pending() -> None:
    """Import numba and make a Numba dispatcher of every kernel defined so far (a test or warm-up's use)."""
    import numba  # noqa: F401  (imported even when no kernel is pending)

    global _ready
    with _lock:
        for stand_in in list(_pending):
            _dispatcher(stand_in)
        _pending.clear()
        _replace_stand_ins()
        _ready = True
    _listen()


def numba_loaded() -> bool:
    """True once a kernel has run in this process (numba imported)."""
    return _ready


def kernel(fn: Callable[..., Any]) -> Any:
    """Compile ``fn`` with edgecal's Numba options (cached when a cache is writable), numba imported on first use."""
    stand_in = LazyKernel(fn)
    with _lock:
        _pending.append(stand_in)
    return stand_in


def on_cold_compile(callback: Callable[[], None]) -> None:
    """Call ``callback`` (once per process) before the first edgecal kernel compiles into an empty cache.

    Registering imports nothing: the Numba listener is installed when numba is.
    """
    _cold_callbacks.append(callback)
    if _ready:
        _listen()


def _listen() -> None:
    """Install the compile listener once numba is imported and a callback waits for it."""
    global _listener
    with _lock:
        if _listener is not None or not _cold_callbacks:
            return
        from numba.core import event

        _listener = _cold_listener(event.Listener)
        event.register("numba:compile", _listener)


def _cold_listener(base: type) -> Any:
    """A Numba event listener that calls the callbacks, once, when an edgecal kernel compiles cold."""

    class ColdCompile(base):  # type: ignore[valid-type, misc]
        fired = False

        def on_start(self, ev: Any) -> None:
            with _fire_lock:
                if self.fired or not _cold((ev.data or {}).get("dispatcher")):
                    return
                self.fired = True
            for callback in list(_cold_callbacks):
                callback()

        def on_end(self, ev: Any) -> None:
            pass

    return ColdCompile()


def _cold(dispatcher: Any) -> bool:
    """True for an edgecal kernel compiled with ``cache=True`` whose cache holds none of its signatures."""
    func = getattr(dispatcher, "py_func", None)
    if not getattr(func, "__module__", "").startswith("edgecal.") or _warned:
        return False  # not ours, or compiled in memory: every process pays, "later runs" would be untrue
    index = getattr(getattr(getattr(dispatcher, "_cache", None), "_cache_file", None), "_index_path", None)
    return index is None or not os.path.exists(index)
