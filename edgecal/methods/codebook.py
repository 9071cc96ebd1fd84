"""The ``codebook`` method: 2**bits non-uniform levels (a lookup table) instead of a uniform grid.

The tensor is read as the piecewise-uniform density of its histogram over both
signs (each bin's count spread over the bin, the outermost bins ending at the exact
min and max) plus an atom at 0 for its exact zeros. A value is quantized to the
nearest level (decision boundaries at the midpoints between levels, a value on a
boundary going to the upper level) and dequantized through the table.

* ``objective="mse"``: Lloyd-Max. Levels start at the ``(k + 1/2) / K`` quantiles of
  ``p**(1/3)`` (the high-resolution optimum's level density, so few rounds are
  needed) and alternate: boundaries at the midpoints, each level at its cell's centroid
  (mean of the density and atom over the cell), until no level moves by more than
  ``tol`` bins or ``max_iter`` rounds.
* ``objective="kl"``: levels start at the quantiles of ``p``, then gradient descent on the levels of
  ``KL(P || Q)``, Q the continuous density averaged over each cell:
  ``N KL = integral p log p - sum_k M_k log(M_k / w_k)``. Its derivative in a
  boundary ``b`` between cells k and k+1 is ``(p(b) log(q_{k+1} / q_k) + q_k -
  q_{k+1}) / N`` (``q = M / w``), and a level moves both its boundaries by half its
  own move. A boundary where the density is positive next to an empty cell
  (``log 0``: no finite slope) contributes nothing to the gradient. Backtracking (Armijo) line search, same stopping rule.

When the tensor has exact zeros the level nearest 0 is set to 0 after the fit, so
zeros stay exact as on a uniform grid. The entry's ``amax`` is the largest |level|
(scale ``amax / 127`` for readers of uniform fields); ``params["trace"]`` records
the objective before and after, rounds and convergence.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel
from ..errors import InputError
from ..histogram import StreamingHistogram
from .grid import side
from .registry import Traced, register

_MAX_BITS = 8


def pieces(hist: StreamingHistogram) -> tuple[np.ndarray, np.ndarray, float]:
    """(breakpoints, densities, zero mass) of the signed density in bin units, breakpoints ascending."""
    w = hist.bin_width
    pc, _, ptop = side(hist.positive_counts(), max(hist.max or 0.0, 0.0), w)
    nc, _, ntop = side(hist.negative_counts(), max(-(hist.min or 0.0), 0.0), w)
    if not pc.size and not nc.size:
        raise InputError("the histogram holds no non-zero finite value; a codebook needs at least one")
    ep, en = _edges(pc.size, ptop), _edges(nc.size, ntop)
    xs = np.concatenate([-en[::-1], ep[1:]]) if nc.size else ep
    if not pc.size:
        xs = -en[::-1]
    dens = np.concatenate([(nc / np.diff(en))[::-1], pc / np.diff(ep)])
    return np.ascontiguousarray(xs), np.ascontiguousarray(dens), float(hist.zeros)


def _edges(n: int, top: float) -> np.ndarray:
    e = np.arange(n + 1, dtype=np.float64)
    if n:
        e[-1] = max(top, n - 1 + 1e-3)
    return e


@kernel
def _prefix(xs, ds):
    """Rows: mass and first moment below each breakpoint (continuous part)."""
    pre = np.zeros((2, xs.size))
    for j in range(ds.size):
        a, b = xs[j], xs[j + 1]
        pre[0, j + 1] = pre[0, j] + ds[j] * (b - a)
        pre[1, j + 1] = pre[1, j] + ds[j] * (b * b - a * a) * 0.5
    return pre


@kernel
def _below(xs, ds, pre, x):
    """(mass, moment) of the continuous part below x."""
    if x <= xs[0]:
        return 0.0, 0.0
    if x >= xs[xs.size - 1]:
        return pre[0, xs.size - 1], pre[1, xs.size - 1]
    j = np.searchsorted(xs, x, side="right") - 1
    return pre[0, j] + ds[j] * (x - xs[j]), pre[1, j] + ds[j] * (x * x - xs[j] * xs[j]) * 0.5


@kernel
def _density_at(xs, ds, x):
    if x < xs[0] or x >= xs[xs.size - 1]:
        return 0.0
    return ds[np.searchsorted(xs, x, side="right") - 1]


@kernel
def _bounds(levels, lo, hi):
    """Cell edges: lo, the midpoints, hi."""
    k = levels.size
    b = np.empty(k + 1)
    b[0], b[k] = lo, hi
    for i in range(1, k):
        b[i] = 0.5 * (levels[i - 1] + levels[i])
    return b


@kernel
def _cell(xs, ds, pre, zeros, a, b, last):
    """(mass, moment) of [a, b) (of [a, b] for the last cell), the atom at 0 included."""
    m0, m1 = _below(xs, ds, pre, a)
    n0, n1 = _below(xs, ds, pre, b)
    atom = zeros if (a <= 0.0 < b) or (last and b == 0.0) else 0.0
    return n0 - m0 + atom, n1 - m1


@kernel
def mse_of(xs, ds, pre, zeros, levels):
    """Expected squared error (bin units, counts) of nearest-level quantization."""
    b = _bounds(levels, xs[0], xs[xs.size - 1])
    err = zeros * min(np.abs(levels)) ** 2
    for k in range(levels.size):
        for j in range(ds.size):  # integral of (x - l)^2 over each piece inside the cell
            lo, hi = max(b[k], xs[j]), min(b[k + 1], xs[j + 1])
            if hi > lo and ds[j] > 0.0:
                err += ds[j] * ((hi - levels[k]) ** 3 - (lo - levels[k]) ** 3) / 3.0
    return err


@kernel
def lloyd(xs, ds, pre, zeros, levels, max_iter, tol):
    """Lloyd-Max in place; returns (rounds, last largest move)."""
    move = 0.0
    for it in range(max_iter):
        b = _bounds(levels, xs[0], xs[xs.size - 1])
        move = 0.0
        for k in range(levels.size):
            mass, moment = _cell(xs, ds, pre, zeros, b[k], b[k + 1], k == levels.size - 1)
            if mass > 0.0:
                new = moment / mass
                move = max(move, abs(new - levels[k]))
                levels[k] = new
        levels.sort()
        if move < tol:
            return it + 1, move
    return max_iter, move


@kernel
def kl_of(xs, ds, pre, levels):
    """N * KL(P || Q) of the continuous part up to the constant integral of p log p: -sum M log(M / w)."""
    b = _bounds(levels, xs[0], xs[xs.size - 1])
    acc = 0.0
    for k in range(levels.size):
        m0, _ = _below(xs, ds, pre, b[k])
        m1, _ = _below(xs, ds, pre, b[k + 1])
        w, mass = b[k + 1] - b[k], m1 - m0
        if mass > 0.0 and w > 0.0:
            acc -= mass * math.log(mass / w)
    return acc


@kernel
def kl_level_gradient(xs, ds, pre, levels, out):
    """d kl_of / d levels into ``out``; a boundary with density next to an empty cell contributes 0."""
    k = levels.size
    b = _bounds(levels, xs[0], xs[xs.size - 1])
    q = np.empty(k)
    for i in range(k):
        m0, _ = _below(xs, ds, pre, b[i])
        m1, _ = _below(xs, ds, pre, b[i + 1])
        q[i] = (m1 - m0) / (b[i + 1] - b[i]) if b[i + 1] > b[i] else 0.0
    out[:] = 0.0
    for i in range(1, k):
        p = _density_at(xs, ds, b[i])
        if p > 0.0 and (q[i - 1] <= 0.0 or q[i] <= 0.0):
            continue  # mass enters an empty cell: log 0, no finite slope
        g = (p * math.log(q[i] / q[i - 1]) if p > 0.0 else 0.0) + q[i - 1] - q[i]
        out[i - 1] += 0.5 * g
        out[i] += 0.5 * g


@kernel
def kl_descent(xs, ds, pre, levels, max_iter, tol):
    """Gradient descent on the levels with backtracking; returns (rounds, last largest move)."""
    g = np.empty(levels.size)
    f = kl_of(xs, ds, pre, levels)
    alpha, move = 0.0, 0.0
    for it in range(max_iter):
        kl_level_gradient(xs, ds, pre, levels, g)
        gmax = np.abs(g).max()
        if gmax == 0.0:
            return it + 1, 0.0
        if alpha <= 0.0:
            alpha = 1.0 / gmax  # first trial: the steepest level moves one bin
        moved = False
        while alpha * gmax >= tol:
            trial = np.minimum(np.maximum(levels - alpha * g, xs[0]), xs[xs.size - 1])
            trial.sort()
            v = kl_of(xs, ds, pre, trial)
            if v <= f - 1e-4 * alpha * (g * g).sum():
                move, f, moved = alpha * gmax, v, True
                levels[:] = trial
                alpha *= 2.0
                break
            alpha *= 0.5
        if not moved or move < tol:
            return it + 1, move
    return max_iter, move


def _quantiles(xs: np.ndarray, ds: np.ndarray, zeros: float, k: int, power: float) -> np.ndarray:
    """Levels at the (i + 1/2)/k quantiles of the density raised to ``power``; the zeros weigh one level at most."""
    cdf = np.concatenate([[0.0], np.cumsum(ds**power * np.diff(xs))])
    atom = min(zeros ** power, cdf[-1] / max(k - 1, 1))  # zeros need one level (set to 0 after the fit), not more
    at_zero = np.interp(0.0, xs, cdf)
    total = cdf[-1] + atom
    out = np.empty(k)
    for i in range(k):
        target = (i + 0.5) / k * total
        if target <= at_zero:
            out[i] = np.interp(target, cdf, xs)
        elif target <= at_zero + atom:
            out[i] = 0.0
        else:
            out[i] = np.interp(target - atom, cdf, xs)
    return np.maximum.accumulate(out)


def fit_levels(hist: StreamingHistogram, bits: int = 8, objective: str = "mse", max_iter: int = 2000,
               tol: float = 1e-5) -> tuple[np.ndarray, dict]:
    """The codebook of ``hist`` (real units, ascending) and its record; see the module docstring."""
    if objective not in ("mse", "kl"):
        raise InputError(f"codebook objective must be 'mse' or 'kl', found {objective!r}")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= _MAX_BITS:
        raise InputError(f"codebook bits must be an integer in [1, {_MAX_BITS}], found {bits!r}")
    xs, ds, zeros = pieces(hist)
    pre = _prefix(xs, ds)
    levels = _quantiles(xs, ds, zeros, 1 << int(bits), 1.0 / 3.0 if objective == "mse" else 1.0)
    start = mse_of(xs, ds, pre, zeros, levels) if objective == "mse" else kl_of(xs, ds, pre, levels)
    if objective == "mse":
        rounds, move = lloyd(xs, ds, pre, zeros, levels, int(max_iter), float(tol))
        end = mse_of(xs, ds, pre, zeros, levels)
    else:
        rounds, move = kl_descent(xs, ds, pre, levels, int(max_iter), float(tol))
        end = kl_of(xs, ds, pre, levels)
    if zeros > 0:
        levels[np.argmin(np.abs(levels))] = 0.0
        levels.sort()
    w = hist.bin_width
    levels = levels * w  # in real units first: a gap of one float step in bin units can round to 0 when scaled
    for i in range(1, levels.size):  # levels that met (a cell emptied) are kept apart: the LUT ascends strictly
        levels[i] = max(levels[i], np.nextafter(levels[i - 1], np.inf))
    record = {"objective": objective, "start": float(start), "end": float(end), "rounds": int(rounds),
              "last_move": float(move * w), "converged": bool(rounds < max_iter)}
    return levels, record


def codebook(hist: StreamingHistogram, bits: int = 8, objective: str = "mse", max_iter: int = 2000,
             tol: float = 1e-5) -> float:
    """2**bits non-uniform levels (a LUT) by Lloyd-Max (``mse``) or KL descent (``kl``); the entry carries them."""
    levels, record = fit_levels(hist, bits, objective, max_iter, tol)
    value = Traced(float(np.abs(levels).max()), record)
    value.lut = tuple(float(v) for v in levels)
    return value


def codebook_range(hist: StreamingHistogram, bits: int = 8, objective: str = "mse", max_iter: int = 2000,
                   tol: float = 1e-5) -> tuple[float, float]:
    """(lowest level, highest level), both carrying the levels: the codebook does not depend on the scheme."""
    levels, record = fit_levels(hist, bits, objective, max_iter, tol)
    ends = Traced(float(min(levels[0], 0.0)), record), Traced(float(max(levels[-1], 0.0)), record)
    for end in ends:
        end.lut = tuple(float(v) for v in levels)
    return ends


register("codebook", fit=codebook_range,
         bounds={"bits": (1, _MAX_BITS), "max_iter": (0, 100_000), "tol": (1e-15, 1.0)}, auto_candidate=False)(codebook)
