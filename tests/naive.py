"""Slow, literal twins of edgecal's fast code, written from the maths alone.

Nothing here imports edgecal: each function is a plain transcription of the
definition in DESIGN.md / the module docstrings, so that fast == naive means the
fast code computes the definition.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


# -- the lattice histogram -------------------------------------------------------------
def lattice_exponent(values: np.ndarray, log2_bins: int) -> int:
    """Smallest e >= the lattice minimum with every finite non-zero |x| < 2**e (exact arithmetic)."""
    a = np.abs(values[np.isfinite(values)].astype(np.float64))
    e = log2_bins - 1022
    if a.size and a.max() > 0:
        biggest = Fraction(float(a.max()))
        while Fraction(2) ** e <= biggest:
            e += 1
    return e


def lattice_histogram(values: np.ndarray, bins: int) -> dict:
    """Every counter of a StreamingHistogram, from np.histogram over the final range.

    |x| is divided by R = 2**e (exact: a power of two) and binned over [0, 1) with
    ``bins`` equal bins.
    """
    v = np.asarray(values).ravel().astype(np.float64)
    log2b = bins.bit_length() - 1
    e = lattice_exponent(v, log2b)
    edges = np.arange(bins + 1, dtype=np.float64) / bins
    finite = v[np.isfinite(v)]
    pos, _ = np.histogram(np.ldexp(finite[finite > 0], -e), bins=edges)
    neg, _ = np.histogram(np.ldexp(-finite[finite < 0], -e), bins=edges)
    return {
        "exponent": e,
        "positive": pos.astype(np.int64),
        "negative": neg.astype(np.int64),
        "count": v.size,
        "zeros": int((finite == 0).sum()),
        "nans": int(np.isnan(v).sum()),
        "posinf": int((v == np.inf).sum()),
        "neginf": int((v == -np.inf).sum()),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
    }


# -- KL search (NVIDIA semantics) ------------------------------------------------------
def kl_divergence_of_candidate(counts: np.ndarray, i: int, num_levels: int) -> float:
    """KL(P || Q) keeping the first ``i`` bins, transcribed literally.

    P: the kept bins, outliers folded into the last one. Q: bin j is in level
    floor(j * L / i); each level's mass (of the kept bins) is spread evenly over the
    level's non-empty bins. Both normalised; KL summed over P > 0, inf if Q is 0 there.
    """
    counts = np.asarray(counts, dtype=np.float64)
    kept = counts[:i]
    p = kept.copy()
    p[-1] += counts[i:].sum()
    level_of = np.arange(i) * num_levels // i
    nonempty = kept != 0
    level_mass = np.bincount(level_of[nonempty], weights=kept[nonempty], minlength=num_levels)
    level_bins = np.bincount(level_of[nonempty], minlength=num_levels)
    q = np.zeros(i)
    q[nonempty] = level_mass[level_of[nonempty]] / level_bins[level_of[nonempty]]
    if q.sum() == 0:
        return math.inf
    p = p / p.sum()
    q = q / q.sum()
    support = p > 0
    if (q[support] == 0).any():
        return math.inf
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def kl_search(counts: np.ndarray, num_levels: int = 128, start_bin: int = 128) -> tuple[int, float]:
    """(kept bins, KL) of the minimum over i = start..n; ties go to the largest i."""
    n = len(counts)
    best_i, best = n, math.inf
    for i in range(min(start_bin, n), n + 1):
        d = kl_divergence_of_candidate(counts, i, num_levels)
        if d <= best:
            best_i, best = i, d
    return best_i, best


# -- other methods ---------------------------------------------------------------------
def percentile_amax(counts: np.ndarray, zeros: int, width: float, percentile: float, amax: float) -> float:
    """Smallest right bin edge with ``percentile`` % of the finite |x| at or below it, capped at amax."""
    total = zeros + int(np.sum(counts))
    need = percentile / 100.0 * total
    running = zeros
    for j, c in enumerate(counts):
        running += c
        if running >= need:
            return min((j + 1) * width, amax)
    return amax


def side_error(counts, top: float, step: float, levels: int) -> float:
    """Squared error of one sign's piecewise-uniform density on the grid 0, step, .., levels*step.

    Bin j is [j, j+1) in bin units (the last one [n-1, top]) with its count spread
    evenly. Each bin is cut at every rounding boundary (k + 1/2) * step; on each piece
    every value goes to one level q, and the integral of (x - q)**2 over the piece is
    ((b - q)**3 - (a - q)**3) / 3 times the density.
    """
    total = 0.0
    n = len(counts)
    for j, c in enumerate(counts):
        if not c:
            continue
        a, b = float(j), (top if j == n - 1 else j + 1.0)
        if b <= a:  # a point mass at a
            q = min(math.floor(a / step + 0.5), levels) * step
            total += c * (a - q) ** 2
            continue
        density = c / (b - a)
        cuts = [a] + [(k + 0.5) * step for k in range(levels) if a < (k + 0.5) * step < b] + [b]
        for lo, hi in zip(cuts, cuts[1:]):
            q = min(math.floor(((lo + hi) / 2) / step + 0.5), levels) * step
            total += density * ((hi - q) ** 3 - (lo - q) ** 3) / 3
    return total


def side_error_dense(counts, top: float, step: float, levels: int, points: int = 2000) -> float:
    """`side_error` by dense midpoint integration: ``points`` values per bin, each rounded and clamped."""
    total = 0.0
    n = len(counts)
    for j, c in enumerate(counts):
        if not c:
            continue
        a, b = float(j), (top if j == n - 1 else j + 1.0)
        x = a + (np.arange(points) + 0.5) * (b - a) / points
        q = np.minimum(np.floor(x / step + 0.5), levels) * step
        total += c * float(np.mean((x - q) ** 2))
    return total


def symmetric_mse_error(pos, ptop, neg, ntop, t: float, levels: int = 127) -> float:
    """Error of the symmetric grid with threshold t (bin units) over both signs."""
    return side_error(pos, ptop, t / levels, levels) + side_error(neg, ntop, t / levels, levels)


def asymmetric_mse_error(pos, ptop, neg, ntop, step: float, m_pos: int, steps: int = 255) -> float:
    """Error of the asymmetric grid [-(steps - m_pos) * step, m_pos * step] over both signs."""
    return side_error(pos, ptop, step, m_pos) + side_error(neg, ntop, step, steps - m_pos)


def best_symmetric_mse(pos, ptop, neg, ntop, candidates: int = 2000, levels: int = 127) -> tuple[float, float]:
    """(threshold, error) minimising `symmetric_mse_error` over evenly spaced thresholds in (0, max]."""
    top = max(ptop, ntop)
    errs = [(symmetric_mse_error(pos, ptop, neg, ntop, top * k / candidates, levels), top * k / candidates)
            for k in range(1, candidates + 1)]
    e, t = min(errs)
    return t, e


def sqnr_db(x: np.ndarray, amax: float, levels: int = 127) -> float:
    """10 log10(signal power / error power) of the symmetric int8 round trip."""
    x = np.asarray(x, dtype=np.float64)
    step = amax / levels
    q = np.clip(np.round(x / step), -levels, levels) * step
    err = float(np.sum((x - q) ** 2))
    return math.inf if err == 0 else 10 * math.log10(float(np.sum(x * x)) / err)


# -- int8 reference kernels (TFLite reference_integer_ops, gemmlowp, ONNX Runtime MLAS) ----
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def tdiv(a: int, b: int) -> int:
    """C integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def round_half_away(v: Fraction) -> int:
    """C round(): ties away from zero, on an exact rational."""
    r = math.floor(abs(v) + Fraction(1, 2))
    return r if v >= 0 else -r


