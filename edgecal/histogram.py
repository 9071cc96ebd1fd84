"""`StreamingHistogram`: the bounded-memory, exactly mergeable histogram of one tensor.

Values land on a power-of-two lattice: ``bins`` bins per sign over ``[0, R)`` with
``R = 2**e``. A value at or above ``R`` makes the range grow to the smallest power of
two above it, and groups of ``2**k`` adjacent bins merge into one. Because bin edges
are always multiples of ``R / bins`` and both are powers of two, every value sits in
the bin it would have had if the final range had been known in advance: the
histogram is a pure function of the multiset of values fed, whatever the batching
or order, and two histograms merge exactly.

Exact zeros, NaN, +Inf and -Inf never enter the bins; each has its own counter.
``count``, ``min`` and ``max`` are exact.

Bins count in one uint32 array (64 KiB at 8192 bins per sign), so hundreds of
tensors stream in little memory. Counts stay exact past 2**32: before a batch could
overflow it (the values held in it plus the batch would exceed 2**32 - 1), the
uint32 array is added into an int64 one and cleared. Only a tensor that has seen
over four billion values pays for the int64 array.

>>> import numpy as np
>>> h = StreamingHistogram(bins=16)
>>> h.update(np.array([0.0, 0.5, -3.0, np.nan, np.inf], dtype=np.float32))
>>> h.range, h.count, h.zeros, h.nans, h.posinf, h.min, h.max
(4.0, 5, 1, 1, 1, -3.0, 0.5)
>>> h.abs_counts().nonzero()[0].tolist()   # 0.5 in bin 2, |-3.0| in bin 12 (width 0.25)
[2, 12]
"""

from __future__ import annotations

import math
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .errors import InputError, StateError
from .names import DEFAULT_BINS
from .lattice_kernels import _fill, _fill_blocks, _fold, _max_finite_abs

_LANE_MAX = (1 << 32) - 1  # what a uint32 bin holds; tests lower it to reach the spill path with little data
_MAX_LOG2_BINS = 24
_CHUNK = 1 << 16  # elements per conversion buffer for dtypes the kernels do not take
_BLOCK = 2048  # values per block of the float32 path (_fill_blocks)
_LOOKAHEAD = 4096
_PER_THREAD = 1 << 18  # values each thread of `update(threads=...)` gets at least: smaller slices cost more than they save  # values a range growth looks at: one growth covers a young histogram's first batch

# The kernels take float32 and float64; other real dtypes are converted chunk-wise
# (exactly: every integer up to 2**24 is a float32, up to 2**53 a float64).
_CONVERT: dict[np.dtype, np.dtype] = {
    **{np.dtype(t): np.dtype(np.float32) for t in ("float16", "bool", "int8", "uint8", "int16", "uint16")},
    **{np.dtype(t): np.dtype(np.float64) for t in ("int32", "uint32", "int64", "uint64")},
}
_NATIVE: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))


def check_bins(bins: object) -> int:
    """``bins`` as an int if it is a power of two in [2, 2**24]; `InputError` otherwise."""
    if not isinstance(bins, (int, np.integer)) or bins < 2 or bins & (bins - 1) or bins > 1 << _MAX_LOG2_BINS:
        raise InputError(f"bins must be a power of two in [2, 2**{_MAX_LOG2_BINS}], found {bins!r}")
    return int(bins)


def min_exponent(log2_bins: int) -> int:
    """Smallest lattice exponent: keeps ``bins / R`` a finite float64 (R = 2**e)."""
    return log2_bins - 1022




