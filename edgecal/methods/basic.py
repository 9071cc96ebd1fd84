"""Baseline methods: ``minmax`` and ``percentile``."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..histogram import StreamingHistogram
from .registry import register


@register("minmax")
def minmax(hist: StreamingHistogram) -> float:
    """The largest finite |x| seen: no clipping at all."""
    return hist.amax


@register("percentile", bounds={"percentile": (1e-9, 100.0)})
def percentile(hist: StreamingHistogram, percentile: float = 99.99) -> float:
    """Smallest bin edge with ``percentile`` % of the finite |x| at or below it (capped at max |x|).

    Exact zeros count as values at 0.
    """
    if not 0.0 < percentile <= 100.0:
        raise InputError(f"percentile must be in (0, 100], found {percentile!r}")
    counts = hist.occupied_abs_counts()
    zeros = hist.zeros
    need = percentile / 100.0 * (zeros + int(counts.sum()))
    cum = zeros + np.cumsum(counts)
    i = int(np.searchsorted(cum, need, side="left"))
    return min((i + 1) * hist.bin_width, hist.amax)