def quantize_multiplier(m: float, single_rounding: bool = False) -> tuple[int, int]:
    """TFLite QuantizeMultiplier on exact rationals: m = q * 2**(shift - 31), q in [2**30, 2**31)."""
    if m == 0:
        return 0, 0
    exact, shift = Fraction(m), 0
    while exact >= 1:
        exact, shift = exact / 2, shift + 1
    while exact < Fraction(1, 2):
        exact, shift = exact * 2, shift - 1
    q = round_half_away(exact * 2**31)
    if q == 2**31:
        q, shift = q // 2, shift + 1
    if shift < -31:
        return 0, 0
    if single_rounding and shift > 30:
        return 2**31 - 1, 30
    return q, shift


def saturating_rounding_doubling_high_mul(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul, line by line."""
    overflow = a == b == INT32_MIN
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    high = tdiv(ab + nudge, 1 << 31)
    return INT32_MAX if overflow else high


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT: x / 2**exponent rounded half away from zero (exact)."""
    return round_half_away(Fraction(x, 2**exponent))


def multiply_by_quantized_multiplier(x: int, q: int, shift: int, single_rounding: bool = False) -> int:
    """TFLite MultiplyByQuantizedMultiplier; None where the int32 contract breaks (wrap or overflow)."""
    if single_rounding:
        y = math.floor(Fraction(x * q, 2 ** (31 - shift)) + Fraction(1, 2))
        return y if INT32_MIN <= y <= INT32_MAX else None
    shifted = x * 2 ** max(shift, 0)
    if not INT32_MIN <= shifted <= INT32_MAX:
        return None
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, q), max(-shift, 0))


