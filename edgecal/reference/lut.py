"""Quantize by codebook: nearest level of a LUT, exactly as ``firmware_interface/src/ecal_lut.c`` does.

A codebook (a table entry's ``lut``, `edgecal.methods.codebook`) has C ascending
levels. Its C - 1 decision boundaries are the float64 midpoints of consecutive
levels rounded to float32 (the C header holds them so); a float32 value's code is
the number of boundaries at or below it (a value on a boundary goes up), NaN gets
code 0, and the dequantized value is the level rounded to float32.

>>> import numpy as np
>>> levels = (-1.0, 0.0, 1.0, 2.0)
>>> codes = lut_quantize(np.array([-3.0, -0.5, 0.4, 0.5, np.nan, 9.0]), levels)
>>> codes.tolist(), lut_dequantize(codes, levels).tolist()
([0, 1, 1, 2, 0, 3], [-1.0, 0.0, 0.0, 1.0, -1.0, 2.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError


def lut_bounds(levels: Sequence[float]) -> np.ndarray:
    """The decision boundaries (float32) of ascending ``levels``."""
    lv = np.asarray(levels, dtype=np.float64)
    if lv.ndim != 1 or not 2 <= lv.size <= 256 or not np.all(np.diff(lv) > 0):
        raise InputError(f"a codebook needs 2 to 256 strictly ascending levels, found {lv.size} values")
    return (0.5 * (lv[:-1] + lv[1:])).astype(np.float32)


def lut_quantize(x: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """uint8 codes of ``x`` (as float32) for the codebook ``levels``."""
    b = lut_bounds(levels)
    v = np.asarray(x, dtype=np.float32)
    codes = np.searchsorted(b, v, side="right").astype(np.uint8)
    codes[np.isnan(v)] = 0
    return codes


def lut_dequantize(codes: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """float32 values of ``codes``: the levels, rounded to float32."""
    lv = np.asarray(levels, dtype=np.float32)
    c = np.asarray(codes)
    if c.size and int(c.max()) >= lv.size:
        raise InputError(f"code {int(c.max())} is out of range for a codebook of {lv.size} levels")
    return lv[c]
