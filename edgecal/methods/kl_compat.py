"""KL modes that reproduce other tools' entropy calibration: ``kl-onnxruntime``, ``kl-mxnet``, ``kl-ncnn``.

Each tool runs the TensorRT recipe with its own conventions; a user moving from one
of them gets its thresholds from edgecal's histogram. Two steps:

1. **The tool's histogram.** edgecal's histogram is read as a piecewise-uniform
   density (each bin's count spread evenly over the bin, the outermost bins ending
   at the exact min and max) and integrated over the tool's bins: signed bins over
   ``[-amax, amax]`` for ONNX Runtime and MXNet (``np.histogram`` of the whole tensor
   in one call, exact zeros in the bin holding 0), bins of ``|x|`` over
   ``[0, amax]`` with exact zeros left out for ncnn. Counts are then fractional; the
   finer edgecal's bins, the closer they are to the tool's integer counts.
2. **The tool's search**, transcribed from its source, on that histogram:

   * ``kl-onnxruntime`` (``HistogramCollector.get_entropy_threshold``, ORT 1.32):
     windows ``[z - i, min(z + i + 1, n))`` around ``z = n // 2`` for
     ``i = nq//2 .. z``; outliers folded into both end bins; ``n_window // nq``
     bins per level, the remainder added to the last level's mass but not spread
     (those bins get q = 0); level masses and spread values truncated to integers
     (ORT's int64 arrays); no zero mask; smoothing ``eps = 1e-4`` on counts; first
     minimum; range = the window's edges clipped to the observed min and max.
     Defaults are ORT's: 128 bins, 128 levels (one candidate: the full range).
   * ``kl-mxnet`` (``mxnet.contrib.quantization._get_optimal_threshold``, 1.5):
     an odd bin count (8001) so 0 is a bin centre; windows ``[z - i, z + i + 1)``
     for ``i = nq//2 .. n//2``; outliers into both end bins; the last level spans
     to the window's end; ``q = 0`` where ``p = 0``; smoothing ``1e-4`` on counts;
     first minimum; threshold = right edge. 255 levels, 511 for a never-negative
     tensor (MXNet's ``auto``/``uint8`` rule), whose range is then ``[0, T]``.
   * ``kl-ncnn`` (``ncnn2table`` ``quantize_KL``): 2048 bins of ``|x|`` normalised
     to probabilities; thresholds ``t = 128 .. 2047`` (the full range is never a
     candidate); levels of ``t / 128`` bins with fractional overlap at both ends,
     expanded back the same way with no mask; ``1e-4`` added to every bin of P and
     of the expansion (no renormalisation); first strict minimum; threshold
     ``(t + 0.5) * amax / 2048``.

Precision: every KL here is float64. ORT and ncnn compute it in float32 and
MXNet's smoothing runs in float32, so on a KL curve whose minimum is a near-tie
the tool may pick a neighbouring candidate. Degenerate candidates the tools crash
on (smoothing with no non-zero entry, or one that would make an entry <= 0) are
rejected here instead; MXNet 1.5 scores a window holding no mass as NaN and picks
it, edgecal rejects it.

>>> import numpy as np
>>> ncnn_search(np.array([0.5, 0.5, 0.0, 0.0]), levels=2)   # P and its 2-level image agree at t = 2
2
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel
from ..errors import InputError
from ..histogram import StreamingHistogram
from .grid import side
from .registry import register

_EPS = 1e-4
_MAX_BINS = 1 << 15  # every search here is O(bins**2)


@kernel
def _smoothed_kl(p, q):
    """KL of the tools' ``smooth_distribution(p)`` against ``smooth_distribution(q)``; inf when rejected."""
    n = p.size
    pz = 0
    qz = 0
    for k in range(n):
        pz += p[k] == 0.0
        qz += q[k] == 0.0
    if pz == n or qz == n:
        return np.inf
    pe = _EPS * pz / (n - pz)
    qe = _EPS * qz / (n - qz)
    if pe >= 1.0 or qe >= 1.0:
        return np.inf
    ps = 0.0
    qs = 0.0
    for k in range(n):
        a = _EPS if p[k] == 0.0 else p[k] - pe
        b = _EPS if q[k] == 0.0 else q[k] - qe
        if a <= 0.0 or b <= 0.0:
            return np.inf
        ps += a
        qs += b
    acc = 0.0
    for k in range(n):
        a = (_EPS if p[k] == 0.0 else p[k] - pe) / ps
        b = (_EPS if q[k] == 0.0 else q[k] - qe) / qs
        acc += a * math.log(a / b)
    return acc


@kernel
def _window_p(hist, start, stop):
    """The window's counts with the outliers on each side folded into its end bins."""
    p = hist[start:stop].copy()
    p[0] += hist[:start].sum()
    p[p.size - 1] += hist[stop:].sum()
    return p


