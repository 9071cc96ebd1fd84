"""Requantization: int32 accumulators to int8 outputs, as the runtimes do it.

Three roundings (``rounding=``), each copied from one runtime's source:

``"tflite"`` (default)
    TFLite / TFLM reference kernels and default CMSIS-NN builds: the real
    multiplier becomes ``(q, shift)`` by ``QuantizeMultiplier``, then
    ``MultiplyByQuantizedMultiplier`` = gemmlowp's saturating rounding doubling
    high multiply (round half up) followed by a rounding divide by a power of
    two (round half away from zero): two roundings in sequence.
``"tflite-single"``
    The ``TFLITE_SINGLE_ROUNDING`` / ``CMSIS_NN_USE_SINGLE_ROUNDING`` build:
    ``(x * q + 2**(t-1)) >> t`` with ``t = 31 - shift``, one rounding, half up;
    ``QuantizeMultiplier`` caps ``shift`` at 30. Formula-checked, not
    runtime-checked (no such build is on PyPI).
``"onnx"``
    ONNX Runtime's MLAS (S8S8 QLinearConv / QLinearMatMul) and XNNPACK:
    ``rint(float32(acc) * float32(float32(s_in * s_w) / s_out))``, round half to
    even, clamped, plus the zero point.

How each op derives its real multiplier matters to the last bit and is copied
per op (`op_multipliers`): conv, depthwise and fully connected use
``double(s_in) * double(s_w) / double(s_out)`` as TFLM does; ``"fc-float32"`` keeps
the float32 product ``s_in * s_w`` of older TFLite fully connected kernels.

An accumulator whose fixed-point path would overflow int32 (``acc << shift`` for
multipliers of 1 and more, where TFLite silently wraps) raises `OverflowError`
instead of giving a wrong result.

>>> quantize_multiplier(0.25), quantize_multiplier(0.999999999999)
((1073741824, -1), (1073741824, 1))
>>> import numpy as np
>>> rq = Requant.from_real([0.25])
>>> requantize(np.array([5, -6, -10, 10]), rq).tolist()   # golden values: double rounding
[2, -2, -3, 3]
>>> requantize(np.array([5, -6, -10, 10]), Requant.from_real([0.25], rounding="onnx")).tolist()
[1, -2, -2, 2]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .._jit import kernel
from ..errors import InputError, Int32OverflowError

ROUNDINGS = ("tflite", "tflite-single", "onnx")
_MODE = {name: i for i, name in enumerate(ROUNDINGS)}
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT8_MIN, INT8_MAX = -128, 127


def check_rounding(rounding: str) -> int:
    """The kernel code of ``rounding``; `InputError` listing the known ones."""
    if rounding not in _MODE:
        raise InputError(f"unknown rounding {rounding!r}; known roundings: {', '.join(ROUNDINGS)}")
    return _MODE[rounding]


def check_requant_rounding(rq: Requant, rounding: str | None, what: str) -> None:
    """`InputError` when a kernel's ``rounding=`` is not the one ``rq`` was built for (None: take rq's)."""
    if rounding is not None and check_rounding(rounding) != check_rounding(rq.rounding):
        raise InputError(f"{what}: rounding {rounding!r} but the Requant was built for {rq.rounding!r}; "
                         f"expected op_multipliers(..., rounding={rounding!r})")


def _round_away(x: float) -> int:
    """C ``round``: half away from zero (exact for doubles)."""
    r = math.floor(abs(x))
    if abs(x) - r >= 0.5:
        r += 1
    return int(math.copysign(r, x))


def quantize_multiplier(m: float, rounding: str = "tflite") -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``m ~= q * 2**(shift - 31)``, q in [2**30, 2**31).

    Multipliers below about 2**-32 flush to (0, 0); ``"tflite-single"`` caps
    shifts above 30 at (2**31 - 1, 30), as that build does.
    """
    m = float(m)
    if not (math.isfinite(m) and m >= 0.0):
        raise InputError(f"real multiplier must be finite and >= 0, found {m!r}")
    if m == 0.0:
        return 0, 0
    f, shift = math.frexp(m)
    q = _round_away(f * 2.0**31)
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if rounding == "tflite-single" and shift > 30:
        return (1 << 31) - 1, 30
    return q, shift


