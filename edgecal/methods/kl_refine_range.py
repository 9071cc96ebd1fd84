"""``kl-refine``'s range for the asymmetric scheme: the step continuous, the zero point an integer.

The tensor's two signs are read as in `edgecal.methods.kl_refine` (piecewise-uniform
densities in bin units). An asymmetric int8 grid has 255 steps of width ``s`` shared
as ``m_pos`` above zero and ``m_neg = 255 - m_pos`` below (zero point
``-128 + m_neg``), so the thresholds are ``t_pos = m_pos s`` and ``t_neg = m_neg s``.
``P`` is the whole tensor with each sign's tail folded into its last bin-width below
its threshold, ``Q`` each sign cut at its threshold and averaged over ``m`` cells of
width ``s``; ``J(s) = KL(P/N || Q/F)`` over both signs together:

``J = (R_pos + R_neg) / N + log(F / N)``, ``R = N_side (KL_side - log(F_side / N_side))``

with ``KL_side`` the one-sign objective of `kl_refine` at ``(t, m)`` and ``F`` the
mass kept below the thresholds. Its derivative in ``s`` follows from the one-sign
gradient: ``dJ/ds = sum m (N_side (g_side - p(t) / F_side)) / N + sum m p(t) / F``.

Each sign's threshold is at least ``min(start_bin, its top)`` bins, as ``kl``'s
candidates start there (folding a whole sign into one bin would otherwise reach
KL ~ 0). Search: ``candidates`` steps evenly spaced up to the one that covers both signs,
each with its best split (ties to more positive steps), then gradient descent on
``s`` at the best split (the zero point is an integer and stays), with the same
backtracking line search, tolerance and cap as the symmetric case. A sign with no
values gets no steps (a never-negative tensor: zero point -128).
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel
from ..histogram import StreamingHistogram
from .grid import side
from .kl_refine import _cdf, _dens, kl_at, kl_gradient, kl_refine, prefix
from .registry import Traced, register

_STEPS = 255


@kernel
def joint_kl(ppre, pd, npre, nd, tops, s, m_pos):
    """J(s) for the split ``m_pos`` steps above zero.

    ``tops`` = [top+, top-, floor+, floor-]: a sign's threshold below its floor
    (``min(start_bin, top)`` bins, as ``kl`` starts its candidates) makes J infinite.
    Without that floor, folding a whole sign into one bin would reach KL ~ 0.
    """
    n = ppre[0, pd.size] + npre[0, nd.size]
    raw = 0.0
    kept = 0.0
    for k in range(2):
        pre, d = (ppre, pd) if k == 0 else (npre, nd)
        ns = pre[0, d.size]
        if ns == 0.0:
            continue
        t = (m_pos if k == 0 else _STEPS - m_pos) * s
        if t < max(tops[2 + k], 1.0):
            return np.inf
        v = kl_at(pre, d, tops[k], t, m_pos if k == 0 else _STEPS - m_pos)
        f = _cdf(pre, d, tops[k], t)
        raw += ns * (v - math.log(f / ns))
        kept += f
    return raw / n + math.log(kept / n)


@kernel
def joint_gradient(ppre, pd, npre, nd, tops, s, m_pos):
    """(dJ/ds, True), analytic; (nan, False) where a sign's gradient does not exist."""
    n = ppre[0, pd.size] + npre[0, nd.size]
    acc = 0.0
    flow = 0.0
    kept = 0.0
    for k in range(2):
        pre, d = (ppre, pd) if k == 0 else (npre, nd)
        ns = pre[0, d.size]
        if ns == 0.0:
            continue
        m = m_pos if k == 0 else _STEPS - m_pos
        t = m * s
        g, ok = kl_gradient(pre, d, tops[k], t, m)
        if not ok:
            return np.nan, False
        f = _cdf(pre, d, tops[k], t)
        p = _dens(d, tops[k], t)
        acc += m * ns * (g - p / f)
        flow += m * p
        kept += f
    return acc / n + flow / kept, True


@kernel
def _best_split(ppre, pd, npre, nd, tops, s):
    """(J, m_pos) of the best split at step s; ties to more positive steps."""
    lo = 0 if ppre[0, pd.size] == 0.0 else 1  # a sign with values gets at least one step, one without none
    hi = _STEPS if npre[0, nd.size] == 0.0 else _STEPS - 1
    if ppre[0, pd.size] == 0.0:
        hi = 0
    if npre[0, nd.size] == 0.0:
        lo = _STEPS
    best, best_m = np.inf, hi
    for m in range(hi, lo - 1, -1):
        v = joint_kl(ppre, pd, npre, nd, tops, s, m)
        if v < best:
            best, best_m = v, m
    return best, best_m


