"""Slow, literal twins of edgecal's fast code, written from the maths alone.

Nothing here imports edgecal: each function is a plain transcription of the
definition in DESIGN.md / the module docstrings, so that fast == naive means the
fast code computes the definition.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


# -- the lattice histogram -------------------------------------------------------------
def lattice_exponent(values: np.ndarray, log2_bins: int) -> int:
    """Smallest e >= the lattice minimum with every finite non-zero |x| < 2**e (exact arithmetic)."""
    a = np.abs(values[np.isfinite(values)].astype(np.float64))
    e = log2_bins - 1022
    if a.size and a.max() > 0:
        biggest = Fraction(float(a.max()))
        while Fraction(2) ** e <= biggest:
            e += 1
    return e


def lattice_histogram(values: np.ndarray, bins: int) -> dict:
    """Every counter of a StreamingHistogram, from np.histogram over the final range.

    |x| is divided by R = 2**e (exact: a power of two) and binned over [0, 1) with
    ``bins`` equal bins.
    """
    v = np.asarray(values).ravel().astype(np.float64)
    log2b = bins.bit_length() - 1
    e = lattice_exponent(v, log2b)
    edges = np.arange(bins + 1, dtype=np.float64) / bins
    finite = v[np.isfinite(v)]
    pos, _ = np.histogram(np.ldexp(finite[finite > 0], -e), bins=edges)
    neg, _ = np.histogram(np.ldexp(-finite[finite < 0], -e), bins=edges)
    return {
        "exponent": e,
        "positive": pos.astype(np.int64),
        "negative": neg.astype(np.int64),
        "count": v.size,
        "zeros": int((finite == 0).sum()),
        "nans": int(np.isnan(v).sum()),
        "posinf": int((v == np.inf).sum()),
        "neginf": int((v == -np.inf).sum()),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
    }


# -- KL search (NVIDIA semantics) ------------------------------------------------------
def kl_divergence_of_candidate(counts: np.ndarray, i: int, num_levels: int) -> float:
    """KL(P || Q) keeping the first ``i`` bins, transcribed literally.

    P: the kept bins, outliers folded into the last one. Q: bin j is in level
    floor(j * L / i); each level's mass (of the kept bins) is spread evenly over the
    level's non-empty bins. Both normalised; KL summed over P > 0, inf if Q is 0 there.
    """
    counts = np.asarray(counts, dtype=np.float64)
    kept = counts[:i]
    p = kept.copy()
    p[-1] += counts[i:].sum()
    level_of = np.arange(i) * num_levels // i
    nonempty = kept != 0
    level_mass = np.bincount(level_of[nonempty], weights=kept[nonempty], minlength=num_levels)
    level_bins = np.bincount(level_of[nonempty], minlength=num_levels)
    q = np.zeros(i)
    q[nonempty] = level_mass[level_of[nonempty]] / level_bins[level_of[nonempty]]
    if q.sum() == 0:
        return math.inf
    p = p / p.sum()
    q = q / q.sum()
    support = p > 0
    if (q[support] == 0).any():
        return math.inf
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def kl_search(counts: np.ndarray, num_levels: int = 128, start_bin: int = 128) -> tuple[int, float]:
    """(kept bins, KL) of the minimum over i = start..n; ties go to the largest i."""
    n = len(counts)
    best_i, best = n, math.inf
    for i in range(min(start_bin, n), n + 1):
        d = kl_divergence_of_candidate(counts, i, num_levels)
        if d <= best:
            best_i, best = i, d
    return best_i, best


# -- other methods ---------------------------------------------------------------------
def percentile_amax(counts: np.ndarray, zeros: int, width: float, percentile: float, amax: float) -> float:
    """Smallest right bin edge with ``percentile`` % of the finite |x| at or below it, capped at amax."""
    total = zeros + int(np.sum(counts))
    need = percentile / 100.0 * total
    running = zeros
    for j, c in enumerate(counts):
        running += c
        if running >= need:
            return min((j + 1) * width, amax)
    return amax


def mse_amax(counts: np.ndarray, width: float, start_bin: int = 128, num_levels: int = 127) -> float:
    """Right bin edge whose symmetric quantizer gives the smallest squared error on bin centres."""
    centres = (np.arange(len(counts)) + 0.5) * width
    best_amax, best = None, math.inf
    for i in range(min(start_bin, len(counts)), len(counts) + 1):
        amax = i * width
        step = amax / num_levels
        err = 0.0
        for c, x in zip(counts, centres):
            if c:
                q = min(math.floor(x / step + 0.5), num_levels) * step
                err += c * (x - q) ** 2
        if err < best:
            best_amax, best = amax, err
    return best_amax


def sqnr_db(x: np.ndarray, amax: float, levels: int = 127) -> float:
    """10 log10(signal power / error power) of the symmetric int8 round trip."""
    x = np.asarray(x, dtype=np.float64)
    step = amax / levels
    q = np.clip(np.round(x / step), -levels, levels) * step
    err = float(np.sum((x - q) ** 2))
    return math.inf if err == 0 else 10 * math.log10(float(np.sum(x * x)) / err)
