"""`StagingBuffer`: small arrays of many tensors gathered, then binned one tensor at a time.

A histogram of 8192 bins per sign takes 64 KiB of counters; a few hundred of them
outgrow the CPU caches, so binning one small array (1K values) into each tensor in
turn misses the cache on nearly every value. The buffer copies small arrays into one
block of bounded size instead, and when the block is full (or a histogram is about to
be read) it *flushes*: each histogram receives all of its staged values in one
`StreamingHistogram.update`, one cache-cold pass per tensor per flush instead of per
array. With ``threads`` > 1 the flush spreads the tensors over a pool of threads
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

from .histogram import StreamingHistogram, _pool

STAGE_MAX_VALUES = 1 << 14  # bigger arrays go straight in: one pass over them already amortises the cold bins
_ALIGN = 8  # every staged array starts at a multiple of its item size, so views of the block stay aligned
_STAGED: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))

Group = tuple[StreamingHistogram, list[np.ndarray]]


class StagingBuffer:
    """A block of at most ``capacity`` bytes holding small float arrays until their histograms take them.

    Parameters
    ----------
    capacity : int
        Bytes of the block (rounded down to a multiple of 8); 0 stages nothing. The
        block is allocated at the first `stage`, never grows, and is kept for reuse.
    max_values : int
        Arrays of more values are not staged (`takes` says False).
    """

    def __init__(self, capacity: int, max_values: int = STAGE_MAX_VALUES) -> None:
        self.capacity = capacity - capacity % _ALIGN
        self.max_values = max_values
        self._views: tuple[np.ndarray, np.ndarray] | None = None  # the block as float32 and as float64
        self._used = 0
        self._segments: list[tuple[StreamingHistogram, int, int, np.dtype]] = []  # (hist, start byte, bytes, dtype)

    def takes(self, arr: np.ndarray) -> bool:
        """Whether `stage` accepts ``arr``: a small, non-empty, C-contiguous float32/float64 array."""
        return (arr.dtype in _STAGED and 0 < arr.size <= self.max_values and arr.nbytes <= self.capacity
                and arr.flags.c_contiguous)

    def stage(self, hist: StreamingHistogram, arr: np.ndarray, threads: int = 1) -> None:
        """Copy the values of ``arr`` (one `takes` accepts) for ``hist``, flushing first when they do not fit."""
        nbytes = arr.nbytes
        start = self._used
        if start + nbytes > self.capacity:
            self.flush(threads)
            start = 0
        view = (self._views or self._allocate())[arr.itemsize == 8]
        first = start // arr.itemsize
        view[first : first + arr.size] = arr if arr.ndim == 1 else arr.ravel()  # ravel: a view, as arr is C-contiguous
        self._segments.append((hist, start, nbytes, arr.dtype))
        self._used = start + ((nbytes + _ALIGN - 1) & -_ALIGN)

    def _allocate(self) -> tuple[np.ndarray, np.ndarray]:
        block = np.empty(self.capacity // 8, dtype=np.float64)
        self._views = (block.view(np.float32), block)
        return self._views

    def flush(self, threads: int = 1) -> None:
        """Bin every staged value into its histogram (all of a tensor's values in one update) and empty the block."""
        if not self._segments:
            return
        groups = self._groups()
        self._segments, self._used = [], 0
        shares = _shares(groups, threads) if threads > 1 and len(groups) > 1 else [groups]
        if len(shares) == 1:
            _fill(shares[0], threads)
            return
        pool = _pool(len(shares) - 1)
        futures = [pool.submit(_fill, share) for share in shares[1:]]
        _fill(shares[0])
        for future in futures:
            future.result()

    def _groups(self) -> list[Group]:
        """Every staged histogram with its values as one array per dtype, in order of first staging."""
        assert self._views is not None
        parts: dict[tuple[int, np.dtype], Group] = {}
        for hist, start, nbytes, dtype in self._segments:
            first = start // dtype.itemsize
            view = self._views[dtype.itemsize == 8][first : first + nbytes // dtype.itemsize]
            parts.setdefault((id(hist), dtype), (hist, []))[1].append(view)
        return [(hist, [arrays[0] if len(arrays) == 1 else np.concatenate(arrays)]) for hist, arrays in parts.values()]

    @property
    def staged_values(self) -> int:
        """Values waiting in the block."""
        return sum(nbytes // dtype.itemsize for _, _, nbytes, dtype in self._segments)

    @property
    def nbytes(self) -> int:
        """Bytes the block takes (0 until the first `stage`)."""
        return 0 if self._views is None else self._views[1].nbytes

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles carry the configuration only; the owner flushes before it is copied."""
        if self._segments:
            raise RuntimeError("a StagingBuffer holding values cannot be copied; flush it first")
        return {"capacity": self.capacity, "max_values": self.max_values}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["capacity"], state["max_values"])  # type: ignore[misc]


def _fill(groups: list[Group], threads: int = 1) -> None:
    """Feed every histogram of ``groups`` its arrays (``threads`` for each update)."""
    for hist, arrays in groups:
        for arr in arrays:
            hist.update(arr, threads)


def _shares(groups: list[Group], parts: int) -> list[list[Group]]:
    """``groups`` cut into at most ``parts`` runs of about equal numbers of values (each histogram in one run)."""
    sizes = np.cumsum([sum(a.size for a in arrays) for _, arrays in groups])
    cuts = np.searchsorted(sizes, sizes[-1] * np.arange(1, parts) / parts, side="right")
    bounds = [0, *sorted(set(int(c) for c in cuts) - {0, len(groups)}), len(groups)]
    return [groups[a:b] for a, b in zip(bounds, bounds[1:])]