@dataclass(frozen=True)
class Requant:
    """Per-channel output scaling of one op.

    ``multiplier``/``shift`` (int32) drive the fixed-point roundings, ``scale``
    (float32) the ``"onnx"`` one; one entry per output channel (or one for all).
    """

    multiplier: np.ndarray
    shift: np.ndarray
    scale: np.ndarray
    rounding: str = "tflite"

    @classmethod
    def from_real(cls, real: Sequence[float] | np.ndarray, rounding: str = "tflite",
                  scale: Sequence[float] | np.ndarray | None = None) -> Requant:
        """From real multipliers (float64); ``scale`` overrides the float32 ones of ``"onnx"``."""
        check_rounding(rounding)
        real = np.atleast_1d(np.asarray(real, dtype=np.float64))
        qs = [quantize_multiplier(m, rounding) for m in real]
        f32 = real.astype(np.float32) if scale is None else np.atleast_1d(np.asarray(scale, dtype=np.float32))
        if f32.shape != real.shape:
            raise InputError(f"{real.size} real multipliers but {f32.size} float32 scales; expected one per channel")
        return cls(np.array([q for q, _ in qs], np.int32), np.array([s for _, s in qs], np.int32), f32, rounding)

    @property
    def channels(self) -> int:
        return int(self.multiplier.size)


MULTIPLIER_OPS = ("conv", "depthwise", "fc", "fc-float32")


def op_multipliers(op: str, s_in: float, s_w: Sequence[float] | np.ndarray, s_out: float,
                   rounding: str = "tflite") -> Requant:
    """The `Requant` of a conv / depthwise / fully connected op, derived exactly as its runtime does.

    ``op`` is ``"conv"``, ``"depthwise"`` or ``"fc"`` (per-tensor or per-channel
    weight scales alike): ``double(s_in) * double(s_w[c]) / double(s_out)``, as TFLM's
    ``PopulateConvolutionQuantizationParams`` and ``GetQuantizedConvolutionMultipler``
    compute it. ``"fc-float32"`` multiplies ``s_in * s_w`` in float32 first, as older
    TFLite releases' ``GetQuantizedConvolutionMultipler`` did; it changes the last bit
    of some multipliers and so a few outputs that sit on a rounding tie. The float32
    scale of ``"onnx"`` is ``f32(f32(s_in * s_w[c]) / s_out)``, as MLAS computes it.
    """
    s_in32, s_out32 = np.float32(s_in), np.float32(s_out)
    w32 = np.atleast_1d(np.asarray(s_w, dtype=np.float32))
    for label, v in (("input scale", s_in32), ("output scale", s_out32), ("weight scale", w32)):
        if not (np.all(np.isfinite(v)) and np.all(v > 0)):
            raise InputError(f"{op}: {label} must be finite and > 0 in float32, found {v!r}")
    if op in ("conv", "depthwise", "fc"):
        real = float(s_in32) * w32.astype(np.float64) / float(s_out32)
    elif op == "fc-float32":
        real = (s_in32 * w32).astype(np.float64) / float(s_out32)
    else:
        raise InputError(f"unknown op {op!r} for multipliers; expected one of {', '.join(MULTIPLIER_OPS)}")
    onnx = ((s_in32 * w32).astype(np.float32) / s_out32).astype(np.float32)
    return Requant.from_real(real, rounding, scale=onnx)


@kernel
def _mbqm(x, q, shift, mode):
    """MultiplyByQuantizedMultiplier in int64; returns (result, ok). mode 0 double, 1 single rounding."""
    if mode == 1:
        t = 31 - shift
        y = (x * q + (np.int64(1) << (t - 1))) >> t
        return y, INT32_MIN <= y <= INT32_MAX
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    a = x << left
    if a < INT32_MIN or a > INT32_MAX:  # TFLite wraps here; refuse instead
        return 0, False
    if a == INT32_MIN and q == INT32_MIN:
        h = np.int64(INT32_MAX)
    else:
        h = (a * q + (np.int64(1) << 30)) >> 31  # == gemmlowp's nudged truncating division
    mask = (np.int64(1) << right) - 1
    threshold = (mask >> 1) + (1 if h < 0 else 0)
    return (h >> right) + (1 if (h & mask) > threshold else 0), True


@kernel
def _requant(acc, mult, shift, scale, qp, out):
    """out[r, c] = clamp(requant(acc[r, c]) + zp); qp = [zp, act_min, act_max, mode].

    Returns -1, or the flat index of the first accumulator that overflows int32.
    """
    zp, lo, hi, mode = qp[0], qp[1], qp[2], qp[3]
    rows, cols = acc.shape
    per_channel = mult.size > 1
    for r in range(rows):
        for c in range(cols):
            k = c if per_channel else 0
            x = acc[r, c]
            if mode == 2:
                v = np.float64(np.float32(x) * scale[k])  # float32 product, exact in float64
                v = min(max(v, np.float64(lo - zp)), np.float64(hi - zp))
                out[r, c] = np.int64(np.rint(v)) + zp
            else:
                y, ok = _mbqm(x, np.int64(mult[k]), np.int64(shift[k]), mode)
                if not ok:
                    return r * cols + c
                out[r, c] = min(max(y + zp, lo), hi)
    return -1


