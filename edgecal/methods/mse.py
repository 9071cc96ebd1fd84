"""The ``mse`` method: the int8 grid with the least expected squared error.

The histogram is read as the piecewise-uniform density of `edgecal.methods.grid`
(each bin's count spread over the bin, the outermost bins ending at the exact
extremes), and the grid of the table's scheme is chosen to minimise the integral
of ``(x - q(x))**2`` over it: rounding error inside the range plus clipping error
outside, both exact for that density.

* symmetric scheme: the threshold ``t`` (127 levels each side, step ``t / 127``):
  ``K`` evenly spaced candidates in ``(0, max |x|]``, then a golden-section search
  between the neighbours of the best one;
* asymmetric scheme (TFLite / ONNX Runtime int8 or uint8 activations): the step
  ``s`` and the integer zero point together. For every candidate step the 255
  steps are shared between the negative and the positive side in the best way
  (``m_neg + m_pos = 255``, zero point ``-128 + m_neg``), so a tensor with a small
  negative tail gets a small negative range instead of half the levels; then a
  golden-section search refines ``s``. The range is ``[-m_neg s, m_pos s]``.

Ties go to the larger range (symmetric) or to more positive levels (asymmetric).

>>> import numpy as np
>>> from edgecal.histogram import StreamingHistogram
>>> h = StreamingHistogram(1024)
>>> h.update(np.linspace(0, 1, 10001))
>>> round(mse(h), 2)          # uniform: the top level sits half a step below the maximum
1.0
>>> lo, hi = mse_range(h)     # never negative: all 255 steps above zero
>>> lo, round(hi, 2)
(0.0, 1.0)
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel
from ..errors import InputError
from ..histogram import StreamingHistogram
from .grid import best_split, hist_sides, symmetric_error
from .registry import register

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_REFINE = 40  # golden-section steps: the bracket shrinks by 0.618**40 ~ 4e-9


@kernel
def _sym(pos, ppre, ptop, neg, npre, ntop, t, levels, cw):
    """Error of the symmetric grid with threshold ``t`` over both signs."""
    return symmetric_error(pos, ppre, ptop, t / levels, levels, cw) + symmetric_error(neg, npre, ntop, t / levels, levels, cw)


@kernel
def _symmetric_search(pos, ppre, ptop, neg, npre, ntop, levels, candidates, cw):
    """Best threshold (bin units) of the symmetric grid, and its error."""
    top = max(ptop, ntop)
    best_t, best = top, np.inf
    errs = np.empty(candidates + 1)
    for k in range(candidates, 0, -1):  # ties go to the larger threshold
        t = top * k / candidates
        e = _sym(pos, ppre, ptop, neg, npre, ntop, t, levels, cw)
        errs[k] = e
        if e < best:
            best, best_t = e, t
    a, b = max(best_t - top / candidates, 0.0), min(best_t + top / candidates, top)
    for _ in range(_REFINE):
        c = b - _GOLDEN * (b - a)
        d = a + _GOLDEN * (b - a)
        ec = _sym(pos, ppre, ptop, neg, npre, ntop, c, levels, cw)
        ed = _sym(pos, ppre, ptop, neg, npre, ntop, d, levels, cw)
        if ec < ed:
            b = d
        else:
            a = c
    t = 0.5 * (a + b)
    e = _sym(pos, ppre, ptop, neg, npre, ntop, t, levels, cw)
    if e < best and t > 0.0:
        best, best_t = e, t
    return best_t, best


@kernel
def _asymmetric_search(pos, ppre, ptop, neg, npre, ntop, steps, candidates, cw):
    """(step, m_pos, error) of the best asymmetric grid, in bin units."""
    epos = np.empty(steps + 1)
    eneg = np.empty(steps + 1)
    widest = (ptop + ntop) / (steps - 1) if ntop > 0.0 and ptop > 0.0 else max(ptop, ntop) / steps
    best_s, best_m, best = widest, steps, np.inf
    for k in range(candidates, 0, -1):  # ties go to the larger step
        s = widest * k / candidates
        e, m = best_split(pos, ppre, ptop, neg, npre, ntop, s, steps, cw, epos, eneg)
        if e < best:
            best, best_s, best_m = e, s, m
    a, b = max(best_s - widest / candidates, widest * 1e-9), min(best_s + widest / candidates, widest)
    for _ in range(_REFINE):
        c = b - _GOLDEN * (b - a)
        d = a + _GOLDEN * (b - a)
        ec, _ = best_split(pos, ppre, ptop, neg, npre, ntop, c, steps, cw, epos, eneg)
        ed, _ = best_split(pos, ppre, ptop, neg, npre, ntop, d, steps, cw, epos, eneg)
        if ec < ed:
            b = d
        else:
            a = c
    s = 0.5 * (a + b)
    e, m = best_split(pos, ppre, ptop, neg, npre, ntop, s, steps, cw, epos, eneg)
    if e < best:
        best, best_s, best_m = e, s, m
    return best_s, best_m, best


def _check_candidates(candidates: object) -> int:
    if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or not 1 <= candidates <= 1 << 16:
        raise InputError(f"candidates must be an integer in [1, 65536], found {candidates!r}")
    return int(candidates)


def mse_range(hist: StreamingHistogram, candidates: int = 512, clip_weight: float = 1.0) -> tuple[float, float]:
    """(lo, hi) of the asymmetric int8 grid (255 steps, integer zero point) with the least squared error."""
    (pos, neg, w), k = hist_sides(hist), _check_candidates(candidates)
    if not pos[0].size and not neg[0].size:
        return 0.0, 0.0
    s, m_pos, _ = _asymmetric_search(*pos, *neg, 255, k, float(clip_weight))
    return -(255 - m_pos) * s * w, m_pos * s * w


def mse(hist: StreamingHistogram, candidates: int = 512, clip_weight: float = 1.0) -> float:
    """Minimise the expected squared int8 error (exact for the histogram's piecewise-uniform density)."""
    (pos, neg, w), k = hist_sides(hist), _check_candidates(candidates)
    if not pos[0].size and not neg[0].size:
        return 0.0
    t, _ = _symmetric_search(*pos, *neg, 127, k, float(clip_weight))
    return t * w


register("mse", fit=mse_range, bounds={"candidates": (1, 1 << 16), "clip_weight": (0.0, 1e6)})(mse)
