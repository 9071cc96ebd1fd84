"""`StagingBuffer`: small arrays of many tensors gathered, then binned one tensor at a time.

A histogram of 8192 bins per sign takes 64 KiB of counters; a few hundred of them
outgrow the CPU caches, so binning one small array (1K values) into each tensor in
turn misses the cache on nearly every value. The buffer copies small arrays into one
block of bounded size instead, and when the block is full (or a histogram is about to
be read) it *flushes*: a kernel gathers the staged values tensor by tensor (through a
scratch array of at most a quarter of the block, plus one staged array), and each
histogram receives its values in one `StreamingHistogram.update`: one cache-cold pass
per tensor per flush instead of one per array. With ``threads`` > 1 the flush spreads the tensors over a pool of threads
(the kernels release the GIL); each histogram is filled by one thread only.

A histogram is a function of the multiset of values fed to it, whatever the batching
or order (see `edgecal.histogram`), so staging changes no bit of any histogram.

>>> import numpy as np
>>> from edgecal.histogram import StreamingHistogram
>>> a, b, direct = StreamingHistogram(16), StreamingHistogram(16), StreamingHistogram(16)
>>> stage = StagingBuffer(1 << 10)
>>> for k in range(3):
...     x = np.full(4, k - 0.5, np.float32)
...     stage.stage(a, x); stage.stage(b, -x); direct.update(x)
>>> a.count, stage.staged_values
(0, 24)
>>> stage.flush()
>>> a.count, a == direct, stage.staged_values
(12, True, 0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._jit import kernel
from .errors import InputError
from .histogram import StreamingHistogram, _pool

# Bigger arrays go straight in: one pass over 2K values already touches most cache lines of the histogram
# it needs, and the two copies of staging then cost more than they save (scripts/bench.py --only observe).
STAGE_MAX_VALUES = 1 << 10
# Arrays are staged only while the block holds this many of them per tensor: with fewer, each flush gives
# every histogram about one array, the cold pass staging should share is not shared, and the copies are waste.
ROUNDS_PER_FLUSH = 2
# The block is sized to hold this many arrays per tensor (of the size being staged), up to its capacity: a
# model of few tensors takes a few KiB, and 4 rounds of 300 tensors of 1K values take 4.8 MiB.
ROUNDS_WANTED = 4
# ...and never smaller than this: a flush costs tens of microseconds whatever it holds, which a block of
# at least 64 arrays of 1K values spreads to under a microsecond per array.
MIN_BLOCK_BYTES = 256 << 10
_ALIGN = 8  # every staged array starts on a float64 boundary, so both views of the block reach it
_STAGED: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))

Group = tuple[StreamingHistogram, np.ndarray]


class StagingBuffer:
    """A block of at most ``capacity`` bytes holding small float arrays until their histograms take them.

    Parameters
    ----------
    capacity : int
        Bytes the block may take (rounded down to a multiple of 8); 0 stages nothing. The
        block is allocated at the first `stage`, as large as `ROUNDS_WANTED` arrays per
        tensor need (at least `MIN_BLOCK_BYTES`, at most ``capacity``), grows at a flush when more tensors take turns,
        and is kept for reuse.
    max_values : int
        Arrays of more values are not staged (`takes` says False).
    """

    def __init__(self, capacity: int, max_values: int = STAGE_MAX_VALUES) -> None:
        if type(capacity) is not int or capacity < 0:
            raise InputError(f"stage_bytes must be a non-negative integer, found {capacity!r}")
        self.capacity = capacity - capacity % _ALIGN
        self.max_values = max_values
        self._views: tuple[np.ndarray, np.ndarray] | None = None  # the block as float32 and as float64
        self._size = 0  # bytes of the block
        self._reset()

    def _reset(self) -> None:
        """Forget every staged array (float32 ones at index 0, float64 ones at 1)."""
        self._used = 0
        self._segments: tuple[list[int], list[int]] = ([], [])  # (slot, first value, values) of each array, flat
        self._slots: tuple[dict[int, int], dict[int, int]] = ({}, {})  # id(histogram) -> slot
        self._owners: tuple[list[StreamingHistogram], list[StreamingHistogram]] = ([], [])  # slot -> histogram

    def takes(self, arr: np.ndarray, tensors: int = 1) -> bool:
        """Whether `stage` accepts ``arr``: a small, non-empty, C-contiguous float32/float64 array, of which
        the block holds `ROUNDS_PER_FLUSH` per tensor (``tensors``: how many take turns)."""
        return (arr.dtype in _STAGED and 0 < arr.size <= self.max_values
                and arr.nbytes * max(ROUNDS_PER_FLUSH * tensors, 1) <= self.capacity and arr.flags.c_contiguous)

    def stage(self, hist: StreamingHistogram, arr: np.ndarray, threads: int = 1, tensors: int = 1) -> None:
        """Copy the values of ``arr`` (one `takes` accepts) for ``hist``, flushing first when they do not fit.

        ``tensors`` (how many take turns) sizes the block when it is made or grown.
        """
        nbytes = arr.nbytes
        if self._used + nbytes > self._size:
            self.flush(threads)
            want = min(self.capacity, max(MIN_BLOCK_BYTES, -(-ROUNDS_WANTED * max(tensors, 1) * nbytes // _ALIGN) * _ALIGN))
            if want > self._size:
                self._allocate(want)
        wide = arr.itemsize == 8
        first = self._used // arr.itemsize
        assert self._views is not None
        view = self._views[wide]
        view[first : first + arr.size] = arr if arr.ndim == 1 else arr.ravel()  # ravel: a view, as arr is C-contiguous
        self._used += (nbytes + _ALIGN - 1) & -_ALIGN
        slots = self._slots[wide]
        slot = slots.get(id(hist))
        if slot is None:  # the owners list keeps the histogram, and so its id, alive until the flush
            slot = slots[id(hist)] = len(slots)
            self._owners[wide].append(hist)
        self._segments[wide].extend((slot, first, arr.size))

    def _allocate(self, size: int) -> None:
        """A new, empty block of ``size`` bytes (a multiple of 8); the old one is dropped."""
        block = np.empty(size // 8, dtype=np.float64)
        self._views = (block.view(np.float32), block)
        self._size = size

    def flush(self, threads: int = 1) -> None:
        """Bin every staged value into its histogram, tensor by tensor, and empty the block."""
        if not self._used:
            return
        segments, owners = self._segments, self._owners
        self._reset()
        assert self._views is not None
        for wide in (0, 1):
            if segments[wide]:
                table = np.array(segments[wide], dtype=np.int64).reshape(-1, 3)
                self._flush_kind(self._views[wide], table, owners[wide], threads)

    def _flush_kind(self, view: np.ndarray, table: np.ndarray, owners: list[StreamingHistogram], threads: int) -> None:
        """Gather the arrays of ``table`` (rows: slot, first value, values) by slot, a scratch-full at a time, and bin them."""
        table = table[np.argsort(table[:, 0], kind="stable")]
        offsets = np.cumsum(table[:, 2]) - table[:, 2]  # where each array lands in the gathered order
        chunk = offsets // max(self._size // 4 // view.itemsize, 1)
        cuts = [0, *(np.flatnonzero(np.diff(chunk)) + 1).tolist(), len(table)]
        scratch = np.empty(int(np.add.reduceat(table[:, 2], cuts[:-1]).max()), dtype=view.dtype)
        for a, b in zip(cuts, cuts[1:]):
            part = table[a:b]
            out = scratch[: int(part[:, 2].sum())]
            _gather(view, np.ascontiguousarray(part[:, 1]), np.ascontiguousarray(part[:, 2]), out)
            _fill_shared(_groups(out, part, owners), threads)

    @property
    def staged_values(self) -> int:
        """Values waiting in the block."""
        return sum(sum(segments[2::3]) for segments in self._segments)

    @property
    def nbytes(self) -> int:
        """Bytes the block takes (0 until the first `stage`)."""
        return 0 if self._views is None else self._views[1].nbytes

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles carry the configuration only; the owner flushes before it is copied."""
        if self._used:
            raise RuntimeError("a StagingBuffer holding values cannot be copied; flush it first")
        return {"capacity": self.capacity, "max_values": self.max_values}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["capacity"], state["max_values"])  # type: ignore[misc]


