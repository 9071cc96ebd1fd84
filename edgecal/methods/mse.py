"""The ``mse`` method: the threshold whose int8 grid gives the least squared error.

Each bin's mass is taken at its centre; for every candidate threshold ``i * w``
(``start_bin .. n``) the centres are quantized symmetrically to 127 levels (round
half away from zero, clamped) and the count-weighted squared error is summed. The
first minimum wins.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel
from ..histogram import StreamingHistogram
from .registry import register


@kernel
def _mse_search(counts, start, levels):
    """Best number of kept bins for the squared error (bin width 1, first minimum)."""
    n = counts.size
    best_i = n
    best = np.inf
    for i in range(start, n + 1):
        step = i / levels
        err = 0.0
        for j in range(n):
            c = counts[j]
            if c > 0.0:
                x = j + 0.5
                q = min(math.floor(x / step + 0.5), levels) * step
                err += c * (x - q) * (x - q)
        if err < best:
            best = err
            best_i = i
    return best_i


@register("mse")
def mse(hist: StreamingHistogram, start_bin: int = 128) -> float:
    """Minimise the mean squared int8 round-trip error over the |x| histogram."""
    counts = hist.occupied_abs_counts().astype(np.float64)
    start = max(1, min(int(start_bin), counts.size))
    return _mse_search(counts, start, 127) * hist.bin_width
