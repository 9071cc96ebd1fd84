"""The Numba kernels behind `StreamingHistogram`: binning values on the lattice and folding bins.

Private and dumb (arrays and scalars in, counters updated in place); `edgecal.histogram`
validates, allocates and decides which kernel runs. Each has a naive twin in
tests/naive.py and a fast == naive test (tests/test_histogram.py, tests/test_speed_paths.py).
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel


@kernel
def _fold(counts, k, log2b, top_pos, top_neg):
    """Merge groups of 2**k adjacent bins of each sign of ``counts`` (positive, then negative), in place.

    Only the first ``top_pos`` positive and ``top_neg`` negative bins may be non-zero
    (the caller knows them from min and max): a young histogram grows its range many
    times, and each growth then costs the occupied bins only, not all of them.
    """
    nb = 1 << log2b
    k = min(k, log2b)
    for half in range(2):
        base = half * nb
        for j in range(top_pos if half == 0 else top_neg):
            c = counts[base + j]
            counts[base + j] = 0
            counts[base + (j >> k)] += c


@kernel
def _max_finite_abs(x, start, stop):
    """Largest finite |x[k]| for start <= k < stop (0.0 if none), as float64."""
    m = 0.0
    for k in range(start, stop):
        a = abs(np.float64(x[k]))
        if a > m and a != np.inf:
            m = a
    return m


@kernel
def _fill(x, start, lane, special, ext, scale, rng, nb):
    """Bin ``x[start:]`` until a finite value at or above ``rng`` needs the range to grow.

    Returns the index of that value, or ``x.size``. ``scale = nb / rng`` and ``rng``
    have x's float type (exact: both are powers of two). lane holds positive bins
    [0, nb) and negative bins [nb, 2nb); the caller guarantees it cannot overflow.
    special = [nan, +inf, -inf, zeros]; ext = [min, max] of finite values. The hot
    path handles four ordinary values per step and calls nothing, so LLVM keeps its
    state in registers. Zeros land in bin 0 like tiny positive values, without a
    branch, and are moved to their own counter at the end.
    """
    zeros = 0
    vmin = ext[0]
    vmax = ext[1]
    n = x.size
    i = start
    while i < n:
        if i + 4 <= n:
            ordinary = True
            for k in range(4):
                if not abs(x[i + k]) < rng:
                    ordinary = False
            if ordinary:
                for k in range(4):
                    v = x[i + k]
                    a = abs(v)
                    lane[int(a * scale) + nb * int(v < 0)] += 1
                    zeros += int(a == 0)
                    vmin = min(vmin, v)
                    vmax = max(vmax, v)
                i += 4
                continue
        v = x[i]
        a = abs(v)
        if a < rng:
            lane[int(a * scale) + nb * int(v < 0)] += 1
            zeros += int(a == 0)
            vmin = min(vmin, v)
            vmax = max(vmax, v)
        elif a != a:
            special[0] += 1
        elif a == np.inf:
            special[1 + int(v < 0)] += 1
        else:
            break
        i += 1
    lane[0] -= zeros
    special[3] += zeros
    # a zero extreme is reported as +0.0 whatever mix of 0.0 and -0.0 was seen
    ext[0] = vmin if vmin != 0 else 0.0
    ext[1] = vmax if vmax != 0 else 0.0
    return i


@kernel
def _take_back_zeros(values, lane):
    """Subtract from bins 0..7 the zeros of ``values`` that `_fill_blocks` put there (the zero at k in bin k % 8).

    Eight named counters, one per bin, so that LLVM keeps them in one vector register.
    """
    whole = values.size - values.size % 8
    z0 = z1 = z2 = z3 = z4 = z5 = z6 = z7 = np.int32(0)
    for base in range(0, whole, 8):
        z0 += np.int32(values[base] == 0)
        z1 += np.int32(values[base + 1] == 0)
        z2 += np.int32(values[base + 2] == 0)
        z3 += np.int32(values[base + 3] == 0)
        z4 += np.int32(values[base + 4] == 0)
        z5 += np.int32(values[base + 5] == 0)
        z6 += np.int32(values[base + 6] == 0)
        z7 += np.int32(values[base + 7] == 0)
    for k in range(whole, values.size):
        lane[k - whole] -= np.uint32(values[k] == 0)
    lane[0] -= z0
    lane[1] -= z1
    lane[2] -= z2
    lane[3] -= z3
    lane[4] -= z4
    lane[5] -= z5
    lane[6] -= z6
    lane[7] -= z7


@kernel
def _fill_blocks(x, start, lane, special, ext, scale, rng, block):
    """`_fill` for float32 ``x``, ``block`` values at a time; same arguments and result (nb = lane.size // 2 >= 4).

    Per block, one branch-free pass over the values checks that none needs the
    per-value path (NaN, Inf, range growth: ``not |v| < rng``), counts zeros, reduces
    min and max as order-preserving integer keys of the float bits (float min/max
    form a serial chain LLVM cannot vectorise), and stores each value's bin in a
    small unsigned buffer; a second loop scatters the buffer into ``lane``. A block
    holding anything unusual, and the last partial block, go through `_fill`.
    """
    nb = lane.size // 2
    bits = x.view(np.int32)
    slots = np.empty(block, np.uint32)
    key = np.empty(2, np.int32)
    i = start
    n = x.size
    while n - i >= block:
        values = x[i : i + block]  # slices and range(len): no wrap-around code for negative indices
        keys = bits[i : i + block]
        ordinary = True
        zeros = np.int32(0)
        kmin = np.int32(0x7FFFFFFF)
        kmax = np.int32(-0x80000000)
        for k in range(values.size):
            v = values[k]
            a = abs(v)
            ordinary &= a < rng
            safe = a if a < rng else np.float32(0.0)  # keeps the int conversion defined; the block is redone anyway
            slot = np.uint32(np.int32(safe * scale)) + (np.uint32(nb) & np.uint32(-np.int32(v < 0)))
            # a zero goes to bin k % 8 (taken back out below): post-ReLU data is half zeros, and
            # one hot bin would chain every increment on the one before
            slots[k] = slot if a != 0 else np.uint32(k & 7)
            zeros += np.int32(a == 0)
            b = keys[k]
            kb = b ^ ((b >> 31) & np.int32(0x7FFFFFFF))  # float order as int order (-0.0 just below 0.0)
            kmin = min(kmin, kb)
            kmax = max(kmax, kb)
        if not ordinary:
            stop = _fill(x[: i + block], i, lane, special, ext, scale, rng, nb)
            if stop < i + block:
                return stop
            i = stop
            continue
        for k in range(slots.size):
            lane[slots[k]] += 1
        if zeros:
            _take_back_zeros(values, lane)
        special[3] += zeros
        key[0] = kmin ^ ((kmin >> 31) & np.int32(0x7FFFFFFF))
        key[1] = kmax ^ ((kmax >> 31) & np.int32(0x7FFFFFFF))
        ends = key.view(np.float32)
        lo = min(ext[0], np.float64(ends[0]))
        hi = max(ext[1], np.float64(ends[1]))
        ext[0] = lo if lo != 0 else 0.0  # a zero extreme is +0.0, as in `_fill`
        ext[1] = hi if hi != 0 else 0.0
        i += block
    return _fill(x, i, lane, special, ext, scale, rng, nb)
