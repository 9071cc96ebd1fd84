"""Numba settings for every edgecal kernel, in one place.

Kernels are compiled with ``cache=True`` (so a device pays the JIT cost once) and
``nogil=True`` (so a serial reader thread keeps draining its port while histograms
fill). ``fastmath`` is never used: it would let LLVM assume there are no NaNs and
silently miscount them.

When no writable cache location exists (read-only root file system, no HOME),
Numba refuses ``cache=True`` at decoration time; edgecal then logs a warning and
compiles in memory instead of failing to import.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numba

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