@kernel
def _slope(ppre, pd, npre, nd, tops, s, m_pos):
    g, ok = joint_gradient(ppre, pd, npre, nd, tops, s, m_pos)
    if ok:
        return g, False
    h = 1e-6 * s
    return (joint_kl(ppre, pd, npre, nd, tops, s + h, m_pos) - joint_kl(ppre, pd, npre, nd, tops, s, m_pos)) / h, True


@kernel
def refine_range(ppre, pd, npre, nd, tops, candidates, limits, out):
    """Grid of steps with their best splits, then descent on s.

    ``limits`` = [max_iter, tol]; ``out`` = [s0, m_pos, J0, s, J, iterations, last step, gradient, fd, converged].
    """
    widest = (tops[0] + tops[1]) / _STEPS
    s, j, m_pos = widest, np.inf, _STEPS
    for k in range(candidates, 0, -1):
        v, m = _best_split(ppre, pd, npre, nd, tops, widest * k / candidates)
        if v < j:
            j, s, m_pos = v, widest * k / candidates, m
    out[0], out[1], out[2] = s, m_pos, j
    alpha, step, g, fd, it, converged = 0.0, 0.0, 0.0, 0, 0, limits[0] == 0
    while it < limits[0] and math.isfinite(j):
        it += 1
        g, used = _slope(ppre, pd, npre, nd, tops, s, m_pos)
        fd += used
        if g == 0.0 or not math.isfinite(g):
            converged = True
            break
        if alpha <= 0.0:
            alpha = 0.01 * s / abs(g)  # first trial: 1 % of the step
        moved = False
        while abs(alpha * g) >= limits[1] * s:
            cand = min(max(s - alpha * g, 1e-9 * widest), widest)
            v = joint_kl(ppre, pd, npre, nd, tops, cand, m_pos)
            if v <= j - 1e-4 * abs(g) * abs(cand - s) and cand != s:
                step, s, j, moved = cand - s, cand, v, True
                alpha *= 2.0
                break
            alpha *= 0.5
        if not moved or abs(step) < limits[1] * s:
            converged = True
            break
    out[3], out[4], out[5], out[6], out[7], out[8], out[9] = s, j, it, step, g, fd, converged


def _sign(counts: np.ndarray, extreme: float, width: float) -> tuple[np.ndarray, np.ndarray, float]:
    c, _, top = side(counts, extreme, width)
    if not c.size:
        return np.zeros((2, 1)), np.zeros(0), 0.0
    return prefix(c, top)


def kl_refine_range(hist: StreamingHistogram, num_levels: int = 128, start_bin: int = 128, max_iter: int = 50,
                    tol: float = 1e-6, candidates: int = 128) -> tuple[float, float]:
    """(lo, hi) of the asymmetric grid minimising the joint KL; the record rides on both ends.

    ``start_bin`` is each sign's smallest threshold in bins (its whole range when shorter);
    ``num_levels`` belongs to the symmetric search (here the levels are the 255 steps).
    """
    w = hist.bin_width
    ppre, pd, ptop = _sign(hist.positive_counts(), max(hist.max or 0.0, 0.0), w)
    npre, nd, ntop = _sign(hist.negative_counts(), max(-(hist.min or 0.0), 0.0), w)
    if not pd.size and not nd.size:
        return 0.0, 0.0
    out = np.zeros(10)
    tops = np.array([ptop, ntop, min(float(start_bin), ptop), min(float(start_bin), ntop)])
    refine_range(ppre, pd, npre, nd, tops, int(candidates), np.array([max_iter, tol], float), out)
    s, m_pos = out[3], int(out[1])
    trace = {"step_grid": float(out[0] * w), "zero_point": -128 + _STEPS - m_pos, "kl_grid": float(out[2]),
             "kl": float(out[4]), "iterations": int(out[5]), "last_step": float(out[6] * w),
             "gradient": float(out[7] / w), "finite_differences": int(out[8]), "converged": bool(out[9])}
    return Traced(-(_STEPS - m_pos) * s * w, trace), Traced(m_pos * s * w, trace)


register("kl-refine", fit=kl_refine_range,
         bounds={"num_levels": (1, 1 << 16), "start_bin": (1, 1 << 24), "max_iter": (0, 10_000), "tol": (1e-12, 1.0),
                 "candidates": (1, 1 << 12)}, auto_candidate=False)(kl_refine)
