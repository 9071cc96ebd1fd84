"""What a table entry does to real values: SQNR of the int8 round trip, share clipped.

>>> import numpy as np
>>> from edgecal.table import TensorCalibration
>>> e = TensorCalibration.symmetric("x", 1.0)
>>> round(clipped_fraction(np.array([0.5, 1.5, -2.0, 0.0]), e), 2)
0.5
"""

from __future__ import annotations

import math

import numpy as np

from .table import TensorCalibration


def fake_quantize(x: np.ndarray, entry: TensorCalibration) -> np.ndarray:
    """Quantize then dequantize: round half away from zero, clamp to the entry's range."""
    xf = np.asarray(x, dtype=np.float64)
    q = np.clip(np.trunc(xf / entry.scale + np.copysign(0.5, xf)) + entry.zero_point, entry.qmin, entry.qmax)
    return (q - entry.zero_point) * entry.scale


def sqnr_db(x: np.ndarray, entry: TensorCalibration) -> float:
    """10 log10(sum x^2 / sum (x - fake_quantize(x))^2) over the finite values, in dB."""
    xf = np.asarray(x, dtype=np.float64)
    xf = xf[np.isfinite(xf)]
    err = float(np.sum((xf - fake_quantize(xf, entry)) ** 2))
    signal = float(np.sum(xf * xf))
    if err == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / err) if signal > 0 else -math.inf


def clipped_fraction(x: np.ndarray, entry: TensorCalibration) -> float:
    """Share of the finite values outside the representable range."""
    xf = np.asarray(x, dtype=np.float64)
    xf = xf[np.isfinite(xf)]
    lo = (entry.qmin - entry.zero_point) * entry.scale
    hi = (entry.qmax - entry.zero_point) * entry.scale
    return float(np.mean((xf < lo) | (xf > hi))) if xf.size else 0.0
