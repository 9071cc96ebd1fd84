"""int8 max pool and average pool, NHWC (TFLite reference semantics, no requantization).

Input and output share scale and zero point. Taps in the padding are left out: of
the max, and of both the sum and the count of the average. The average of the raw
int8 values rounds half away from zero with C's truncating division,
``(s + n/2) / n`` for ``s > 0`` and ``(s - n/2) / n`` otherwise; it is not round half
to even. Then the activation clamp.

>>> import numpy as np
>>> x = np.array([1, 2, -1, -3], np.int8).reshape(1, 2, 2, 1)
>>> avg_pool2d(x, 2, stride=1, padding="SAME").ravel().tolist()   # -1/4, -1/2, -4/2, -3/1
[0, -1, -2, -3]
>>> max_pool2d(x, 2).ravel().tolist()
[2]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .._jit import kernel
from ..errors import InputError
from .geometry import Padding, Window
from .requant import INT8_MAX, INT8_MIN, check_act


@kernel
def _pool(x, geom, average, lo, hi, out):
    """Max or average pool of NHWC int8 x; geom = [sh, sw, 1, 1, top, left, kh, kw]."""
    nb, ih, iw, nc = x.shape
    _, oh, ow, _ = out.shape
    for b in range(nb):
        for oy in range(oh):
            y0 = oy * geom[0] - geom[4]
            ky0, ky1 = max(0, -y0), min(geom[6], ih - y0)
            for ox in range(ow):
                x0 = ox * geom[1] - geom[5]
                kx0, kx1 = max(0, -x0), min(geom[7], iw - x0)
                n = (ky1 - ky0) * (kx1 - kx0)
                for c in range(nc):
                    acc = np.int64(0) if average else np.int64(INT8_MIN)
                    for ky in range(ky0, ky1):
                        for kx in range(kx0, kx1):
                            v = np.int64(x[b, y0 + ky, x0 + kx, c])
                            acc = acc + v if average else max(acc, v)
                    if average:
                        half = n // 2
                        t = acc + half if acc > 0 else acc - half
                        acc = abs(t) // n * (1 if t >= 0 else -1)  # C division truncates toward zero
                    out[b, oy, ox, c] = min(max(acc, lo), hi)


def _run(x: np.ndarray, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None, padding: Padding,
         act_range: tuple[int, int], average: bool) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != np.int8 or arr.ndim != 4:
        raise InputError(f"pool input must be a 4-D NHWC int8 array, found {arr.ndim}-D {arr.dtype}")
    win = Window.of(kernel_size, kernel_size if stride is None else stride, 1, padding)
    if isinstance(win.padding, tuple) and (max(win.padding[0], win.padding[2]) >= win.kernel[0]
                                           or max(win.padding[1], win.padding[3]) >= win.kernel[1]):
        raise InputError(f"pool padding {win.padding} must be smaller than the window {win.kernel}")
    oh, ow, geom = win.geom(arr.shape[1], arr.shape[2])
    lo, hi = check_act(act_range)
    out = np.empty((arr.shape[0], oh, ow, arr.shape[3]), np.int8)
    _pool(np.ascontiguousarray(arr), geom, average, lo, hi, out)
    return out


def max_pool2d(x: np.ndarray, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: Padding = "VALID", act_range: tuple[int, int] = (INT8_MIN, INT8_MAX)) -> np.ndarray:
    """Max over each window (stride defaults to the window size)."""
    return _run(x, kernel_size, stride, padding, act_range, False)


def avg_pool2d(x: np.ndarray, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: Padding = "VALID", act_range: tuple[int, int] = (INT8_MIN, INT8_MAX)) -> np.ndarray:
    """Average over each window's in-image taps, TFLite rounding (stride defaults to the window size)."""
    return _run(x, kernel_size, stride, padding, act_range, True)
