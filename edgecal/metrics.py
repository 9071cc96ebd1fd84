"""Signal-to-quantization-noise ratio, and what a table entry does to real values.

`sqnr_from_sums` is edgecal's one dB formula; `sqnr_between` applies it to a reference
and its approximation (a model's int8 outputs, a study's quantized values), `sqnr_db`
to the int8 round trip of a table entry.

>>> import numpy as np
>>> sqnr_between(np.array([3.0, 4.0]), np.array([3.0, 3.0])), sqnr_between(np.ones(2), np.ones(2))
(13.979400086720377, inf)
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


def sqnr_from_sums(signal: float, err: float) -> float:
    """10 log10(signal / err) in dB from sum f**2 and sum (f - approx)**2 (sums may be gathered batch by batch).

    inf when the error is zero (an exact match, even of a zero signal), -inf for a zero
    signal with error.
    """
    if err == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / err) if signal > 0 else -math.inf


def sqnr_between(reference: np.ndarray, approx: np.ndarray) -> float:
    """SQNR of ``approx`` against ``reference`` in dB, summed in float64; see `sqnr_from_sums`."""
    f = np.asarray(reference, np.float64)
    return sqnr_from_sums(float(np.sum(f * f)), float(np.sum((f - np.asarray(approx, np.float64)) ** 2)))


def sqnr_db(x: np.ndarray, entry: TensorCalibration) -> float:
    """SQNR of the entry's int8 round trip (`fake_quantize`) over the finite values of ``x``, in dB."""
    xf = np.asarray(x, dtype=np.float64)
    xf = xf[np.isfinite(xf)]
    return sqnr_between(xf, fake_quantize(xf, entry))


def clipped_fraction(x: np.ndarray, entry: TensorCalibration) -> float:
    """Share of the finite values outside the representable range."""
    xf = np.asarray(x, dtype=np.float64)
    xf = xf[np.isfinite(xf)]
    lo = (entry.qmin - entry.zero_point) * entry.scale
    hi = (entry.qmax - entry.zero_point) * entry.scale
    return float(np.mean((xf < lo) | (xf > hi))) if xf.size else 0.0