def requantize_one(acc: int, q: int, shift: int, scale32, zp: int, lo: int, hi: int, rounding: str) -> int:
    """One output: fixed-point MBQM (tflite / tflite-single) or MLAS float32 (onnx), + zp, clamped."""
    if rounding == "onnx":
        v = np.float32(np.float32(acc) * np.float32(scale32))
        y = int(np.rint(np.float64(v))) + zp
    else:
        y = multiply_by_quantized_multiplier(acc, q, shift, rounding == "tflite-single")
        if y is None:
            return None
        y += zp
    return min(max(y, lo), hi)


def quantize_value(x, scale, zp: int, rounding: str) -> int:
    """TFLite AffineQuantize (round(x / scale) half away) or ONNX QuantizeLinear (half even), float32 division."""
    v = np.float32(np.float32(x) / np.float32(scale))
    v = min(max(v, np.float32(-128 - zp)), np.float32(127 - zp))  # saturate first: +-inf and huge values
    r = int(np.rint(np.float64(v))) if rounding == "onnx" else round_half_away(Fraction(float(v)))
    return min(max(r + zp, -128), 127)


def activation_range(kind, scale, zp: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: relu -> [zp, 127], relu6 also caps at quant(6.0)."""
    def quant(f):
        return zp + round_half_away(Fraction(float(np.float32(f) / np.float32(scale))))
    lo, hi = -128, 127
    if kind in ("relu", "relu6"):
        lo = max(lo, quant(0.0))
    if kind == "relu6":
        hi = min(hi, quant(6.0))
    return lo, hi


def conv2d(x, w, bias, in_zp, rq, out_zp, act, stride, pads, dilation, rounding="tflite"):
    """TFLite reference_integer_ops::ConvPerChannel (grouped), NHWC x, OHWI w; rq = [(q, shift, scale32)] per oc."""
    n, ih, iw, ic = x.shape
    oc_n, kh, kw, fic = w.shape
    (sh, sw), (dh, dw), (top, left, bottom, right) = stride, dilation, pads
    oh = (ih + top + bottom - ((kh - 1) * dh + 1)) // sh + 1
    ow = (iw + left + right - ((kw - 1) * dw + 1)) // sw + 1
    per_group = oc_n // (ic // fic)
    out = np.zeros((n, oh, ow, oc_n), np.int64)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(oc_n):
                    group = oc // per_group
                    acc = 0
                    for ky in range(kh):
                        for kx in range(kw):
                            in_y, in_x = oy * sh - top + dh * ky, ox * sw - left + dw * kx
                            if not (0 <= in_x < iw and 0 <= in_y < ih):
                                continue
                            for c in range(fic):
                                acc += int(w[oc, ky, kx, c]) * (int(x[b, in_y, in_x, c + group * fic]) - in_zp)
                    acc += int(bias[oc])
                    q, s, f = rq[oc]
                    out[b, oy, ox, oc] = requantize_one(acc, q, s, f, out_zp, act[0], act[1], rounding)
    return out.astype(np.int8)


def depthwise_conv2d(x, w, bias, in_zp, rq, out_zp, act, stride, pads, dilation, rounding="tflite"):
    """TFLite reference_integer_ops::DepthwiseConvPerChannel: w [1, kh, kw, c * dm]."""
    n, ih, iw, ic = x.shape
    _, kh, kw, oc_n = w.shape
    dm = oc_n // ic
    (sh, sw), (dh, dw), (top, left, bottom, right) = stride, dilation, pads
    oh = (ih + top + bottom - ((kh - 1) * dh + 1)) // sh + 1
    ow = (iw + left + right - ((kw - 1) * dw + 1)) // sw + 1
    out = np.zeros((n, oh, ow, oc_n), np.int64)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for c in range(ic):
                    for m in range(dm):
                        oc = m + c * dm
                        acc = 0
                        for ky in range(kh):
                            for kx in range(kw):
                                in_y, in_x = oy * sh - top + dh * ky, ox * sw - left + dw * kx
                                if 0 <= in_x < iw and 0 <= in_y < ih:
                                    acc += int(w[0, ky, kx, oc]) * (int(x[b, in_y, in_x, c]) - in_zp)
                        acc += int(bias[oc])
                        q, s, f = rq[oc]
                        out[b, oy, ox, oc] = requantize_one(acc, q, s, f, out_zp, act[0], act[1], rounding)
    return out.astype(np.int8)


def fully_connected(x, w, bias, in_zp, rq, out_zp, act, rounding="tflite"):
    """TFLite reference_integer_ops::FullyConnected: y[b, n] from sum_k w[n, k] * (x[b, k] - zp)."""
    out = np.zeros((x.shape[0], w.shape[0]), np.int64)
    for b in range(x.shape[0]):
        for n in range(w.shape[0]):
            acc = sum(int(w[n, k]) * (int(x[b, k]) - in_zp) for k in range(x.shape[1])) + int(bias[n])
            q, s, f = rq[n if len(rq) > 1 else 0]
            out[b, n] = requantize_one(acc, q, s, f, out_zp, act[0], act[1], rounding)
    return out.astype(np.int8)


def add(x1, x2, in1, in2, out, act, single_rounding=False):
    """TFLite int8 Add (add.cc Prepare + reference_integer_ops::AddFunc) on flat arrays."""
    (s1, z1), (s2, z2), (so, zo) = in1, in2, out
    s1, s2, so = (float(np.float32(s)) for s in (s1, s2, so))
    twice_max = 2 * max(s1, s2)
    q1, sh1 = quantize_multiplier(s1 / twice_max, single_rounding)
    q2, sh2 = quantize_multiplier(s2 / twice_max, single_rounding)
    qo, sho = quantize_multiplier(twice_max / ((1 << 20) * so), single_rounding)
    res = []
    for a, b in zip(np.ravel(x1), np.ravel(x2)):
        u1 = multiply_by_quantized_multiplier((int(a) - z1) * (1 << 20), q1, sh1, single_rounding)
        u2 = multiply_by_quantized_multiplier((int(b) - z2) * (1 << 20), q2, sh2, single_rounding)
        y = multiply_by_quantized_multiplier(u1 + u2, qo, sho, single_rounding) + zo
        res.append(min(max(y, act[0]), act[1]))
    return np.array(res, np.int8).reshape(np.shape(x1))


def pool2d(x, kernel, stride, pads, act, average):
    """TFLite reference_integer_ops::AveragePool / MaxPool (padding excluded; avg rounds half away via C division)."""
    n, ih, iw, c_n = x.shape
    (kh, kw), (sh, sw), (top, left, bottom, right) = kernel, stride, pads
    oh, ow = (ih + top + bottom - kh) // sh + 1, (iw + left + right - kw) // sw + 1
    out = np.zeros((n, oh, ow, c_n), np.int64)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for c in range(c_n):
                    vals = [int(x[b, iy, ix, c]) for iy in range(oy * sh - top, oy * sh - top + kh)
                            for ix in range(ox * sw - left, ox * sw - left + kw) if 0 <= iy < ih and 0 <= ix < iw]
                    if average:
                        acc, cnt = sum(vals), len(vals)
                        v = tdiv(acc + cnt // 2, cnt) if acc > 0 else tdiv(acc - cnt // 2, cnt)
                    else:
                        v = max(vals)
                    out[b, oy, ox, c] = min(max(v, act[0]), act[1])
    return out.astype(np.int8)


# -- edgecal report: expected SQNR of an entry on a histogram's piecewise-uniform density ----------
def expected_sqnr_db(pos_counts, neg_counts, width, vmin, vmax, scale, zero_point, qmin, qmax) -> float:
    """10 log10(signal / error) of the int8 round trip, integrated bin by bin over the histogram's density.

    Bin j of a sign holds |x| in [j w, (j+1) w), its count spread evenly over it, except that the last
    occupied bin of a sign ends at that sign's extreme |x| (a point mass when the extreme is its left
    edge). A value x becomes q = clamp(round(x / scale) + zero_point, qmin, qmax), then
    (q - zero_point) * scale. Exact zeros are exact and add nothing.
    """
    breaks = (np.arange(qmin, qmax) - zero_point + 0.5) * scale  # where the level changes

    def level(x):
        q = min(max(math.floor(x / scale + 0.5) + zero_point, qmin), qmax)
        return (q - zero_point) * scale

    signal = error = 0.0
    for counts, extreme, sign in ((pos_counts, vmax, 1.0), (neg_counts, -vmin, -1.0)):
        occupied = [j for j in range(len(counts)) if counts[j] > 0]
        for j in occupied:
            a = j * width
            b = (j + 1) * width if j != occupied[-1] else min(max(extreme, a), (j + 1) * width)
            c = float(counts[j])
            if b == a:  # a point mass at the extreme
                signal += c * a * a
                error += c * (sign * a - level(sign * a)) ** 2
                continue
            xa, xb = sorted((sign * a, sign * b))
            cuts = [xa, *[float(t) for t in breaks if xa < t < xb], xb]
            density = c / (xb - xa)
            signal += density * (xb ** 3 - xa ** 3) / 3.0
            for u, v in zip(cuts[:-1], cuts[1:]):
                lv = level((u + v) / 2.0)
                error += density * ((v - lv) ** 3 - (u - lv) ** 3) / 3.0
    if error == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / error)


# -- op registry: the Neg op that tests/op_neg.py registers, one value at a time ----
def neg_int8(q, in_zp: int, in_scale: float, out_scale: float, out_zp: int, rounding: str = "tflite") -> np.ndarray:
    """int8 Neg as TFLite rescales: (in_zp - q) times the real multiplier float32(s_in) / float32(s_out), + out_zp."""
    real = float(np.float32(in_scale) / np.float32(out_scale))
    m, shift = quantize_multiplier(real, rounding == "tflite-single")
    out = [requantize_one(in_zp - int(v), m, shift, np.float32(real), out_zp, -128, 127, rounding) for v in np.ravel(q)]
    return np.array(out, np.int8).reshape(np.shape(q))


# -- kl-compat, kl-refine, codebook: tool-compatible KL, continuous KL, non-uniform LUTs --
def tool_smooth(p, eps=1e-4):
    """The tools' smooth_distribution in float64; None where they fail (no non-zero, or an entry <= 0)."""
    p = np.asarray(p, dtype=np.float64)
    zeros = p == 0
    if zeros.all():
        return None
    eps1 = eps * zeros.sum() / (~zeros).sum()
    out = p + eps * zeros - eps1 * ~zeros
    return None if eps1 >= 1.0 or (out <= 0).any() else out


