"""int8 fully connected, conv 2D and depthwise conv 2D (TFLite reference semantics).

Activations are int8 with a zero point; weights are symmetric int8 in [-127, 127]
(zero point 0), per output channel or per tensor; bias is int32 with scale
``s_in * s_w[c]``. Each output is

    acc = bias[c] + sum over the taps inside the image of (x - in_zp) * w
    y   = clamp(requant(acc) + out_zp, act_min, act_max)

with ``requant`` from `edgecal.reference.requant`. Layouts are TFLite's: x NHWC,
conv weights OHWI (``[out_c, kh, kw, in_c / groups]``), depthwise weights
``[1, kh, kw, in_c * depth_multiplier]`` with output channel ``ic * dm + m``.

Accumulation is exact (int64); an accumulator, or accumulator plus bias, outside
int32 raises `OverflowError` naming the output, where TFLite would wrap silently.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .._jit import kernel
from ..errors import InputError
from .geometry import Padding, Window
from .requant import (INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN, Int32OverflowError, Requant, check_act,
                      check_requant_rounding, check_zero_point, run_requant)


@kernel
def _finish(acc, bias, c, out, idx):
    """Store acc + bias[c] at out.flat[idx]; False when acc or acc + bias leaves int32."""
    total = acc + bias[c]
    out[idx] = total
    return INT32_MIN <= acc <= INT32_MAX and INT32_MIN <= total <= INT32_MAX


@kernel
def _fc_acc(x, w, bias, zp, out):
    """out[b, n] = bias[n] + sum_k (x[b, k] - zp) * w[n, k]; -1 or the first overflowing flat index."""
    nb, nk = x.shape
    nn = w.shape[0]
    flat = out.reshape(-1)
    for b in range(nb):
        for n in range(nn):
            acc = np.int64(0)
            for k in range(nk):
                acc += (np.int64(x[b, k]) - zp) * w[n, k]
            if not _finish(acc, bias, n, flat, b * nn + n):
                return b * nn + n
    return -1


@kernel
def _conv_acc(x, w, bias, geom, zp, out):
    """Grouped conv accumulators, NHWC x OHWI; geom = [sh, sw, dh, dw, top, left, kh, kw]."""
    nb, ih, iw, ic = x.shape
    noc, kh, kw, fic = w.shape
    _, oh, ow, _ = out.shape
    per_group = noc // (ic // fic)
    flat = out.reshape(-1)
    for b in range(nb):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(noc):
                    c0 = (oc // per_group) * fic
                    acc = np.int64(0)
                    for ky in range(kh):
                        iy = oy * geom[0] - geom[4] + ky * geom[2]
                        if iy < 0 or iy >= ih:
                            continue
                        for kx in range(kw):
                            ix = ox * geom[1] - geom[5] + kx * geom[3]
                            if ix < 0 or ix >= iw:
                                continue
                            for c in range(fic):
                                acc += (np.int64(x[b, iy, ix, c0 + c]) - zp) * w[oc, ky, kx, c]
                    idx = ((b * oh + oy) * ow + ox) * noc + oc
                    if not _finish(acc, bias, oc, flat, idx):
                        return idx
    return -1


def _int8(a: np.ndarray, what: str, ndim: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != np.int8 or arr.ndim != ndim:
        raise InputError(f"{what} must be a {ndim}-D int8 array, found {arr.ndim}-D {arr.dtype} with shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _weights(w: np.ndarray, ndim: int) -> np.ndarray:
    arr = _int8(w, "weights", ndim)
    if arr.size and arr.min() < -127:
        raise InputError("weights hold -128; symmetric int8 weights must lie in [-127, 127] (TFLite spec)")
    return arr


def _bias(bias: np.ndarray | None, channels: int) -> np.ndarray:
    if bias is None:
        return np.zeros(channels, np.int64)
    b = np.asarray(bias)
    if b.dtype.kind not in "iu" or b.shape != (channels,):
        raise InputError(f"bias must be an integer array of shape ({channels},), found {b.dtype} {b.shape}")
    if b.size and (b.min() < INT32_MIN or b.max() > INT32_MAX):
        raise InputError("bias must fit int32, found a value outside [-2**31, 2**31 - 1]")
    return np.ascontiguousarray(b, dtype=np.int64)


def _finish_op(op: str, acc: np.ndarray, bad: int, rq: Requant, out_zp: int, act: tuple[int, int]) -> np.ndarray:
    if bad >= 0:
        raise Int32OverflowError(
            f"{op}: accumulator of output {tuple(int(i) for i in np.unravel_index(bad, acc.shape))} overflows int32 "
            "(sum of (x - zero point) * w, plus bias); expected fewer taps or smaller bias"
        )
    if rq.channels not in (1, acc.shape[-1]):
        raise InputError(f"{op}: {rq.channels} multipliers for {acc.shape[-1]} output channels; expected 1 or one each")
    out = np.empty(acc.shape, np.int8)
    run_requant(acc.reshape(-1, acc.shape[-1]), rq, check_zero_point(out_zp, f"{op} output"), check_act(act),
                out.reshape(-1, acc.shape[-1]))
    return out


def fully_connected(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, rq: Requant, *, in_zp: int = 0,
                    out_zp: int = 0, act_range: tuple[int, int] = (INT8_MIN, INT8_MAX),
                    rounding: str | None = None) -> np.ndarray:
    """int8 ``[batch, n]`` = requant(x ``[batch, k]`` times w ``[n, k]`` transposed, plus bias).

    The rounding is ``rq``'s (`op_multipliers(..., rounding=)`); ``rounding=``, when
    given as to `add` and `quantize`, must agree with it.

    Raises
    ------
    InputError
        On shapes that do not match, weights of -128, or parameters out of range.
    OverflowError
        If an accumulator leaves int32.
    """
    check_requant_rounding(rq, rounding, "fully connected")
    x2, w2 = _int8(x, "fully connected input", 2), _weights(w, 2)
    if x2.shape[1] != w2.shape[1]:
        raise InputError(f"fully connected: input has {x2.shape[1]} features, weights {w2.shape} expect {w2.shape[1]}")
    acc = np.empty((x2.shape[0], w2.shape[0]), np.int64)
    bad = _fc_acc(x2, w2, _bias(bias, w2.shape[0]), check_zero_point(in_zp, "fully connected input"), acc)
    return _finish_op("fully connected", acc, bad, rq, out_zp, act_range)


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, rq: Requant, *, in_zp: int = 0, out_zp: int = 0,
           stride: int | Sequence[int] = 1, padding: Padding = "VALID", dilation: int | Sequence[int] = 1,
           act_range: tuple[int, int] = (INT8_MIN, INT8_MAX), rounding: str | None = None) -> np.ndarray:
    """int8 NHWC conv 2D of x ``[n, h, w, c]`` with OHWI weights ``[oc, kh, kw, c / groups]``.

    ``groups = c / w.shape[3]`` (1 for an ordinary conv), as TFLite's reference kernel.
    """
    check_requant_rounding(rq, rounding, "conv")
    x4, w4 = _int8(x, "conv input", 4), _weights(w, 4)
    ic, (noc, kh, kw, fic) = x4.shape[3], w4.shape
    if fic == 0 or ic % fic or noc % (ic // fic):
        raise InputError(f"conv: input has {ic} channels, weights {w4.shape} (OHWI); expected in_c a multiple of "
                         "the weights' last axis and out_c a multiple of the groups")
    oh, ow, geom = Window.of((kh, kw), stride, dilation, padding).geom(x4.shape[1], x4.shape[2])
    acc = np.empty((x4.shape[0], oh, ow, noc), np.int64)
    bad = _conv_acc(x4, w4, _bias(bias, noc), geom, check_zero_point(in_zp, "conv input"), acc)
    return _finish_op("conv", acc, bad, rq, out_zp, act_range)


def depthwise_conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, rq: Requant, *, in_zp: int = 0,
                     out_zp: int = 0, stride: int | Sequence[int] = 1, padding: Padding = "VALID",
                     dilation: int | Sequence[int] = 1,
                     act_range: tuple[int, int] = (INT8_MIN, INT8_MAX), rounding: str | None = None) -> np.ndarray:
    """int8 NHWC depthwise conv; weights ``[1, kh, kw, c * depth_multiplier]`` (TFLite layout)."""
    check_requant_rounding(rq, rounding, "depthwise")
    x4, w4 = _int8(x, "depthwise input", 4), _weights(w, 4)
    ic, (one, kh, kw, noc) = x4.shape[3], w4.shape
    if one != 1 or noc == 0 or noc % ic:
        raise InputError(f"depthwise: input has {ic} channels, weights {w4.shape}; expected [1, kh, kw, c * multiplier]")
    oh, ow, geom = Window.of((kh, kw), stride, dilation, padding).geom(x4.shape[1], x4.shape[2])
    acc = np.empty((x4.shape[0], oh, ow, noc), np.int64)
    # a depthwise conv is the grouped conv with one input channel per group: OHWI weights [noc, kh, kw, 1]
    grouped = np.ascontiguousarray(w4.transpose(3, 1, 2, 0))
    bad = _conv_acc(x4, grouped, _bias(bias, noc), geom, check_zero_point(in_zp, "depthwise input"), acc)
    return _finish_op("depthwise", acc, bad, rq, out_zp, act_range)
