"""`edgecal warmup`: compile every Numba kernel signature edgecal uses, into the cache.

Kernels are compiled with ``cache=True``, so the first process that runs them pays
the compile time (seconds on a small ARM board) and every later one loads them
(a few hundred ms). Running this once after installing, or from a systemd
one-shot before the daemon, makes the daemon and the boot calibration start warm.
Where the cache folder is not writable, `edgecal._jit` has already logged a
warning and compiled in memory: warmup then still works, for this process only.

>>> names = warm_kernels()
>>> "histogram float32" in names and "method kl" in names and "method mse" in names
True
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from .calibrator import DEFAULT_BINS, Calibrator
from .methods import method_names
from .table import SCHEMES


def warm_kernels(bins: int = DEFAULT_BINS) -> list[str]:
    """The calibration path: histogram fill/fold for float32 and float64, every method."""
    cal = Calibrator(bins)
    rng = np.random.default_rng(0)
    cal.observe("f32", rng.standard_normal(64).astype(np.float32))
    cal.observe("f32", np.array([1e3], np.float32))  # grows the range: the fold kernel
    cal.observe("f64", np.maximum(rng.standard_normal(64), 0.0))
    for method in method_names():
        for scheme in SCHEMES:
            cal.compute(method, scheme=scheme)
    return ["histogram float32", "histogram float64", "histogram fold", *(f"method {m}" for m in method_names())]


def _warm_link() -> list[str]:
    from .link import FrameDecoder, encode_frame
    from .link.frames import LOG

    FrameDecoder().feed(b"junk\0" + encode_frame(LOG, b"warm") * 2)
    return ["link COBS decoder"]


def _warm_reference() -> list[str]:
    from . import reference as ref

    x = np.arange(-8, 8, dtype=np.int8).reshape(1, 2, 2, 4)
    w = np.ones((4, 1, 1, 4), np.int8)
    for rounding in ref.ROUNDINGS:
        rq = ref.op_multipliers("conv", 0.5, [0.01] * 4, 0.25, rounding=rounding)
        ref.conv2d(x, w, None, rq)
        ref.depthwise_conv2d(x, np.ones((1, 1, 1, 4), np.int8), None, rq)
        ref.fully_connected(x.reshape(1, 16), np.ones((2, 16), np.int8), None,
                            ref.op_multipliers("fc", 0.5, [0.01], 0.25, rounding=rounding))
        ref.quantize(np.linspace(-1, 1, 8, dtype=np.float32), 0.01, 0, rounding)
        ref.add(x, x, (0.5, 0), (0.5, 0), (1.0, 0), rounding=rounding)
    ref.max_pool2d(x, 2)
    ref.avg_pool2d(x, 2)
    return ["int8 conv/depthwise/fully connected/quantize/add for every rounding", "int8 pools"]


def warm_all(bins: int = DEFAULT_BINS) -> list[tuple[str, float]]:
    """Every kernel group, with the seconds each took (compile or cache load)."""
    groups: list[Callable[[], list[str]]] = [lambda: warm_kernels(bins), _warm_link, _warm_reference]
    done = []
    for group in groups:
        start = time.perf_counter()
        names = group()
        done.append((", ".join(names), time.perf_counter() - start))
    return done


def cache_dir() -> str:
    """Where Numba caches: NUMBA_CACHE_DIR when set, else beside the sources."""
    return os.environ.get("NUMBA_CACHE_DIR") or "__pycache__ folders beside edgecal's modules"