def tool_entropy(p, q):
    """scipy.stats.entropy(p, q) in float64; inf when either smoothing failed."""
    p, q = tool_smooth(p), tool_smooth(q)
    if p is None or q is None:
        return np.inf
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def ort_candidate_kl(hist, i, nq):
    """ONNX Runtime 1.32 get_entropy_threshold's divergence for window half-width i (transcribed)."""
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.size
    start, end = n // 2 - i, min(n // 2 + i + 1, n)
    sliced = hist[start:end].copy()
    p = sliced.copy()
    p[0] += hist[:start].sum()
    p[-1] += hist[end:].sum()
    nonzeros = (p != 0).astype(np.int64)
    qb = np.zeros(nq, dtype=np.int64)
    m = sliced.size // nq
    for k in range(nq):
        qb[k] = math.trunc(sliced[k * m:k * m + m].sum())
    qb[-1] = math.trunc(qb[-1] + sliced[nq * m:].sum())
    q = np.zeros(p.size, dtype=np.int64)
    for k in range(nq):
        norm = nonzeros[k * m:k * m + m].sum()
        if norm != 0:
            q[k * m:k * m + m] = math.trunc(qb[k] / norm)
    return tool_entropy(p, q)


def ort_search(hist, nq):
    """Window half-width ORT picks: np.argmin over i = nq//2 .. n//2."""
    d = [ort_candidate_kl(hist, i, nq) for i in range(nq // 2, len(hist) // 2 + 1)]
    return nq // 2 + int(np.argmin(d))


def mxnet_candidate_kl(hist, i, nq):
    """MXNet 1.5 _get_optimal_threshold's divergence for window half-width i (transcribed)."""
    hist = np.asarray(hist, dtype=np.float64)
    z = hist.size // 2
    sliced = hist[z - i:z + i + 1]
    p = sliced.copy()
    p[0] += hist[:z - i].sum()
    p[-1] += hist[z + i + 1:].sum()
    nonzeros = (p != 0).astype(np.int64)
    m = p.size // nq
    qb = np.zeros(nq, dtype=np.int64)
    for j in range(nq):
        qb[j] = math.trunc(sliced[j * m:j * m + m].sum())
    qb[-1] = math.trunc(qb[-1] + sliced[nq * m:].sum())
    q = np.zeros(p.size)
    for j in range(nq):
        stop = len(nonzeros) if j == nq - 1 else j * m + m
        norm = nonzeros[j * m:stop].sum()
        if norm != 0:
            q[j * m:stop] = qb[j] / norm
    q[p == 0] = 0
    return tool_entropy(p, q)


def mxnet_search(hist, nq):
    d = [mxnet_candidate_kl(hist, i, nq) for i in range(nq // 2, len(hist) // 2 + 1)]
    return nq // 2 + int(np.argmin(d))


def ncnn_candidate_kl(h, t, target):
    """ncnn2table quantize_KL's divergence for threshold bin t on normalised h (transcribed, float64)."""
    eps = 1e-4
    n = len(h)
    clip = [eps + h[j] for j in range(t)]
    clip[t - 1] += sum(h[t:n])
    npb = t / target
    qd = [0.0] * target
    spans = []
    for j in range(target):
        start = t - npb if j == target - 1 else j * npb
        end = t if j == target - 1 else (j + 1) * npb
        spans.append((start, end))
        lu, rl = math.ceil(start), math.floor(end)
        ls, rs = lu - start, end - rl
        total, width = 0.0, 0.0
        if ls > 0:
            total += ls * h[lu - 1]
            width += ls
        if rs > 0 and j < target - 1:
            total += rs * h[rl]
            width += rs
        top = t if j == target - 1 else rl
        total += sum(h[lu:top])
        qd[j] = total / (width + top - lu)
    ex = [eps] * t
    for j, (start, end) in enumerate(spans):
        lu, rl = math.ceil(start), math.floor(end)
        if lu - start > 0:
            ex[lu - 1] += (lu - start) * qd[j]
        if end - rl > 0 and j < target - 1:
            ex[rl] += (end - rl) * qd[j]
        for k in range(lu, t if j == target - 1 else rl):
            ex[k] += qd[j]
    return sum(a * math.log(a / b) for a, b in zip(clip, ex))


def ncnn_search(counts, target=128):
    """ncnn's threshold bin: first strict minimum over t = target .. n-1."""
    h = np.asarray(counts, dtype=np.float64)
    h = h / h.sum()
    best, best_t = np.inf, target
    for t in range(target, len(h)):
        d = ncnn_candidate_kl(h, t, target)
        if d < best:
            best, best_t = d, t
    return best_t


def rebin(pos, pos_top, neg, neg_top, zeros, width, edges):
    """Mass of each [edges[k], edges[k+1]) for a histogram read as a piecewise-uniform density.

    pos/neg: counts of each sign in bins of ``width`` from 0, the last occupied bin of
    each ending at pos_top/neg_top (real units); zeros sit at 0 (the bin whose left
    edge is <= 0 < right edge). The last tool bin is closed. Dense overlap of every
    pair of bins.
    """
    out = np.zeros(len(edges) - 1)
    pieces = []
    for sign, counts, top in ((1, pos, pos_top), (-1, neg, neg_top)):
        nz = np.flatnonzero(counts)
        last = nz[-1] if nz.size else -1
        for j in range(last + 1):
            a, b = j * width, (top if j == last else (j + 1) * width)
            lo, hi = (a, b) if sign > 0 else (-b, -a)
            pieces.append((lo, hi, float(counts[j])))
    for lo, hi, c in pieces:
        for k in range(len(out)):
            ov = min(hi, edges[k + 1]) - max(lo, edges[k])
            if hi > lo and ov > 0:
                out[k] += c * ov / (hi - lo)
    for k in range(len(out)):
        if edges[k] <= 0 < edges[k + 1] or (k == len(out) - 1 and edges[k + 1] == 0):
            out[k] += zeros
    return out


def continuous_kl(counts, top, t, levels):
    """kl-refine's objective KL(P_t || Q_t), integrated piece by piece between every breakpoint.

    p: counts[j] spread over [j, j+1) (the last occupied bin over [n-1, top]); P_t = p on
    [0, t) plus the mass above t spread over [t-1, t); Q_t = p cut at t, averaged over
    cells [k t/L, (k+1) t/L). Between breakpoints both are constant, so the midpoint
    value times the length is the exact integral.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.size

    def p(x):
        if x < 0 or x >= top:
            return 0.0
        j = min(int(math.floor(x)), n - 1)
        return counts[j] / ((top - j) if j == n - 1 else 1.0)

    s = t / levels
    marks = sorted({0.0, top, t, max(t - 1, 0.0), *[float(j) for j in range(n + 1) if j < top],
                    *[k * s for k in range(levels + 1)]})
    pieces = [(a, b) for a, b in zip(marks, marks[1:]) if b > a]
    total = sum((b - a) * p((a + b) / 2) for a, b in pieces)
    tail = sum((b - a) * p((a + b) / 2) for a, b in pieces if a >= t)
    kept = total - tail
    strip = t - max(t - 1, 0.0)
    cell_mass = np.zeros(levels)
    for a, b in pieces:
        if b <= t:
            cell_mass[min(int(((a + b) / 2) // s), levels - 1)] += (b - a) * p((a + b) / 2)
    kl = 0.0
    for a, b in pieces:
        if b > t:
            continue
        xm = (a + b) / 2
        big_p = p(xm) + (tail / strip if xm >= t - 1 else 0.0)
        q = cell_mass[min(int(xm // s), levels - 1)] / s
        if big_p > 0:
            if q == 0:
                return math.inf
            kl += (b - a) * (big_p / total) * math.log((big_p / total) / (q / kept))
    return kl


def joint_continuous_kl(pos, ptop, neg, ntop, s, m_pos, steps=255):
    """kl-refine's asymmetric objective: both signs in one P and one Q, integrated piece by piece.

    Each sign (counts in bin units, last bin ending at its top) has threshold t = m s with m its
    steps (m_pos above zero, steps - m_pos below); P folds each sign's mass above t into
    [t-1, t), Q is each sign cut at t averaged over its m cells of width s; P is normalised
    by all the mass, Q by all the mass kept below the thresholds.
    """
    parts = []
    for counts, top, m in ((pos, ptop, m_pos), (neg, ntop, steps - m_pos)):
        counts = np.asarray(counts, dtype=np.float64)
        if counts.sum() == 0:
            continue
        n = counts.size
        t = m * s

        def p(x, counts=counts, top=top, n=n):
            if x < 0 or x >= top:
                return 0.0
            j = min(int(math.floor(x)), n - 1)
            return counts[j] / ((top - j) if j == n - 1 else 1.0)

        marks = sorted({0.0, top, t, max(t - 1, 0.0), *[float(j) for j in range(n + 1) if j < top],
                        *[k * s for k in range(m + 1)]})
        pieces = [(a, b, p((a + b) / 2)) for a, b in zip(marks, marks[1:]) if b > a]
        tail = sum((b - a) * v for a, b, v in pieces if a >= t)
        cells = np.zeros(m)
        for a, b, v in pieces:
            if b <= t:
                cells[min(int(((a + b) / 2) // s), m - 1)] += (b - a) * v
        for a, b, v in pieces:
            if b <= t:
                xm = (a + b) / 2
                parts.append((b - a, v + (tail if xm >= t - 1 else 0.0), cells[min(int(xm // s), m - 1)] / s))
    total = sum(length * big_p for length, big_p, _ in parts)
    kept = sum(length * q for length, _, q in parts)
    kl = 0.0
    for length, big_p, q in parts:
        if big_p > 0:
            if q == 0:
                return math.inf
            kl += length * (big_p / total) * math.log((big_p / total) / (q / kept))
    return kl


def _dense(xs, ds, a, b, points=4000):
    """Midpoints and weights (density x width) of a dense grid over [a, b) of the piecewise density."""
    if b <= a:
        return np.zeros(0), np.zeros(0)
    edges = np.linspace(a, b, points + 1)
    mids = 0.5 * (edges[:-1] + edges[1:])
    j = np.clip(np.searchsorted(xs, mids, side="right") - 1, 0, len(ds) - 1)
    inside = (mids >= xs[0]) & (mids < xs[-1])
    return mids, np.where(inside, np.asarray(ds)[j], 0.0) * (b - a) / points


def codebook_mse(xs, ds, zeros, levels, points=4000):
    """Expected squared error of nearest-level quantization by dense integration, cell by cell, plus the zeros."""
    levels = np.asarray(levels, dtype=np.float64)
    b = np.concatenate([[xs[0]], 0.5 * (levels[1:] + levels[:-1]), [xs[-1]]])
    err = zeros * np.min(np.abs(levels)) ** 2
    for k in range(levels.size):
        mids, wts = _dense(xs, ds, b[k], b[k + 1], points)
        err += float(np.sum(wts * (mids - levels[k]) ** 2))
    return err


def _overlap(xs, ds, a, b):
    """(mass, first moment) of the piecewise density over [a, b): every piece's overlap, one by one."""
    mass = moment = 0.0
    for j in range(len(ds)):
        lo, hi = max(a, xs[j]), min(b, xs[j + 1])
        if hi > lo:
            mass += ds[j] * (hi - lo)
            moment += ds[j] * (hi * hi - lo * lo) / 2
    return mass, moment


def lloyd_step(xs, ds, zeros, levels):
    """One Lloyd round: each level to its cell's centroid (the zeros at 0 included), masses piece by piece."""
    levels = np.asarray(levels, dtype=np.float64)
    b = np.concatenate([[xs[0]], 0.5 * (levels[1:] + levels[:-1]), [xs[-1]]])
    out = levels.copy()
    for k in range(levels.size):
        mass, moment = _overlap(xs, ds, b[k], b[k + 1])
        atom = zeros if b[k] <= 0 < b[k + 1] else 0.0
        if mass + atom > 0:
            out[k] = moment / (mass + atom)
    return np.sort(out)


def codebook_kl_part(xs, ds, levels):
    """-sum_k M_k log(M_k / w_k) over the nearest-level cells, masses piece by piece."""
    levels = np.asarray(levels, dtype=np.float64)
    b = np.concatenate([[xs[0]], 0.5 * (levels[1:] + levels[:-1]), [xs[-1]]])
    acc = 0.0
    for k in range(levels.size):
        m, _ = _overlap(xs, ds, b[k], b[k + 1])
        if m > 0:
            acc -= m * math.log(m / (b[k + 1] - b[k]))
    return acc


def lut_code(x, levels):
    """Codebook code of one value: the number of float32 midpoints at or below float32 x; NaN gives 0."""
    x = np.float32(x)
    if np.isnan(x):
        return 0
    bounds = [np.float32((levels[i] + levels[i + 1]) / 2) for i in range(len(levels) - 1)]
    return sum(1 for b in bounds if x >= b)


# -- compact exact counters: folding and merging lattice histograms --------------------
def fold_counts(counts: np.ndarray, k: int) -> np.ndarray:
    """Bins of one sign after the range grew by 2**k: bin j of the result sums old bins j*2**k .. (j+1)*2**k - 1.

    Python integers (object array): exact at any count.
    """
    out = np.array([0] * len(counts), dtype=object)
    for j, c in enumerate(counts):
        out[j >> k] += int(c)
    return out


def merge_lattice(a: dict, b: dict) -> dict:
    """Two `lattice_histogram` dicts of the same bin count as one: both folded to the larger exponent, then added."""
    e = max(a["exponent"], b["exponent"])
    out = {"exponent": e}
    for side in ("positive", "negative"):
        out[side] = fold_counts(a[side], e - a["exponent"]) + fold_counts(b[side], e - b["exponent"])
    for key in ("count", "zeros", "nans", "posinf", "neginf"):
        out[key] = a[key] + b[key]
    lows = [h["min"] for h in (a, b) if h["min"] is not None]
    highs = [h["max"] for h in (a, b) if h["max"] is not None]
    out["min"], out["max"] = (min(lows) if lows else None), (max(highs) if highs else None)
    return out


def max_finite_abs(values: np.ndarray) -> float:
    """The largest |x| over the finite values (0.0 when there is none), in float64."""
    finite = [abs(float(v)) for v in np.asarray(values).ravel() if math.isfinite(float(v))]
    return max(finite, default=0.0)


# -- one calibration pipeline: which inputs a resumable run folds in ---------------------------

def naive_inputs_once(runs):
    """The (key, arrays) inputs that runs of a resumable pipeline fold in, in order, each key once.

    ``runs`` is a list of runs, each a list of (key, arrays); a key None is always new.
    """
    seen, out = set(), []
    for items in runs:
        for key, arrays in items:
            if key is not None and key in seen:
                continue
            if key is not None:
                seen.add(key)
            out.append((key, arrays))
    return out


# -- one sqnr_db: signal-to-quantization-noise ratio, one value at a time ----------------------
def sqnr_between_db(reference, approx) -> float:
    """10 log10(sum r**2 / sum (r - a)**2); inf when there is no error, -inf for no signal with error."""
    signal = err = 0.0
    for r, a in zip(np.asarray(reference, np.float64).ravel().tolist(), np.asarray(approx, np.float64).ravel().tolist()):
        signal += r * r
        err += (r - a) * (r - a)
    if err == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / err)


def round_trip_sqnr_db(x, scale: float, zero_point: int, qmin: int, qmax: int) -> float:
    """`sqnr_between_db` of the finite values of x against round(x / scale) half away + zp, clamped, dequantized."""
    kept, back = [], []
    for v in np.asarray(x, np.float64).ravel().tolist():
        if not math.isfinite(v):
            continue
        q = min(max(round_half_away(Fraction(v) / Fraction(scale)) + zero_point, qmin), qmax)
        kept.append(v)
        back.append((q - zero_point) * scale)
    return sqnr_between_db(kept, back)


# -- staging of small arrays: the gather that puts each tensor's staged values side by side --------
def gather(src, firsts, counts) -> np.ndarray:
    """src[firsts[k] + i] for i < counts[k], for every k in turn, one value at a time."""
    out = []
    for first, count in zip(np.asarray(firsts).tolist(), np.asarray(counts).tolist()):
        for i in range(count):
            out.append(src[first + i])
    return np.array(out, dtype=src.dtype)
