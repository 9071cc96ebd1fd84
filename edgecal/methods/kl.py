"""The ``kl`` method: TensorRT's entropy calibration with NVIDIA's open semantics.

For every candidate number of kept bins ``i`` (``start_bin`` .. ``n``, the full range
included):

* P is ``counts[:i]`` with the mass above the cut folded into its last bin;
* Q groups the kept bins into ``num_levels`` levels (bin ``j`` belongs to level
  ``floor(j * num_levels / i)``) and spreads each level's mass evenly over its
  non-empty bins only; empty bins stay empty;
* both are normalised and ``KL(P || Q)`` is computed in float64 with no smoothing: a
  candidate whose Q is 0 where P is not (outliers folded into an empty last bin) is
  rejected;
* the smallest KL wins, ties going to the larger ``i``; the threshold is the right
  edge of the last kept bin, ``i * bin_width``.

A literal evaluation costs O(n) per candidate, O(n**2) in all. Here every level's
terms come from prefix sums (counts, non-empty bins, and ``c*log(c)`` kept in
double-double so that differences stay accurate), which makes each candidate
O(num_levels). `kl_search` also gives up early on candidates that cannot win (see
`_kl_search`); `kl_divergences` evaluates every candidate in full.

>>> import numpy as np
>>> kl_search(np.array([0, 8, 8, 8, 8, 8, 8, 8, 8]), num_levels=4, start_bin=2)
9
>>> kl_search(np.array([5, 3, 1, 0, 0, 0, 0, 1]), num_levels=2, start_bin=2)
2
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel
from ..errors import InputError
from ..histogram import StreamingHistogram
from .registry import register


_STRIDE = 32  # kl_search evaluates every 32nd candidate first, for a cutoff


@kernel
def _prefix(counts):
    """Rows: prefix sums of counts, of non-empty bins, and of c*log(c) as double-double (hi, lo)."""
    n = counts.size
    pre = np.zeros((4, n + 1))
    hi = 0.0
    lo = 0.0
    for j in range(n):
        c = counts[j]
        pre[0, j + 1] = pre[0, j] + c
        pre[1, j + 1] = pre[1, j] + (1.0 if c > 0.0 else 0.0)
        t = c * math.log(c) if c > 0.0 else 0.0
        s = hi + t  # TwoSum: s + err == hi + t exactly
        bb = s - hi
        lo += (hi - (s - bb)) + (t - bb)
        hi = s
        pre[2, j + 1] = hi
        pre[3, j + 1] = lo
    return pre


@kernel
def _candidate_kl(counts, pre, memo_hi, memo, i, levels, cutoff):
    """KL(P || Q) for keeping ``i`` bins; +inf when the candidate is rejected or its KL exceeds ``cutoff``.

    Level k covers bins [ceil(k*i/L), ceil((k+1)*i/L)), stepped without division.
    A level's term depends only on its bin range, and consecutive candidates share
    most ranges, so terms are memoised by first bin and the parity of the level's
    width (``memo_hi[lo, slot]`` says for which end): a candidate's levels are
    floor(i/L) or ceil(i/L) bins wide, so both widths a first bin meets stay cached.
    A level with one non-empty bin reproduces P exactly: its term is 0.

    Every level's term is >= 0 (a KL of the level's P against its Q; the last level's
    P holds the outliers, Q does not), so a candidate whose terms so far, plus the
    last level's, already pass ``cutoff`` cannot win: it is given up as +inf. The
    sum of the others is unchanged, term by term and in order.
    """
    n = counts.size
    total = pre[0, n]
    outliers = total - pre[0, i]
    last = counts[i - 1]
    if outliers > 0.0 and last == 0.0:
        return np.inf
    tail = math.log1p(-outliers / total)
    folded = 0.0
    if outliers > 0.0:
        k = (i - 1) * levels // i  # the level of bin i - 1, the one the outliers fold into
        folded = _level_term(pre, -((-k * i) // levels), i, last, outliers)
    bound = (cutoff - tail) * total  # acc above it gives a KL above cutoff
    if folded > bound:
        return np.inf
    step, rem_step = i // levels, i % levels
    base, rem = 0, 0  # (k+1)*i == base*levels + rem
    lo = 0
    acc = 0.0
    for _ in range(levels):
        base += step
        rem += rem_step
        if rem >= levels:
            rem -= levels
            base += 1
        hi = base + (1 if rem > 0 else 0)
        if hi > lo:
            if hi == i and outliers > 0.0:
                acc += folded
                folded = 0.0  # in acc now
            elif memo_hi[lo, (hi - lo) & 1] == hi:
                acc += memo[lo, (hi - lo) & 1]
            else:
                term = 0.0 if pre[1, hi] - pre[1, lo] <= 1.0 else _level_term(pre, lo, hi, 0.0, 0.0)
                memo_hi[lo, (hi - lo) & 1] = hi
                memo[lo, (hi - lo) & 1] = term
                acc += term
            if acc + folded > bound:
                return np.inf
        lo = hi
    return acc / total + tail


@kernel
def _level_term(pre, lo, hi, last, outliers):
    """sum P log P - M log(m/c) over one level (counts units); outliers fold into bin hi-1."""
    c = pre[1, hi] - pre[1, lo]
    if c == 0.0:
        return 0.0
    mass = pre[0, hi] - pre[0, lo]
    plogp = (pre[2, hi] - pre[2, lo]) + (pre[3, hi] - pre[3, lo])
    if outliers > 0.0:
        folded = last + outliers
        plogp += folded * math.log(folded) - last * math.log(last)
    return plogp - (mass + outliers) * math.log(mass / c)


@kernel
def _kl_search(counts, levels, start, stride):
    """Best number of kept bins and its KL (last minimum wins).

    Every ``stride``-th candidate is evaluated first; the smallest KL among them,
    plus a margin far above rounding (1e-9; the KLs' rounding is ~1e-13), is a
    cutoff no winner exceeds, and `_candidate_kl` gives up early on candidates
    that pass it. The winner and its KL are those of the full search.
    """
    n = counts.size
    pre = _prefix(counts)
    memo_hi = np.full((n + 1, 2), -1, dtype=np.int64)
    memo = np.zeros((n + 1, 2))
    cutoff = np.inf
    for i in range(n, start - 1, -stride):
        cutoff = min(cutoff, _candidate_kl(counts, pre, memo_hi, memo, i, levels, np.inf))
    cutoff += 1e-9
    best_i = n
    best = np.inf
    for i in range(start, n + 1):
        d = _candidate_kl(counts, pre, memo_hi, memo, i, levels, cutoff)
        if d <= best:
            best = d
            best_i = i
    return best_i, best


def _check_counts(counts: object) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"counts must be a non-empty 1-D array, found shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"counts must be real numbers, found dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(out).all() or (out < 0).any():
        raise InputError("counts must be finite and non-negative, found a negative or non-finite count")
    if not out.any():
        raise InputError(f"counts are all zero ({out.size} bins); expected at least one non-empty bin")
    return out


def kl_divergences(counts: object, num_levels: int = 128, start_bin: int = 128) -> np.ndarray:
    """KL(P || Q) of every candidate `kl_search` weighs, in order: the curve whose minimum it picks.

    Parameters
    ----------
    counts : array_like
        Non-negative bin counts of |x| from any tool, bin 0 starting at 0.
    num_levels, start_bin : int
        As for `kl_search`.

    Returns
    -------
    numpy.ndarray
        float64, one value per candidate number of kept bins ``i = min(start_bin, n) .. n``
        (``n = len(counts)``), so entry ``k`` is the candidate whose threshold is
        ``(min(start_bin, n) + k) * bin_width``; ``inf`` where a candidate is rejected
        (outliers folded into an empty last bin). `kl_search` returns the ``i`` of the
        last smallest value.

    Keeping 2 bins folds the outliers into the second: P = [5, 5] / 10 against
    Q = [5, 3] / 8; keeping 4 to 7 ends on an empty bin that would hold them; keeping
    all 8 folds nothing, Q spreading 9 over the 3 non-empty bins of level 0:

    >>> d = kl_divergences(np.array([5, 3, 1, 0, 0, 0, 0, 1]), num_levels=2, start_bin=2)
    >>> [round(float(v), 4) for v in d]
    [0.0323, 0.0585, inf, inf, inf, inf, 0.1456]
    >>> 2 + int(np.flatnonzero(d == d.min())[-1]) == kl_search([5, 3, 1, 0, 0, 0, 0, 1], 2, 2)
    True
    """
    arr = _check_counts(counts)
    levels, start = _check_levels(arr.size, num_levels, start_bin)
    pre = _prefix(arr)
    memo_hi = np.full((arr.size + 1, 2), -1, dtype=np.int64)
    memo = np.zeros((arr.size + 1, 2))
    return np.array([_candidate_kl(arr, pre, memo_hi, memo, i, levels, np.inf) for i in range(start, arr.size + 1)])


def _check_levels(n: int, num_levels: int, start_bin: int) -> tuple[int, int]:
    if int(num_levels) != num_levels or num_levels < 1:
        raise InputError(f"num_levels must be a positive integer, found {num_levels!r}")
    if int(start_bin) != start_bin or start_bin < 1:
        raise InputError(f"start_bin must be a positive integer, found {start_bin!r}")
    return int(num_levels), min(int(start_bin), n)


def kl_search(counts: object, num_levels: int = 128, start_bin: int = 128) -> int:
    """Number of kept bins ``i`` minimising KL(P || Q); the threshold is ``i * bin_width``.

    Parameters
    ----------
    counts : array_like
        Non-negative bin counts of |x| from any tool, bin 0 starting at 0.
    num_levels : int
        Quantization levels of one sign (128 for int8, 256 for uint8).
    start_bin : int
        Smallest candidate; histograms shorter than it have the full range as their
        only candidate.
    """
    arr = _check_counts(counts)
    levels, start = _check_levels(arr.size, num_levels, start_bin)
    return int(_kl_search(arr, levels, start, _STRIDE)[0])


@register("kl", bounds={"num_levels": (1, 1 << 16), "start_bin": (1, 1 << 24)}, one_sign={"num_levels": 256})
def kl(hist: StreamingHistogram, num_levels: int = 128, start_bin: int = 128) -> float:
    """Minimise KL divergence between the |x| histogram and its int8 image (TensorRT entropy).

    The search runs over the occupied bins only (up to the first edge above max |x|),
    so the empty top of the power-of-two lattice never widens the candidates' levels.
    """
    return kl_search(hist.occupied_abs_counts(), num_levels, start_bin) * hist.bin_width
