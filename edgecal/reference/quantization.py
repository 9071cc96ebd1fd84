"""Quantize real values to int8 and back, with each runtime's rounding.

``quantize`` computes ``x / scale`` in float32 (both runtimes divide, they do not
multiply by a reciprocal), rounds it (``"tflite"`` and ``"tflite-single"``: half away
from zero, TFLite's ``TfLiteRound``; ``"onnx"``: half to even, as ONNX
``QuantizeLinear``), adds the zero point and saturates to [-128, 127]. The clamp
happens before the conversion to an integer, so very large values saturate
instead of wrapping. ``dequantize`` is ``float32(scale * (q - zero_point))``, exact
before its single rounding; a product beyond float32 (a scale near its largest value)
is +-inf, quietly, as any float32 overflow.

The module is ``quantization``, not ``quantize``, so that ``edgecal.reference.quantize``
is the function and never hides a submodule of the same name.

>>> import numpy as np
>>> x = np.array([0.25, -0.25, 0.75, 100.0], np.float32)
>>> quantize(x, 0.5, 0).tolist(), quantize(x, 0.5, 0, rounding="onnx").tolist()
([1, -1, 2, 127], [0, 0, 2, 127])
>>> dequantize(np.array([-128, 0, 127], np.int8), 0.5, -128).tolist()
[0.0, 64.0, 127.5]
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel
from ..errors import InputError
from .requant import INT8_MAX, INT8_MIN, check_rounding, check_zero_point


@kernel
def _quantize(x, scale, zp, half_even, out):
    """out = saturate(round(x / scale) + zp); x and scale float32; -1 or the index of a NaN."""
    lo = np.float32(INT8_MIN - zp)
    hi = np.float32(INT8_MAX - zp)
    for i in range(x.size):
        v = x[i] / scale
        if v != v:
            return i
        v = min(max(v, lo), hi)
        if half_even:
            r = np.rint(v)
        else:
            a = abs(v)
            r = np.floor(a)
            if a - r >= 0.5:  # exact: a - floor(a) never rounds
                r += 1
            r = r if v >= 0 else -r
        out[i] = np.int64(r) + zp
    return -1


def _check_scale(scale: float) -> np.float32:
    s = np.float32(scale)
    if not (np.isfinite(s) and s > 0):
        raise InputError(f"scale must be a finite float32 > 0, found {scale!r}")
    return s


def quantize(x: np.ndarray, scale: float, zero_point: int = 0, rounding: str = "tflite") -> np.ndarray:
    """int8 image of float array ``x`` (converted to float32 first), same shape.

    Raises
    ------
    InputError
        On NaN input, a bad scale, zero point or rounding name.
    """
    half_even = check_rounding(rounding) == 2
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise InputError(f"quantize expects a real array, found dtype {arr.dtype}")
    flat = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)
    out = np.empty(flat.size, np.int8)
    bad = _quantize(flat, _check_scale(scale), check_zero_point(zero_point, "quantize"), half_even, out)
    if bad >= 0:
        raise InputError(f"cannot quantize NaN (at flat index {bad}); expected finite values or +-inf")
    return out.reshape(arr.shape)


def dequantize(q: np.ndarray, scale: float, zero_point: int = 0) -> np.ndarray:
    """float32 ``scale * (q - zero_point)`` of int8 array ``q``."""
    arr = np.asarray(q)
    if arr.dtype != np.int8:
        raise InputError(f"dequantize expects int8 values, found dtype {arr.dtype}")
    zp = check_zero_point(zero_point, "dequantize")
    with np.errstate(over="ignore"):  # beyond float32 the result is +-inf; numpy would also warn
        return (np.float64(_check_scale(scale)) * (arr.astype(np.int32) - zp)).astype(np.float32)