class StreamingHistogram:
    """Bounded-memory histogram of one tensor's values on a power-of-two lattice.

    Parameters
    ----------
    bins : int
        Bins per sign; a power of two (default 8192, as every Calibrator).
    """

    SCHEMA = 1
    _MAGIC = b"EHST"
    _HEAD = struct.Struct("<4sHHIiQQQQQdd")

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        self._bins = check_bins(bins)
        self._log2b = self._bins.bit_length() - 1
        self._lane = np.zeros(2 * self._bins, dtype=np.uint32)
        self._wide: np.ndarray | None = None  # int64 counts spilled from _lane, made at the first spill
        self._held = 0  # an upper bound on the sum of _lane: spill before it could pass _LANE_MAX
        self._special = np.zeros(4, dtype=np.int64)  # nan, +inf, -inf, zeros
        self._bounds: tuple[Any, ...] = (None, None)  # (exponent, float type, scale, range) of the last fill
        self._ext = np.array([np.inf, -np.inf])
        self._exp = min_exponent(self._log2b)
        self._count = 0

    # -- filling ---------------------------------------------------------------------
    def update(self, x: Any, threads: int = 1) -> None:
        """Add every value of ``x`` (any real dtype, shape and memory layout).

        With ``threads`` > 1, a contiguous float batch of at least ``2**18`` values per
        thread is split: each extra thread fills a histogram of its own (the kernels
        release the GIL) that is then merged in, exactly, so the result is the same.
        """
        if type(threads) is not int or threads < 1:
            raise InputError(f"threads must be a positive integer, found {threads!r}")
        arr = x if type(x) is np.ndarray else np.asarray(x)
        dt = arr.dtype
        if dt == _NATIVE[0] and arr.size and arr.flags.c_contiguous and not self._exact_in(dt):
            self._start_range(arr.reshape(-1))
        if dt in _NATIVE and arr.flags.c_contiguous and self._exact_in(dt):
            parts = min(threads, arr.size // _PER_THREAD)
            self._ingest_parallel(arr.reshape(-1), parts) if parts > 1 else self._ingest(arr.reshape(-1))
        else:
            target = dt if dt in _NATIVE else _CONVERT.get(dt)
            if target is None:
                raise InputError(f"expected a real-valued array (float or integer), found dtype {dt}")
            if not self._exact_in(target):
                target = np.dtype(np.float64)
            for chunk in _chunks(arr, target) if arr.size else ():
                self._ingest(chunk)
        self._count += arr.size

    def _start_range(self, flat: np.ndarray) -> None:
        """While no value is binned, move the range straight to the one the first values need.

        Growth from an empty histogram folds nothing, so this is what `_ingest` would do at
        its first growth; done before binning, it lets the first float32 batch skip the
        conversion to float64 (the starting range is too small for float32 arithmetic).
        """
        if self._occupied() != (0, 0):
            return
        biggest = _max_finite_abs(flat, 0, min(flat.size, _LOOKAHEAD))
        if biggest > 0.0:
            self._exp = max(self._exp, math.frexp(biggest)[1])

    def _ingest_parallel(self, flat: np.ndarray, parts: int) -> None:
        """`_ingest` with the last ``parts - 1`` slices of ``flat`` filled by pool threads into fresh histograms."""
        slices = np.array_split(flat, parts)
        helpers = [StreamingHistogram(self._bins) for _ in slices[1:]]
        for h in helpers:
            h._exp = self._exp  # empty: any range at or above self's merges back to self's bins
        pool = _pool(parts - 1)
        futures = [pool.submit(h._ingest, part) for h, part in zip(helpers, slices[1:])]
        self._ingest(slices[0])
        for h, future in zip(helpers, futures):
            future.result()
            self._absorb(h)

    def _exact_in(self, dt: np.dtype) -> bool:
        """Whether ``bins / R`` is a normal number of type ``dt`` (float64 always is)."""
        return dt == _NATIVE[1] or -126 <= self._log2b - self._exp <= 127

    def _ingest(self, flat: np.ndarray) -> None:
        """Bin a 1-D float32/float64 array in pieces the uint32 bins can take."""
        step = max(_LANE_MAX // 2, 1)
        if flat.size <= step and self._held + flat.size <= _LANE_MAX:  # nearly always: no slicing
            self._held += flat.size
            self._ingest_piece(flat)
            return
        for start in range(0, flat.size, step):
            piece = flat[start : start + step]
            if self._held + piece.size > _LANE_MAX:
                self._spill()
            self._held += piece.size
            self._ingest_piece(piece)

    def _ingest_piece(self, flat: np.ndarray) -> None:
        """Bin a 1-D float32/float64 array, growing the range whenever a value needs it."""
        typ = flat.dtype.type
        i = 0
        while True:
            scale, rng = self._scale_range(typ)
            if typ is np.float32 and self._bins >= 4:
                i = _fill_blocks(flat, i, self._lane, self._special, self._ext, scale, rng, _BLOCK)
            else:
                i = _fill(flat, i, self._lane, self._special, self._ext, scale, rng, self._bins)
            if i >= flat.size:
                return
            # the smallest power of two above every |x| of the next few values, x[i] included: growing
            # once to it gives the same bins as growing value by value (the lattice is exact)
            grown = math.frexp(_max_finite_abs(flat, i, min(i + _LOOKAHEAD, flat.size)))[1]
            self._fold_bins(grown - self._exp)
            self._exp = grown

    def _scale_range(self, typ: type) -> tuple[Any, Any]:
        """``bins / R`` and ``R`` as ``typ`` (R = inf where float32 cannot hold it), kept while the range stays."""
        if self._bounds[:2] != (self._exp, typ):
            rng = typ(self.range) if self._exp < 128 or typ is np.float64 else typ(np.inf)
            self._bounds = (self._exp, typ, typ(math.ldexp(1.0, self._log2b - self._exp)), rng)
        return self._bounds[2], self._bounds[3]

    def _fold_bins(self, k: int) -> None:
        tops = self._occupied()
        _fold(self._lane, k, self._log2b, *tops)
        if self._wide is not None:
            _fold(self._wide, k, self._log2b, *tops)

    def _occupied(self) -> tuple[int, int]:
        """How many leading positive and negative bins can be non-zero: up to the bins of max and -min."""
        width = self.bin_width
        return tuple(min(int(extreme / width) + 1, self._bins) if extreme > 0 else 0
                     for extreme in (float(self._ext[1]), -float(self._ext[0])))  # type: ignore[return-value]

    def _spill(self) -> None:
        """Move the uint32 counts into the int64 array (made now if needed), so the uint32 bins start empty."""
        if self._wide is None:
            self._wide = np.zeros(2 * self._bins, dtype=np.int64)
        self._wide += self._lane
        self._lane[:] = 0
        self._held = 0

    def _counts(self) -> np.ndarray:
        """Every bin as int64: positive bins, then negative ones."""
        counts = self._lane.astype(np.int64)
        return counts if self._wide is None else counts + self._wide

    def _set_counts(self, counts: np.ndarray) -> None:
        """Hold the int64 ``counts`` in the uint32 bins when their sum fits, else in the int64 array."""
        total = int(counts.sum())
        if total <= _LANE_MAX:
            self._lane[:] = counts
            self._wide, self._held = None, total
        else:
            self._lane[:] = 0
            self._wide, self._held = counts.astype(np.int64), 0

    def merge(self, other: StreamingHistogram) -> StreamingHistogram:
        """Add ``other``'s values to this histogram (exact); returns ``self``."""
        if not isinstance(other, StreamingHistogram):
            raise InputError(f"can only merge a StreamingHistogram, found {type(other).__name__}")
        if other._bins != self._bins:
            raise InputError(f"cannot merge histograms with {self._bins} and {other._bins} bins; expected equal bin counts")
        self._absorb(other)
        self._count += other._count
        return self

    def _absorb(self, other: StreamingHistogram) -> None:
        """Add ``other``'s bins, special counters and extremes (not its count) to this histogram's."""
        mine, theirs = self._counts(), other._counts()
        e = max(self._exp, other._exp)
        for h, counts in ((self, mine), (other, theirs)):
            if h._exp < e:
                _fold(counts, e - h._exp, self._log2b, *h._occupied())
        self._set_counts(mine + theirs)
        self._exp = e
        self._special += other._special
        self._ext[0] = min(self._ext[0], other._ext[0])
        self._ext[1] = max(self._ext[1], other._ext[1])

    def copy(self) -> StreamingHistogram:
        """An independent copy."""
        return StreamingHistogram.from_bytes(self.to_bytes())

    # -- reading ---------------------------------------------------------------------
    @property
    def bins(self) -> int:
        """Bins per sign."""
        return self._bins

    @property
    def exponent(self) -> int:
        """The lattice exponent e (range R = 2**e)."""
        return self._exp

    @property
    def range(self) -> float:
        """R: every finite non-zero |x| seen is below it."""
        return math.ldexp(1.0, self._exp) if self._exp < 1024 else math.inf

    @property
    def bin_width(self) -> float:
        """Width R / bins of every bin."""
        return math.ldexp(1.0, self._exp - self._log2b)

    def positive_counts(self) -> np.ndarray:
        """int64 counts of the positive values, bin j holding [j*w, (j+1)*w)."""
        return self._counts()[: self._bins]

    def negative_counts(self) -> np.ndarray:
        """int64 counts of |x| for the negative values, same bins as `positive_counts`."""
        return self._counts()[self._bins :]

    def abs_counts(self) -> np.ndarray:
        """int64 histogram of |x| over the non-zero finite values (length ``bins``)."""
        counts = self._counts()
        return counts[: self._bins] + counts[self._bins :]

    def occupied_abs_counts(self) -> np.ndarray:
        """`abs_counts` up to and including the last non-empty bin (empty when there is none).

        Its right edge is the first bin edge above max |x|: the range an exact-range
        histogram would cover, at lattice resolution.
        """
        counts = self.abs_counts()
        nonzero = np.flatnonzero(counts)
        return counts[: nonzero[-1] + 1] if nonzero.size else counts[:0]

    @property
    def nbytes(self) -> int:
        """Bytes the counters take: the uint32 bins, the int64 ones once spilled into, the scalars."""
        wide = 0 if self._wide is None else self._wide.nbytes
        return self._lane.nbytes + wide + self._special.nbytes + self._ext.nbytes

    @property
    def count(self) -> int:
        """Every value fed, whatever it was."""
        return self._count

    @property
    def zeros(self) -> int:
        return int(self._special[3])

    @property
    def nans(self) -> int:
        return int(self._special[0])

    @property
    def posinf(self) -> int:
        return int(self._special[1])

    @property
    def neginf(self) -> int:
        return int(self._special[2])

    @property
    def finite(self) -> int:
        """Number of finite values (zeros included)."""
        return self._count - int(self._special[:3].sum())

    @property
    def min(self) -> float | None:
        """Smallest finite value, None before any."""
        return float(self._ext[0]) if self.finite else None

    @property
    def max(self) -> float | None:
        """Largest finite value, None before any."""
        return float(self._ext[1]) if self.finite else None

    @property
    def amax(self) -> float:
        """max |x| over the finite values (0.0 before any)."""
        return max(abs(self._ext[0]), abs(self._ext[1])) if self.finite else 0.0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamingHistogram):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __repr__(self) -> str:
        return (
            f"StreamingHistogram(bins={self._bins}, range={self.range!r}, count={self._count}, "
            f"zeros={self.zeros}, nans={self.nans}, posinf={self.posinf}, neginf={self.neginf}, "
            f"min={self.min!r}, max={self.max!r})"
        )

    # -- serialization -----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Versioned, CRC-32-checked binary form (little-endian)."""
        head = self._HEAD.pack(
            self._MAGIC, self.SCHEMA, 0, self._bins, self._exp, self._count, self.zeros,
            self.nans, self.posinf, self.neginf, self._ext[0], self._ext[1],
        )
        body = head + self._counts().astype("<i8").tobytes()
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> StreamingHistogram:
        """Rebuild a histogram from `to_bytes` output; raises `StateError` on any damage."""
        data = bytes(data)
        size = cls._HEAD.size
        if data[:4] != cls._MAGIC[: len(data)] or not data:
            raise StateError(f"not an edgecal histogram: starts {data[:4]!r}, expected magic {cls._MAGIC!r}")
        if len(data) < size + 4:
            raise StateError(f"histogram is truncated: {len(data)} bytes, expected at least {size + 4}")
        (_, schema, _, bins, exp, count, zeros, nans, posinf, neginf, vmin, vmax) = cls._HEAD.unpack_from(data)
        if schema != cls.SCHEMA:
            raise StateError(f"histogram schema {schema} is not supported; expected schema {cls.SCHEMA}")
        if bins < 2 or bins & (bins - 1) or bins > 1 << _MAX_LOG2_BINS:
            raise StateError(f"histogram header is corrupt: bins={bins}, expected a power of two")
        want = size + 16 * bins + 4
        if len(data) != want:
            raise StateError(f"histogram is truncated or padded: found {len(data)} bytes, expected {want}")
        if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
            raise StateError("histogram checksum mismatch: the data is corrupt")
        h = cls(bins)
        log2b = h._log2b
        if not min_exponent(log2b) <= exp <= 1024:
            raise StateError(f"histogram header is corrupt: exponent {exp} outside [{min_exponent(log2b)}, 1024]")
        counts = np.frombuffer(data, dtype="<i8", count=2 * bins, offset=size)
        _check_content(counts, (count, zeros, nans, posinf, neginf), (vmin, vmax), math.ldexp(1.0, exp - log2b))
        h._set_counts(counts.astype(np.int64))
        h._special[:] = (nans, posinf, neginf, zeros)
        h._ext[:] = (vmin, vmax)
        h._exp = exp
        h._count = count
        return h


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads, made on first use and kept for the process."""
    with _POOL_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="edgecal-fill")
        return _POOLS[workers]


def _chunks(arr: np.ndarray, dtype: np.dtype):
    """Yield contiguous 1-D pieces of ``arr`` as ``dtype``, at most _CHUNK elements each.

    Element order is irrelevant to a histogram, so the iteration follows memory order
    and no copy of the whole array is ever made.
    """
    it = np.nditer(  # type: ignore[call-overload]  # numpy's stubs lack the one-operand list forms
        arr, flags=["external_loop", "buffered", "zerosize_ok"], op_flags=[["readonly"]],
        op_dtypes=[dtype], casting="unsafe", order="K", buffersize=_CHUNK,
    )
    for chunk in it:
        yield np.ascontiguousarray(chunk)


_INT64_MAX = (1 << 63) - 1


def _check_content(counts: np.ndarray, totals: tuple[int, ...], ext: tuple[float, float], width: float) -> None:
    """`StateError` unless a decoded histogram is one `update` could have built (its CRC may be valid)."""
    count, zeros = totals[0], totals[1]
    if any(t > _INT64_MAX for t in totals) or (counts < 0).any() or counts.sum(dtype=np.float64) > 2.0**62:
        raise StateError("histogram counts are negative or beyond int64: the data is corrupt")
    if int(counts.sum()) + sum(totals[1:]) != count:
        raise StateError("histogram counts do not add up to its total: the data is corrupt")
    vmin, vmax = ext
    if int(counts.sum()) + zeros == 0:
        if not (vmin == math.inf and vmax == -math.inf):
            raise StateError(f"histogram holds no finite values but min {vmin!r}, max {vmax!r}; expected none")
        return
    bins = counts.size // 2
    if not (-bins * width < vmin <= vmax < bins * width):
        raise StateError(f"histogram min {vmin!r}, max {vmax!r} outside its range ±{bins * width!r} or "
                         "min > max: the data is corrupt")
    if zeros and not vmin <= 0.0 <= vmax:
        raise StateError(f"histogram holds zeros but min {vmin!r}, max {vmax!r}: the data is corrupt")
    for half, extreme in ((counts[:bins], vmax), (counts[bins:], -vmin)):
        nonzero = np.flatnonzero(half)
        top = int(extreme / width) if extreme > 0 else -1
        if (nonzero[-1] if nonzero.size else -1) != top:
            raise StateError(f"histogram bins do not end at the bin of its extreme {extreme!r}: the data is corrupt")