def activation_range(act: str | tuple[float, float] | None, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite's ``CalculateActivationRangeQuantized``: a fused activation as an int8 clamp.

    ``act`` is None / ``"none"``, ``"relu"``, ``"relu6"``, ``"relu_n1_to_1"`` or a real
    ``(lo, hi)`` clip range (``-inf``/``inf`` for an open side); each bound is
    ``zero_point + round_away(float32(f) / float32(scale))``, kept inside [-128, 127].

    >>> activation_range("relu6", 0.05, -128)
    (-128, -8)
    """
    bounds = {None: (-math.inf, math.inf), "none": (-math.inf, math.inf), "relu": (0.0, math.inf),
              "relu6": (0.0, 6.0), "relu_n1_to_1": (-1.0, 1.0)}
    if isinstance(act, tuple):
        lo_f, hi_f = act
    elif act in bounds:
        lo_f, hi_f = bounds[act]
    else:
        raise InputError(f"unknown activation {act!r}; known: none, relu, relu6, relu_n1_to_1 or a (lo, hi) range")
    s32 = np.float32(scale)

    def quant(f: float) -> float:
        if math.isinf(f):
            return f
        return zero_point + _round_away(float(np.float32(f) / s32))

    lo, hi = max(INT8_MIN, quant(lo_f)), min(INT8_MAX, quant(hi_f))
    if lo > hi:
        raise InputError(f"activation range {act!r} is empty at scale {scale!r}, zero point {zero_point}")
    return int(lo), int(hi)


def check_zero_point(zp: int, what: str) -> int:
    """``zp`` as an int in [-128, 127]; `InputError` naming ``what`` otherwise."""
    if int(zp) != zp or not INT8_MIN <= zp <= INT8_MAX:
        raise InputError(f"{what} zero point must be an integer in [-128, 127], found {zp!r}")
    return int(zp)


def check_act(act_range: tuple[int, int]) -> tuple[int, int]:
    lo, hi = (int(v) for v in act_range)
    if not INT8_MIN <= lo <= hi <= INT8_MAX:
        raise InputError(f"activation range must satisfy -128 <= lo <= hi <= 127, found {act_range!r}")
    return lo, hi


def requantize(acc: np.ndarray, rq: Requant, zero_point: int = 0,
               act_range: tuple[int, int] = (INT8_MIN, INT8_MAX), *, rounding: str | None = None) -> np.ndarray:
    """int8 outputs of int32 accumulators ``acc`` (last axis = channel when per-channel).

    The rounding is ``rq``'s; ``rounding=``, as every kernel takes it, must agree with it.

    Raises
    ------
    InputError
        If an accumulator is outside int32, the channel count does not match, or a
        zero point / range is out of int8.
    OverflowError
        If the fixed-point path would overflow int32 (a multiplier >= 1 with a large
        accumulator), where TFLite would silently wrap.
    """
    check_requant_rounding(rq, rounding, "requantize")
    a = np.asarray(acc)
    if a.dtype.kind not in "iu" or a.ndim == 0:
        raise InputError(f"accumulators must be an integer array, found {a.dtype} with shape {a.shape}")
    if a.size and (a.min() < INT32_MIN or a.max() > INT32_MAX):
        raise InputError("accumulators must fit int32, found a value outside [-2**31, 2**31 - 1]")
    if rq.channels not in (1, a.shape[-1]):
        raise InputError(f"{rq.channels} per-channel multipliers for {a.shape[-1]} channels; expected one per channel")
    a2 = np.ascontiguousarray(a, dtype=np.int64).reshape(-1, a.shape[-1])
    out = np.empty(a2.shape, np.int8)
    run_requant(a2, rq, check_zero_point(zero_point, "output"), check_act(act_range), out)
    return out.reshape(a.shape)


def run_requant(acc2: np.ndarray, rq: Requant, zp: int, act: tuple[int, int], out: np.ndarray) -> None:
    """Requantize a validated (rows, channels) int64 array into int8 ``out``; `OverflowError` on overflow."""
    qp = np.array([zp, act[0], act[1], check_rounding(rq.rounding)], np.int64)
    bad = _requant(acc2, rq.multiplier, rq.shift, rq.scale, qp, out)
    if bad >= 0:
        r, c = divmod(int(bad), acc2.shape[1])
        k = c if rq.channels > 1 else 0
        raise Int32OverflowError(
            f"accumulator {int(acc2[r, c])} (row {r}, channel {c}) times multiplier "
            f"({int(rq.multiplier[k])}, shift {int(rq.shift[k])}) overflows int32 in {rq.rounding} requantization; "
            "expected an output scale that keeps the real multiplier below 1"
        )