@kernel
def _ort_candidate(hist, i, nq):
    """ORT's KL for the window of half-width ``i``."""
    n = hist.size
    start = n // 2 - i
    stop = min(n // 2 + i + 1, n)
    sliced = hist[start:stop]
    p = _window_p(hist, start, stop)
    merged = sliced.size // nq
    q = np.zeros(sliced.size)
    for k in range(nq):
        mass = math.trunc(sliced[k * merged:(k + 1) * merged].sum())
        if k == nq - 1:
            mass = math.trunc(mass + sliced[nq * merged:].sum())
        norm = 0
        for j in range(k * merged, (k + 1) * merged):
            norm += p[j] != 0.0
        if norm:
            q[k * merged:(k + 1) * merged] = math.trunc(mass / norm)
    return _smoothed_kl(p, q)


@kernel
def _ort_search(hist, nq):
    """Half-width ``i`` of ORT's best window (first minimum)."""
    best, best_i = np.inf, nq // 2
    for i in range(nq // 2, hist.size // 2 + 1):
        d = _ort_candidate(hist, i, nq)
        if d < best:
            best, best_i = d, i
    return best_i


@kernel
def _mxnet_candidate(hist, cum, i, nq, qv):
    """MXNet's KL for the window of half-width ``i``, in two passes and no window-sized buffer.

    Pass 1: each level's mass (int32-truncated as MXNet's ``quantized_bins``) and the
    value its non-zero bins get, and the zero counts that set the smoothing. Pass 2:
    the smoothed KL, with both sums known in closed form (``qv`` is scratch, nq long).
    """
    n = hist.size
    start = n // 2 - i
    size = 2 * i + 1
    left, right = cum[start], cum[n] - cum[start + size]
    merged = size // nq
    pz, qz, sq = 0, 0, 0.0
    for k in range(nq):
        lo = k * merged
        hi = size if k == nq - 1 else lo + merged
        s1, s2, norm = 0.0, 0.0, 0
        for j in range(lo, hi):
            v = hist[start + j]
            if j < lo + merged:
                s1 += v
            else:
                s2 += v
            norm += _mx_p(v, j, size, left, right) != 0.0
        mass = math.trunc(s1)
        if k == nq - 1:  # the remainder joins the last level (int32 arithmetic: truncated)
            mass = math.trunc(mass + s2)
        qv[k] = mass / norm if norm else 0.0
        pz += (hi - lo) - norm
        qz += (hi - lo) - (norm if qv[k] != 0.0 else 0)
        sq += qv[k] * norm
    if pz == size or qz == size:
        return np.inf
    pe, qe = _EPS * pz / (size - pz), _EPS * qz / (size - qz)
    if pe >= 1.0 or qe >= 1.0:
        return np.inf
    ps, qs = cum[n] - pe * (size - pz) + _EPS * pz, sq - qe * (size - qz) + _EPS * qz
    acc = 0.0
    for k in range(nq):
        lo = k * merged
        hi = size if k == nq - 1 else lo + merged
        for j in range(lo, hi):
            pj = _mx_p(hist[start + j], j, size, left, right)
            a = _EPS if pj == 0.0 else pj - pe
            b = _EPS if pj == 0.0 or qv[k] == 0.0 else qv[k] - qe
            if a <= 0.0 or b <= 0.0:
                return np.inf
            acc += a * math.log((a * qs) / (b * ps))
    return acc / ps


@kernel
def _mx_p(v, j, size, left, right):
    """p of the window's bin j: its count, plus the outliers at the two ends."""
    return v + (left if j == 0 else 0.0) + (right if j == size - 1 else 0.0)


@kernel
def _mxnet_search(hist, nq):
    """Half-width ``i`` of MXNet's best window (first minimum)."""
    cum = np.zeros(hist.size + 1)
    for j in range(hist.size):
        cum[j + 1] = cum[j] + hist[j]
    qv = np.zeros(nq)
    best, best_i = np.inf, nq // 2
    for i in range(nq // 2, hist.size // 2 + 1):
        d = _mxnet_candidate(hist, cum, i, nq, qv)
        if d < best:
            best, best_i = d, i
    return best_i


@kernel
def _overlap_levels(h, t, levels):
    """ncnn's level densities: the mean of ``h`` over [j t/L, (j+1) t/L), fractional at both ends."""
    w = t / levels
    out = np.zeros(levels)
    for j in range(levels):
        a = t - w if j == levels - 1 else j * w
        b = t if j == levels - 1 else (j + 1) * w
        lu = math.ceil(a)
        rl = math.floor(b)
        s = 0.0
        if lu - a > 0.0:
            s += (lu - a) * h[lu - 1]
        if b - rl > 0.0 and j < levels - 1:
            s += (b - rl) * h[rl]
        for k in range(lu, min(rl, t)):
            s += h[k]
        out[j] = s / (min(rl, t) - lu + (lu - a) + ((b - rl) if j < levels - 1 else 0.0))
    return out


@kernel
def _ncnn_candidate(h, t, levels):
    """ncnn's (unnormalised, eps-smoothed) KL for threshold bin ``t``."""
    q = _overlap_levels(h, t, levels)
    w = t / levels
    e = np.full(t, _EPS)
    for j in range(levels):
        a = t - w if j == levels - 1 else j * w
        b = t if j == levels - 1 else (j + 1) * w
        lu = math.ceil(a)
        rl = math.floor(b)
        if lu - a > 0.0:
            e[lu - 1] += (lu - a) * q[j]
        if b - rl > 0.0 and j < levels - 1:
            e[rl] += (b - rl) * q[j]
        for k in range(lu, min(rl, t)):
            e[k] += q[j]
    acc = 0.0
    tail = h[t:].sum()
    for k in range(t):
        a = _EPS + h[k] + (tail if k == t - 1 else 0.0)
        acc += a * math.log(a / e[k])
    return acc


@kernel
def _ncnn_search(h, levels):
    """Threshold bin of ncnn's best candidate (first strict minimum)."""
    best, best_t = np.inf, levels
    for t in range(levels, h.size):
        d = _ncnn_candidate(h, t, levels)
        if d < best:
            best, best_t = d, t
    return best_t


# -- the tools' histograms from edgecal's ---------------------------------------------
def _side_cdf(counts: np.ndarray, extreme: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """(edges, cumulative counts) of one sign's piecewise-linear CDF in real units, for `np.interp`."""
    c, _, top = side(counts, extreme, width)
    edges = np.arange(c.size + 1, dtype=np.float64) * width
    if c.size:
        edges[-1] = top * width
    return edges, np.concatenate([[0.0], np.cumsum(c)])


def signed_layout(hist: StreamingHistogram, num_bins: int) -> np.ndarray:
    """Counts of ``np.histogram(x, num_bins, range=(-amax, amax))`` read off edgecal's histogram."""
    amax, w = hist.amax, hist.bin_width
    pe, pc = _side_cdf(hist.positive_counts(), max(hist.max or 0.0, 0.0), w)
    ne, nc = _side_cdf(hist.negative_counts(), max(-(hist.min or 0.0), 0.0), w)
    edges = amax * (2.0 * np.arange(num_bins + 1) / num_bins - 1.0)
    below = np.where(edges < 0.0, nc[-1] - np.interp(-edges, ne, nc), nc[-1])  # mass of x < edge
    below = np.where(edges > 0.0, nc[-1] + hist.zeros + np.interp(edges, pe, pc), below)
    below[-1] = nc[-1] + hist.zeros + pc[-1]  # the last bin is closed: max itself is in it
    return _integer_counts(below)


def abs_layout(hist: StreamingHistogram, num_bins: int) -> np.ndarray:
    """ncnn's histogram: ``num_bins`` bins of the non-zero |x| over [0, amax], read off edgecal's."""
    w = hist.bin_width
    pe, pc = _side_cdf(hist.positive_counts(), max(hist.max or 0.0, 0.0), w)
    ne, nc = _side_cdf(hist.negative_counts(), max(-(hist.min or 0.0), 0.0), w)
    edges = hist.amax * np.arange(num_bins + 1) / num_bins
    below = np.interp(edges, pe, pc) + np.interp(edges, ne, nc)
    below[-1] = pc[-1] + nc[-1]
    return _integer_counts(below)


def _integer_counts(below: np.ndarray) -> np.ndarray:
    """Bin counts from a cumulative mass, rounded at every edge: integers summing to the total, as the tools count."""
    return np.maximum(np.diff(np.round(below)), 0.0)


# -- public searches on a tool's own histogram ----------------------------------------
def _counts(counts: object, least: int) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim != 1 or arr.dtype.kind not in "biuf" or not least <= arr.size <= _MAX_BINS:
        raise InputError(f"counts must be a 1-D real array of {least} to {_MAX_BINS} bins, "
                         f"found shape {arr.shape} dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(out).all() or (out < 0).any():
        raise InputError("counts must be finite and non-negative, found a negative or non-finite count")
    return out


def _levels(name: str, value: object, least: int, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not least <= value <= most:
        raise InputError(f"{name} must be an integer in [{least}, {most}], found {value!r}")
    return int(value)


def ort_search(counts: object, num_quantized_bins: int = 128) -> int:
    """Half-width ``i`` of ONNX Runtime's entropy window on its signed histogram ``counts``.

    The range is ``(edges[n//2 - i], edges[min(n//2 + i + 1, n)])`` of that histogram,
    clipped to the observed min and max.
    """
    arr = _counts(counts, 1)
    nq = _levels("num_quantized_bins", num_quantized_bins, 1, arr.size)
    return int(_ort_search(arr, nq))


def mxnet_search(counts: object, num_quantized_bins: int = 255) -> int:
    """Half-width ``i`` of MXNet's best window on its odd-length signed histogram; threshold ``edges[n//2 + i + 1]``."""
    arr = _counts(counts, 1)
    if arr.size % 2 == 0:
        raise InputError(f"MXNet's histogram has an odd bin count (0 at a bin centre), found {arr.size}")
    nq = _levels("num_quantized_bins", num_quantized_bins, 1, arr.size)
    return int(_mxnet_search(arr, nq))


def ncnn_search(counts: object, levels: int = 128) -> int:
    """Threshold bin ``t`` of ncnn's search on its |x| histogram; threshold ``(t + 0.5) * amax / n``."""
    arr = _counts(counts, 3)
    lv = _levels("levels", levels, 2, arr.size - 1)
    total = arr.sum()
    if not total > 0:
        raise InputError(f"counts are all zero ({arr.size} bins); expected at least one non-empty bin")
    return int(_ncnn_search(arr / total, lv))


# -- the registered methods ------------------------------------------------------------
def _ort_range(hist: StreamingHistogram, num_bins: int = 128, num_quantized_bins: int = 128) -> tuple[float, float]:
    """ONNX Runtime's (lo, hi): the best window's edges clipped to the observed min and max."""
    i = ort_search(signed_layout(hist, num_bins), num_quantized_bins)
    edges = hist.amax * (2.0 * np.arange(num_bins + 1) / num_bins - 1.0)
    lo, hi = edges[num_bins // 2 - i], edges[min(num_bins // 2 + i + 1, num_bins)]
    return max(float(lo), hist.min or 0.0), min(float(hi), hist.max or 0.0)


def _mxnet_levels(hist: StreamingHistogram, num_quantized_bins: int) -> int:
    return 2 * num_quantized_bins + 1 if (hist.min or 0.0) >= 0.0 else num_quantized_bins


def _mxnet_range(hist: StreamingHistogram, num_bins: int = 8001, num_quantized_bins: int = 255) -> tuple[float, float]:
    """MXNet's range: (-T, T), or (0, T) with 511 levels for a never-negative tensor."""
    t = kl_mxnet(hist, num_bins, num_quantized_bins)
    return (0.0 if (hist.min or 0.0) >= 0.0 else -t), t


@register("kl-onnxruntime", fit=_ort_range, bounds={"num_bins": (2, _MAX_BINS), "num_quantized_bins": (1, _MAX_BINS)},
          auto_candidate=False)
def kl_onnxruntime(hist: StreamingHistogram, num_bins: int = 128, num_quantized_bins: int = 128) -> float:
    """ONNX Runtime's entropy calibration (1.32), defaults 128 bins / 128 levels as ORT's."""
    if num_quantized_bins > num_bins:
        raise InputError(f"num_quantized_bins must be at most num_bins ({num_bins}), found {num_quantized_bins}")
    lo, hi = _ort_range(hist, num_bins, num_quantized_bins)
    return max(-lo, hi)


@register("kl-mxnet", fit=_mxnet_range, bounds={"num_bins": (3, _MAX_BINS), "num_quantized_bins": (1, _MAX_BINS)},
          auto_candidate=False)
def kl_mxnet(hist: StreamingHistogram, num_bins: int = 8001, num_quantized_bins: int = 255) -> float:
    """MXNet's entropy calibration (8001 signed bins, 255 levels; 511 for a never-negative tensor)."""
    nq = _mxnet_levels(hist, num_quantized_bins)
    if nq > num_bins:
        raise InputError(f"num_quantized_bins must be at most num_bins ({num_bins}) here, found {nq} levels")
    i = mxnet_search(signed_layout(hist, num_bins), nq)
    return float(hist.amax * (2.0 * (num_bins // 2 + i + 1) / num_bins - 1.0))


@register("kl-ncnn", bounds={"num_bins": (3, _MAX_BINS), "levels": (2, _MAX_BINS)}, auto_candidate=False)
def kl_ncnn(hist: StreamingHistogram, num_bins: int = 2048, levels: int = 128) -> float:
    """ncnn2table's KL calibration (2048 bins of |x|, zeros left out, threshold at a bin centre)."""
    if levels >= num_bins:
        raise InputError(f"levels must be below num_bins ({num_bins}), found {levels}")
    t = ncnn_search(abs_layout(hist, num_bins), levels)
    return (t + 0.5) * hist.amax / num_bins
