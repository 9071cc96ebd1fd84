"""int8 ADD with TFLite's integer pipeline (``reference_integer_ops::Add``).

Both inputs are rescaled to a common scale of ``2 * max(s1, s2) / 2**20`` by
fixed-point multipliers, summed, and rescaled to the output, all with
``MultiplyByQuantizedMultiplier`` (double rounding, or single rounding for
``"tflite-single"``):

    v_i = (x_i - zp_i) * 2**20
    u_i = MBQM(v_i, QM(s_i / (2 max(s1, s2))))
    y   = clamp(MBQM(u_1 + u_2, QM(2 max(s1, s2) / (2**20 s_out))) + zp_out, act_min, act_max)

ONNX has no standard int8 Add (ONNX Runtime's contrib ``QLinearAdd`` has its own
CPU-dependent fixed point), so ``"onnx"`` rounding uses this TFLite pipeline too.
Inputs broadcast like numpy.

>>> import numpy as np
>>> add(np.array([10, -10], np.int8), np.array([3, 3], np.int8), (0.5, 0), (0.5, 0), (0.5, 0)).tolist()
[13, -7]
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel
from ..errors import InputError
from .requant import INT8_MAX, INT8_MIN, _mbqm, check_act, check_rounding, check_zero_point, quantize_multiplier

LEFT_SHIFT = 20


@kernel
def _add(x1, x2, p, out):
    """Elementwise TFLite int8 add; p = [zp1, zp2, zp_out, q1, s1, q2, s2, qo, so, lo, hi, mode]."""
    mode = p[11]
    for i in range(x1.size):
        v1 = (np.int64(x1[i]) - p[0]) << 20
        v2 = (np.int64(x2[i]) - p[1]) << 20
        u1, _ = _mbqm(v1, p[3], p[4], mode)
        u2, _ = _mbqm(v2, p[5], p[6], mode)
        y, _ = _mbqm(u1 + u2, p[7], p[8], mode)
        out[i] = min(max(y + p[2], p[9]), p[10])


def add_params(s1: float, s2: float, s_out: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """((q1, shift1), (q2, shift2), (q_out, shift_out)) as TFLite's ``CalculateOpDataAdd`` derives them.

    Raises
    ------
    InputError
        If a scale is not a positive float32, or the output multiplier is not below 1
        (TFLite refuses such models: the output scale is too small for the inputs).
    """
    s1_32, s2_32, so_32 = (np.float32(s) for s in (s1, s2, s_out))
    if not all(np.isfinite(s) and s > 0 for s in (s1_32, s2_32, so_32)):
        raise InputError(f"add: scales must be finite float32 > 0, found {s1!r}, {s2!r}, {s_out!r}")
    twice_max = 2.0 * float(max(s1_32, s2_32))
    real_out = twice_max / ((1 << LEFT_SHIFT) * float(so_32))
    if not real_out < 1.0:
        raise InputError(f"add: output scale {s_out!r} is below 2 * max(input scales) / 2**20; TFLite needs it larger")
    return (quantize_multiplier(float(s1_32) / twice_max), quantize_multiplier(float(s2_32) / twice_max),
            quantize_multiplier(real_out))


def add(x1: np.ndarray, x2: np.ndarray, in1: tuple[float, int], in2: tuple[float, int], out: tuple[float, int],
        act_range: tuple[int, int] = (INT8_MIN, INT8_MAX), rounding: str = "tflite") -> np.ndarray:
    """int8 ``x1 + x2`` with per-tensor ``(scale, zero_point)`` of each input and the output.

    Raises
    ------
    InputError
        If the inputs are not int8, do not broadcast, or a parameter is out of range.
    """
    mode = check_rounding(rounding)
    a, b = np.asarray(x1), np.asarray(x2)
    if a.dtype != np.int8 or b.dtype != np.int8:
        raise InputError(f"add expects int8 inputs, found {a.dtype} and {b.dtype}")
    try:
        a, b = (np.ascontiguousarray(v).reshape(-1) for v in np.broadcast_arrays(a, b))
        shape = np.broadcast_shapes(np.shape(x1), np.shape(x2))
    except ValueError as err:
        raise InputError(f"add: shapes {np.shape(x1)} and {np.shape(x2)} do not broadcast") from err
    (q1, sh1), (q2, sh2), (qo, sho) = add_params(in1[0], in2[0], out[0])
    lo, hi = check_act(act_range)
    zps = [check_zero_point(z, f"add {w}") for z, w in ((in1[1], "input 1"), (in2[1], "input 2"), (out[1], "output"))]
    p = np.array([*zps, q1, sh1, q2, sh2, qo, sho, lo, hi, 1 if mode == 1 else 0], np.int64)
    res = np.empty(a.size, np.int8)
    _add(a, b, p, res)
    return res.reshape(shape)