@kernel
def _gather(src, firsts, counts, dst):
    """Copy ``src[firsts[k] : firsts[k] + counts[k]]`` for every k, one after another, into ``dst``."""
    j = 0
    for k in range(firsts.size):
        f, c = firsts[k], counts[k]
        dst[j : j + c] = src[f : f + c]  # slices, not an element loop: Numba then copies them vectorised
        j += c


def _groups(out: np.ndarray, table: np.ndarray, owners: list[StreamingHistogram]) -> list[Group]:
    """(histogram, its values) for every run of one slot in ``table`` (sorted by slot), gathered in ``out``."""
    slots = table[:, 0]
    heads = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]])
    ends = np.cumsum(table[:, 2])
    bounds = [0, *ends[heads[1:] - 1].tolist(), int(ends[-1])]
    return [(owners[s], out[lo:hi]) for s, lo, hi in zip(slots[heads].tolist(), bounds, bounds[1:])]


def _fill_shared(groups: list[Group], threads: int) -> None:
    """Fill every histogram of ``groups``: with ``threads`` > 1, runs of them in pool threads, each by one thread."""
    shares = _shares(groups, threads) if threads > 1 and len(groups) > 1 else [groups]
    if len(shares) == 1:
        _fill(shares[0], threads)
        return
    pool = _pool(len(shares) - 1)
    futures = [pool.submit(_fill, share) for share in shares[1:]]
    _fill(shares[0])
    for future in futures:
        future.result()


def _fill(groups: list[Group], threads: int = 1) -> None:
    """Feed every histogram of ``groups`` its values (``threads`` for each update)."""
    for hist, values in groups:
        hist.update(values, threads)


def _shares(groups: list[Group], parts: int) -> list[list[Group]]:
    """``groups`` cut into at most ``parts`` runs of about equal numbers of values (each histogram in one run)."""
    sizes = np.cumsum([values.size for _, values in groups])
    cuts = np.searchsorted(sizes, sizes[-1] * np.arange(1, parts) / parts, side="right")
    bounds = [0, *sorted(set(int(c) for c in cuts) - {0, len(groups)}), len(groups)]
    return [groups[a:b] for a, b in zip(bounds, bounds[1:])]
