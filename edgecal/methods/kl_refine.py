"""The ``kl-refine`` method: the KL threshold as a continuous parameter, refined by gradient descent.

The |x| histogram is read as a piecewise-uniform density ``p`` in bin units (bin j
spread evenly over [j, j+1), the last occupied bin ending at max |x|; exact zeros
are exact on every grid and left out, as ``kl`` does). For a threshold ``t`` (bin
units) and ``L`` levels (step ``s = t / L``):

* ``P_t`` is ``p`` on [0, t) with the mass above ``t``, ``m(t)``, spread evenly over
  the last bin-width below the cut, [t - 1, t) (TensorRT folds it into the last
  kept bin); its mass is N;
* ``Q_t`` is ``p`` cut at ``t`` (no tail) replaced on every cell [k s, (k+1) s) by
  its mean there; its mass is ``F(t) = N - m``;
* ``KL(t) = integral of (P_t/N) log((P_t/N) / (Q_t/F))``. With ``M_k`` the cell
  masses of ``P_t`` and ``M0_k`` those of ``Q_t``, ``integral P_t log Q_t = sum_k M_k
  log(M0_k / s)``, so ``KL = (A - B) / N + log(F / N)`` with ``A = integral P_t log
  P_t`` and ``B = sum_k M_k log(M0_k / s)``: O(L) from prefix sums of the bins' mass
  and of ``c log(c / width)``. A cell where ``P_t`` has mass and ``Q_t`` none (the
  tail folded into an empty last cell) makes KL infinite, as ``kl`` rejects it.

Gradient (analytic, right derivative), with ``m' = -p(t)`` and f(u) = u log u:
``A' = f(p(t-1)) - f(p(t-1) + m) + f(p(t) + m) + m' * integral over [t-1, t) of
(log(p + m) + 1)``; ``B' = sum_k [M_k' log(M0_k / s) + M_k M0_k' / M0_k] - N / t``,
where ``M0_k'`` moves the cell's ends (``(k+1)/L`` and ``k/L`` times the density
there), ``M_k'`` also adds what the moving strip changes inside the cell, and the
top cell's ``M_k'`` is minus the others' sum; ``(log F)' = p(t) / F``. ``KL`` is
not differentiable where ``t``, ``t - 1`` or a cell edge ``k t / L`` crosses a bin
edge (the density jumps there: the right derivative is used, and the optimum
often sits on such a kink), nor where a cell of ``Q_t`` is empty while mass moves
into or out of it (``M log M`` has an infinite slope at 0): there the gradient is
a forward finite difference (backward at the upper bound), counted in the record.

Descent: start from the best bin edge ``t = start_bin .. n`` (the grid optimum of
this same objective, ties to the larger), then gradient steps ``t -= a * g`` with
a backtracking (Armijo) line search on ``a``; stop when a step moves ``t`` by less
than ``tol`` bins (converged) or after ``max_iter`` steps. The threshold can only
lower KL below the grid optimum. The table entry's ``params["trace"]`` records the
grid threshold and KL, the final KL, iterations, the last step, the final gradient
and the number of finite-difference gradients.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel
from ..errors import InputError
from ..histogram import StreamingHistogram
from .grid import side
from .registry import Traced

_MIN_LAST_WIDTH = 1e-3  # bins: a maximum sitting on a bin edge would make a point mass


@kernel
def _dens(d, top, x):
    """Density at ``x`` (right-continuous), 0 outside [0, top)."""
    if x < 0.0 or x >= top:
        return 0.0
    return d[min(math.floor(x), d.size - 1)]


@kernel
def _cdf(pre, d, top, x):
    """Mass below ``x``."""
    if x <= 0.0:
        return 0.0
    if x >= top:
        return pre[0, d.size]
    j = min(math.floor(x), d.size - 1)
    return pre[0, j] + d[j] * (x - j)


@kernel
def _flogf(pre, d, top, x):
    """Integral of p log p over [0, x)."""
    if x <= 0.0:
        return 0.0
    if x >= top:
        return pre[1, d.size]
    j = min(math.floor(x), d.size - 1)
    v = d[j]
    return pre[1, j] + ((x - j) * v * math.log(v) if v > 0.0 else 0.0)


@kernel
def _strip(d, top, a, b, m, power):
    """Integral over [a, b) of f(p + m) (power 1: f = u log u) or log(p + m) + 1 (power 0)."""
    acc = 0.0
    x = max(a, 0.0)
    while x < b:
        nxt = min(math.floor(x) + 1.0, b)
        if x < top < nxt:
            nxt = top
        u = _dens(d, top, x) + m
        if u > 0.0:
            acc += (nxt - x) * (u * math.log(u) if power == 1 else math.log(u) + 1.0)
        elif power == 0:
            return -np.inf
        x = nxt
    return acc


@kernel
def _cells(pre, d, top, t, levels, folded, plain):
    """Cell masses of P_t (``folded``) and of p cut at t (``plain``); returns the tail mass m."""
    m = pre[0, d.size] - _cdf(pre, d, top, t)
    s = t / levels
    lo_strip = max(t - 1.0, 0.0)
    width = t - lo_strip
    for k in range(levels):
        a = k * s
        b = t if k == levels - 1 else (k + 1) * s
        plain[k] = _cdf(pre, d, top, b) - _cdf(pre, d, top, a)
        folded[k] = plain[k] + m * max(0.0, b - max(a, lo_strip)) / width
    return m


@kernel
def kl_at(pre, d, top, t, levels):
    """KL(P_t || Q_t) of the continuous objective (module docstring), t in bin units, t >= 1; inf if Q_t = 0 < P_t."""
    n_mass = pre[0, d.size]
    folded = np.empty(levels)
    plain = np.empty(levels)
    m = _cells(pre, d, top, t, levels, folded, plain)
    if m >= n_mass:
        return np.inf
    a = _flogf(pre, d, top, t - 1.0) + _strip(d, top, t - 1.0, t, m, 1)
    s = t / levels
    b = 0.0
    for k in range(levels):
        if folded[k] > 0.0:
            if plain[k] <= 0.0:
                return np.inf
            b += folded[k] * math.log(plain[k] / s)
    return (a - b) / n_mass + math.log((n_mass - m) / n_mass)


@kernel
def _f(u):
    return u * math.log(u) if u > 0.0 else 0.0


@kernel
def _cell_rate(pre, d, top, t, levels, k, m, dm):
    """(dM_k/dt of P_t, dM_k/dt of p cut at t) for a cell below the top one."""
    a = k * t / levels
    b = (k + 1) * t / levels
    da, db = _dens(d, top, a), _dens(d, top, b)
    pa = da + (m if a >= t - 1.0 else 0.0)
    pb = db + (m if b >= t - 1.0 else 0.0)
    ga = dm * (a - t + 1.0) - m if a > t - 1.0 else 0.0
    gb = dm * (b - t + 1.0) - m if b > t - 1.0 else 0.0
    return pb * (k + 1) / levels - pa * k / levels + gb - ga, db * (k + 1) / levels - da * k / levels


@kernel
def kl_gradient(pre, d, top, t, levels):
    """(dKL/dt, True) at t, the analytic right derivative; (nan, False) where it does not exist."""
    n_mass = pre[0, d.size]
    folded = np.empty(levels)
    plain = np.empty(levels)
    m = _cells(pre, d, top, t, levels, folded, plain)
    pt = _dens(d, top, t)
    dm = -pt
    p1 = _dens(d, top, t - 1.0)
    da = _f(p1) - _f(p1 + m) + _f(pt + m)
    if dm != 0.0:
        da += dm * _strip(d, top, t - 1.0, t, m, 0)
    db = -n_mass / t
    rest = 0.0  # the top cell's folded mass moves by minus the others' (P_t keeps mass N)
    for k in range(levels):
        if k < levels - 1:
            rate, rate0 = _cell_rate(pre, d, top, t, levels, k, m, dm)
            rest -= rate
        else:
            rate, rate0 = rest, pt - _dens(d, top, t - t / levels) * (levels - 1) / levels
        if plain[k] <= 0.0:  # an empty cell: no term, unless mass moves in (rounding aside)
            if abs(rate) > 1e-12 * n_mass or abs(rate0) > 1e-12 * n_mass or folded[k] > 0.0:
                return np.nan, False
            continue
        db += rate * math.log(plain[k] * levels / t) + folded[k] * rate0 / plain[k]
    g = (da - db) / n_mass + pt / (n_mass - m)
    return g, math.isfinite(g)


@kernel
def _slope(pre, d, top, t, levels, hi):
    """Analytic gradient, or a forward (backward at the upper bound) finite difference; (g, used_fd)."""
    g, ok = kl_gradient(pre, d, top, t, levels)
    if ok:
        return g, False
    h = 1e-6 * max(t, 1.0)
    if t + h > hi:
        return (kl_at(pre, d, top, t, levels) - kl_at(pre, d, top, t - h, levels)) / h, True
    return (kl_at(pre, d, top, t + h, levels) - kl_at(pre, d, top, t, levels)) / h, True


@kernel
def _grid_best(pre, d, top, levels, start):
    """Best bin edge t = start .. n (and top), ties to the larger; (t, KL)."""
    best_t, best = top, kl_at(pre, d, top, top, levels)
    for i in range(d.size, start - 1, -1):
        ti = float(i)
        if ti >= top:
            continue
        v = kl_at(pre, d, top, ti, levels)
        if v < best:
            best, best_t = v, ti
    return best_t, best


@kernel
def refine(pre, d, top, levels, start, max_iter, tol, out):
    """Grid optimum, then gradient descent.

    ``out`` = [t0, kl0, t, kl, iterations, last step, gradient, finite differences, converged].
    """
    t, kl = _grid_best(pre, d, top, levels, start)
    out[0], out[1] = t, kl
    lo, hi = max(1.0, min(float(start), top)), top
    alpha, step, g, fd, it, converged = 0.0, 0.0, 0.0, 0, 0, max_iter == 0
    while it < max_iter:
        it += 1
        g, used = _slope(pre, d, top, t, levels, hi)
        fd += used
        if g == 0.0:
            converged = True
            break
        if alpha <= 0.0:
            alpha = 1.0 / abs(g)  # first trial: one bin
        moved = False
        while abs(alpha * g) >= tol:
            cand = min(max(t - alpha * g, lo), hi)
            v = kl_at(pre, d, top, cand, levels)
            if v <= kl - 1e-4 * abs(g) * abs(cand - t) and cand != t:
                step, t, kl, moved = cand - t, cand, v, True
                alpha *= 2.0
                break
            alpha *= 0.5
        if not moved or abs(step) < tol:
            converged = True
            break
    out[2], out[3], out[4], out[5], out[6], out[7], out[8] = t, kl, it, step, g, fd, converged


def density(hist: StreamingHistogram) -> tuple[np.ndarray, np.ndarray, float]:
    """(prefix sums [mass, c log density], densities, top) of the |x| histogram in bin units."""
    c, _, top = side(hist.abs_counts(), hist.amax, hist.bin_width)
    if not c.size:
        raise InputError("the histogram holds no non-zero finite value; expected at least one")
    return prefix(c, top)


def prefix(counts: np.ndarray, top: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The kernels' view of bins ``counts`` (bin j over [j, j+1), the last one over [n-1, top])."""
    c = np.ascontiguousarray(counts, dtype=np.float64)
    top = max(float(top), c.size - 1 + _MIN_LAST_WIDTH)
    widths = np.ones(c.size)
    widths[-1] = top - (c.size - 1)
    d = c / widths
    logs = np.where(c > 0, c * np.log(np.where(d > 0, d, 1.0)), 0.0)
    pre = np.zeros((2, c.size + 1))
    pre[0, 1:] = np.cumsum(c)
    pre[1, 1:] = np.cumsum(logs)
    return pre, d, top


def kl_refine(hist: StreamingHistogram, num_levels: int = 128, start_bin: int = 128, max_iter: int = 50,
              tol: float = 1e-6, candidates: int = 128) -> float:
    """Minimise KL over a continuous threshold: the best bin edge, then gradient descent (trace in params).

    ``candidates`` is the asymmetric range's step grid (`kl_refine_range`); registered there.
    """
    pre, d, top = density(hist)
    out = np.zeros(9)
    refine(pre, d, top, int(num_levels), int(start_bin), int(max_iter), float(tol), out)
    w = hist.bin_width
    trace = {"t_grid": float(out[0] * w), "kl_grid": float(out[1]), "kl": float(out[3]),
             "iterations": int(out[4]), "last_step": float(out[5] * w), "gradient": float(out[6] / w),
             "finite_differences": int(out[7]), "converged": bool(out[8])}
    return Traced(out[2] * w, trace)
