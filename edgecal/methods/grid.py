"""The squared error of a uniform 8-bit grid on the density a histogram describes.

A histogram is read as a piecewise-uniform density: each bin's count spread evenly
over the bin, except that the last occupied bin of each sign ends at the exact
extreme value seen (nothing lies beyond ``max |x|``). Exact zeros are exact on
every grid and cost nothing.

One sign ("side") of a tensor is quantized with step ``s`` and ``m`` levels above
zero: level ``k`` (``0 <= k < m``) takes ``[(k - 1/2) s, (k + 1/2) s)`` to ``k s``
(round half up) and everything from ``(m - 1/2) s`` on goes to the top level ``m s``
(clipping). The error of a side is the integral of ``(x - level)**2`` over its
density, in bin units and counts; it is exact for the density above, computed from
prefix sums of the bins' moments so that each level costs O(1).

A scheme is a choice of levels per side: symmetric int8 keeps 127 on each side of
zero; asymmetric int8 (TFLite, ONNX Runtime's S8/U8) has 255 steps shared as
``m_neg + m_pos = 255`` with an integer zero point ``-128 + m_neg``.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel


@kernel
def side_moments(counts, top):
    """Prefix moments (3, n+1) of the piecewise-uniform density: sums of mass, mass*x, mass*x**2.

    Bin j covers [j, j+1) in bin units, the last one [n-1, top].
    """
    n = counts.size
    pre = np.zeros((3, n + 1))
    for j in range(n):
        a = float(j)
        b = top if j == n - 1 else a + 1.0
        c = counts[j]
        pre[0, j + 1] = pre[0, j] + c
        pre[1, j + 1] = pre[1, j] + c * (a + b) * 0.5
        pre[2, j + 1] = pre[2, j] + c * (a * a + a * b + b * b) / 3.0
    return pre


@kernel
def _tail(counts, pre, top, p):
    """Moments of the mass at or above ``p`` (bin units): (m0, m1, m2)."""
    n = counts.size
    if p >= top or n == 0:
        return 0.0, 0.0, 0.0
    if p <= 0.0:
        return pre[0, n], pre[1, n], pre[2, n]
    j = int(math.floor(p))
    if j >= n:
        return 0.0, 0.0, 0.0
    b = top if j == n - 1 else j + 1.0
    frac = (b - p) / (b - j) if b > j else 0.0
    m = counts[j] * frac
    m0 = pre[0, n] - pre[0, j + 1] + m
    m1 = pre[1, n] - pre[1, j + 1] + m * (p + b) * 0.5
    m2 = pre[2, n] - pre[2, j + 1] + m * (p * p + p * b + b * b) / 3.0
    return m0, m1, m2


@kernel
def side_errors(counts, pre, top, s, max_levels, clip_weight, out):
    """``out[m]`` = error of this side with step ``s`` and ``m`` levels, for m = 0 .. max_levels.

    The part of the error from values above the top level (clipping) counts
    ``clip_weight`` times.
    """
    below = 0.0  # error of levels 0 .. m-1 (no clipping there)
    for m in range(max_levels + 1):
        edge = (m - 0.5) * s if m > 0 else 0.0
        t0, t1, t2 = _tail(counts, pre, top, edge)
        q = m * s
        a0, a1, a2 = _tail(counts, pre, top, q)  # clipped: above the top level
        rounded = max((t2 - a2) - 2.0 * q * (t1 - a1) + q * q * (t0 - a0), 0.0)
        out[m] = below + rounded + clip_weight * max(a2 - 2.0 * q * a1 + q * q * a0, 0.0)
        # the cell of level m when it is not the top one: [(m - 1/2) s, (m + 1/2) s)
        h0, h1, h2 = _tail(counts, pre, top, (m + 0.5) * s)
        c0, c1, c2 = t0 - h0, t1 - h1, t2 - h2
        below += max(c2 - 2.0 * q * c1 + q * q * c0, 0.0)
        if h0 == 0.0:  # nothing above: every larger m costs the same
            for k in range(m + 1, max_levels + 1):
                out[k] = below
            return
    return


@kernel
def symmetric_error(counts, pre, top, s, levels, clip_weight):
    """Error of one side with step ``s`` and exactly ``levels`` levels above zero."""
    out = np.empty(levels + 1)
    side_errors(counts, pre, top, s, levels, clip_weight, out)
    return out[levels]


@kernel
def best_split(pos, ppre, ptop, neg, npre, ntop, s, steps, clip_weight, epos, eneg):
    """(error, m_pos) of the best share of ``steps`` steps between the sides at step ``s``."""
    side_errors(pos, ppre, ptop, s, steps, clip_weight, epos)
    side_errors(neg, npre, ntop, s, steps, clip_weight, eneg)
    best = np.inf
    best_m = steps
    for m in range(steps, -1, -1):  # ties go to more levels on the positive side
        e = epos[m] + eneg[steps - m]
        if e < best:
            best = e
            best_m = m
    return best, best_m


def hist_sides(hist) -> tuple[tuple[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray, float], float]:
    """(positive side, negative side, bin width) of a `StreamingHistogram`, each side as `side` gives it."""
    w = hist.bin_width
    return (side(hist.positive_counts(), max(hist.max or 0.0, 0.0), w),
            side(hist.negative_counts(), max(-(hist.min or 0.0), 0.0), w), w)


def side(counts: np.ndarray, extreme: float, width: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(counts, prefix moments, top) of one sign, in bin units; ``extreme`` is that sign's max |x|."""
    c = np.ascontiguousarray(counts, dtype=np.float64)
    nz = np.flatnonzero(c)
    c = c[: nz[-1] + 1] if nz.size else c[:0]
    top = float(c.size) if not c.size else min(float(c.size), max(extreme / width, c.size - 1.0))
    return c, side_moments(c, top), top
