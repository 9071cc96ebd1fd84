"""What a report shows of each tensor, computed from a state (histograms) or from a table alone.

From a state every listed method's range is computed from the histogram, with its
clipped share and expected SQNR; a table alone gives its own entries and stats only.

>>> import numpy as np
>>> from edgecal.calibrator import Calibrator
>>> cal = Calibrator(256)
>>> cal.observe("x", np.linspace(-1, 1, 2001))
>>> view = state_views(cal, state_tables(cal, ["minmax"]))[0]
>>> view.marks[0].method, view.marks[0].clipped
('minmax', 0.0)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..calibrator import Calibrator, clipped_at_most
from ..errors import InputError
from ..histogram import StreamingHistogram
from ..methods import get_method, kl_divergences, method_names
from ..methods.auto import asymmetric_grid_error, symmetric_grid_error
from ..methods.grid import hist_sides
from ..metrics import sqnr_from_sums
from ..table import CalibrationTable, TensorCalibration, TensorStats

log = logging.getLogger("edgecal")

DISPLAY_BINS = 512  # bars per sign drawn; finer histograms are summed into this many


@dataclass(frozen=True)
class MethodMark:
    """One method's entry for a tensor; ``clipped`` and ``sqnr_db`` are None when no histogram is known."""

    method: str
    entry: TensorCalibration
    clipped: float | None = None
    sqnr_db: float | None = None


@dataclass(frozen=True)
class Density:
    """Signed bin edges and the counts between them (``len(edges) == len(counts) + 1``), plus exact zeros."""

    edges: np.ndarray
    counts: np.ndarray
    zeros: int


@dataclass(frozen=True)
class TensorView:
    """Everything the report shows of one tensor."""

    name: str
    stats: TensorStats
    marks: tuple[MethodMark, ...]
    density: Density | None = None
    kl_curve: tuple[np.ndarray, np.ndarray] | None = None  # (candidate thresholds, KL of each; inf: rejected)


def expected_sqnr_db(hist: StreamingHistogram, entry: TensorCalibration) -> float:
    """SQNR of the entry's int8 round trip on the histogram's piecewise-uniform density, in dB.

    The error is `edgecal.methods.grid`'s exact expected squared error of the entry's
    grid, the signal the density's second moment; exact zeros add to neither.
    """
    pos, neg, _ = hist_sides(hist)
    signal = float(pos[1][2, -1] + neg[1][2, -1])
    if entry.scheme == "symmetric":
        err = symmetric_grid_error(hist, entry.amax)
    else:
        lo, hi = entry.range
        err = asymmetric_grid_error(hist, lo, hi)
    return sqnr_from_sums(signal, float(err))


def clipped_share(hist: StreamingHistogram, entry: TensorCalibration) -> float:
    """At most this share of the finite values lies over half a step outside the entry's range."""
    lo, hi = entry.range
    return clipped_at_most(hist, lo, hi, entry.scale) / hist.finite if hist.finite else 0.0


def density(hist: StreamingHistogram, display_bins: int = DISPLAY_BINS) -> Density:
    """The histogram as signed bins over its occupied range, at most ``display_bins`` bars per sign.

    A sign with no values is left out, so a never-negative tensor starts at 0.
    """
    pos, neg = hist.positive_counts(), hist.negative_counts()
    used = max(np.flatnonzero(pos).max(initial=-1), np.flatnonzero(neg).max(initial=-1)) + 1
    group = 1
    while used > display_bins * group:
        group *= 2
    n = -(-max(used, 1) // group)
    p = np.pad(pos[:used], (0, n * group - used)).reshape(n, group).sum(axis=1)
    q = np.pad(neg[:used], (0, n * group - used)).reshape(n, group).sum(axis=1)
    has_neg, has_pos = bool(q.any()), bool(p.any())
    left, right = (n if has_neg or not has_pos else 0), (n if has_pos or not has_neg else 0)
    edges = np.arange(-left, right + 1, dtype=np.float64) * (hist.bin_width * group)
    counts = np.concatenate([q[::-1][n - left:], p[:right]]).astype(np.float64)
    return Density(edges, counts, hist.zeros)


def kl_curve(hist: StreamingHistogram) -> tuple[np.ndarray, np.ndarray] | None:
    """(thresholds, KL divergence) of every candidate of the ``kl`` method with its default parameters."""
    counts = hist.occupied_abs_counts()
    if not counts.any():
        return None
    params = get_method("kl").defaults
    kl = kl_divergences(counts, params["num_levels"], params["start_bin"])
    first = min(int(params["start_bin"]), counts.size)
    return np.arange(first, counts.size + 1) * hist.bin_width, kl


def method_list(methods: Sequence[str] | None) -> tuple[str, ...]:
    """The methods to show: ``methods`` checked against the registry, or every registered one."""
    names = tuple(dict.fromkeys(methods)) if methods else tuple(method_names())
    for name in names:
        get_method(name)  # an unknown name: the registry's error listing the known ones
    return names


def state_views(cal: Calibrator, tables: Mapping[str, CalibrationTable]) -> list[TensorView]:
    """One view per tensor of ``cal``: each method's entry in ``tables``, its clipped share and SQNR."""
    views = []
    for name in cal.names():
        h = cal.histogram(name)
        marks = tuple(MethodMark(m, t[name], clipped_share(h, t[name]), expected_sqnr_db(h, t[name]))
                      for m, t in tables.items() if name in t)  # a tensor with no finite value is in none
        views.append(TensorView(name, cal.stats(name), marks, density(h), kl_curve(h)))
    return views


def table_views(table: CalibrationTable) -> list[TensorView]:
    """One view per entry of ``table``: its own range and stats (a table keeps no histogram)."""
    return [TensorView(e.name, e.stats, (MethodMark(e.method, e),)) for e in table.values()]


class _Once(logging.Filter):
    """Lets each distinct message through once (a tensor's non-finite values are the same for every method)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        new = message not in self.seen
        self.seen.add(message)
        return new


def state_tables(cal: Calibrator, methods: Sequence[str] | None = None,
                 scheme: str = "symmetric") -> dict[str, CalibrationTable]:
    """The table of every listed method (default: every registered one) computed from ``cal``.

    Tensors without a finite value have no range under any method and are left out
    of the tables (their views still show their counts); none at all is an error.
    """
    names = method_list(methods)
    finite = [n for n in cal.names() if cal.histogram(n).finite]
    if not finite:
        raise InputError(f"none of the {len(cal.names())} tensors has a finite value; expected at least one")
    once = _Once()
    log.addFilter(once)
    try:
        return {m: cal.compute(m, finite, scheme=scheme) for m in names}
    finally:
        log.removeFilter(once)
