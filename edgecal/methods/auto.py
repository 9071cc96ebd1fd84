"""The ``auto`` method: per tensor, the registered method whose int8 grid loses the least.

Every other registered method proposes its range for the tensor (its threshold
for the symmetric scheme, its ``(lo, hi)`` for the asymmetric one), each proposal
is turned into the grid the table would hold (for the asymmetric scheme: scale
``(hi - lo) / 255`` and the rounded zero point), and the grid with the smallest
expected squared error on the histogram's piecewise-uniform density
(`edgecal.methods.grid`) wins; ties go to the earlier name in ``methods``.

Because ``mse`` searches that same error directly, ``auto`` picks it or a grid
as good on most tensors; what ``auto`` adds is a guarantee: it is never worse
than any listed method on the tensor's own round-trip error.

>>> import numpy as np
>>> from edgecal.histogram import StreamingHistogram
>>> h = StreamingHistogram(1024)
>>> h.update(np.random.default_rng(0).laplace(size=20000))
>>> pick(h)[0]                      # mse searches this very error
'mse'
>>> pick(h, "minmax,kl")[0]          # kl's clipped tail costs more than minmax's coarser steps
'minmax'
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..histogram import StreamingHistogram
from .grid import hist_sides, symmetric_error
from .registry import get_method, method_names, register

_SELF = "auto"


def _candidates(methods: str) -> list[str]:
    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else \
        [m for m in method_names() if m != _SELF and get_method(m).auto_candidate]
    if _SELF in names:
        raise InputError("method 'auto' cannot list itself in methods")
    for name in names:
        get_method(name)  # unknown names: the registry's error
    if not names:
        raise InputError("method 'auto' needs at least one method in methods")
    return names


def _error_levels(sd, s: float, levels: int) -> float:
    """Error of one sign (bin units) on the grid 0, s, .., levels * s; a sign with no values costs nothing."""
    counts, pre, top = sd
    return float(symmetric_error(counts, pre, top, s, levels, 1.0)) if counts.size else 0.0


def symmetric_grid_error(hist: StreamingHistogram, amax: float) -> float:
    """Expected squared error (bin units) of the symmetric grid with threshold ``amax``."""
    pos, neg, w = hist_sides(hist)
    if not amax > 0:
        return np.inf
    s = amax / 127.0 / w
    return _error_levels(pos, s, 127) + _error_levels(neg, s, 127)


def asymmetric_grid_error(hist: StreamingHistogram, lo: float, hi: float) -> float:
    """Expected squared error (bin units) of the asymmetric grid a table builds from ``[lo, hi]``."""
    pos, neg, w = hist_sides(hist)
    scale = (hi - lo) / 255.0
    if not scale > 0:
        return np.inf
    m_neg = int(min(max(round(-lo / scale), 0), 255))
    return _error_levels(pos, scale / w, 255 - m_neg) + _error_levels(neg, scale / w, m_neg)


def pick(hist: StreamingHistogram, methods: str = "", asymmetric: bool = False) -> tuple[str, Any, float]:
    """(method name, its threshold or range, its error) of the best listed method on ``hist``."""
    best: tuple[str, Any, float] | None = None
    for name in _candidates(methods):
        m = get_method(name)
        if asymmetric:
            lo, hi = m.fit_range(hist)
            err = asymmetric_grid_error(hist, lo, hi)
            found: tuple[str, Any, float] = (name, (lo, hi), err)
        else:
            amax = m(hist)
            found = (name, amax, symmetric_grid_error(hist, amax))
        if best is None or found[2] < best[2]:
            best = found
    if best is None:
        raise InputError("auto: no method to choose from")
    return best


def auto(hist: StreamingHistogram, methods: str = "") -> float:
    """Per tensor, the listed method (default: every other one) with the least int8 round-trip error."""
    return float(pick(hist, methods)[1])


def auto_range(hist: StreamingHistogram, methods: str = "") -> tuple[float, float]:
    """Asymmetric scheme: the listed method whose rounded grid has the least round-trip error."""
    lo, hi = pick(hist, methods, asymmetric=True)[1]
    return float(lo), float(hi)  # the uniform grid auto judged: no other method's codebook or record


register(_SELF, fit=auto_range)(auto)
