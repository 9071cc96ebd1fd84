"""`file_state`: the exact calibration state of one input file, whole or put together from shares.

`edgecal calibrate` folds the states of its files one at a time; `edgecal.dask` builds
them on workers and merges them in a tree. Both get each file's state here, so the
tensor names (`edgecal.arrays.tensor_name` with ``numbered_by_folder``) and the
sample counts are the same whoever builds it: every array of a file is one sample.

A large file can be binned in shares by several workers: `share_histograms` bins
one share of the values of every array of the file, and `state_of_shares` adds the
shares of each array into one histogram, registered as one array. The histogram is
a function of the multiset of values alone, so the state equals `file_state`'s.

>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp(); path = os.path.join(d, "conv1.npy"); np.save(path, np.arange(-8.0, 8.0))
>>> whole = file_state(path, "key", bins=16)
>>> shares = [share_histograms(path, i, 3, bins=16) for i in range(3)]
>>> state_of_shares(shares, "key", bins=16) == whole, whole.names(), whole.samples("conv1")
(True, ['conv1'], 1)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .arrays import ArrayFile, arrays_in
from .calibrator import Calibrator
from .errors import InputError
from .histogram import StreamingHistogram

Shares = list[tuple[str, StreamingHistogram]]


def file_state(path: str | os.PathLike[str], key: str, bins: int) -> Calibrator:
    """Every array of one file in a fresh calibrator (so a bad file leaves no trace), ``key`` recorded as consumed."""
    part = Calibrator(bins)
    for array in arrays_in(path, numbered_by_folder=True):
        part.observe_chunks(array.name, array.chunks())
    part.consumed.add(key)
    return part


def share_bounds(array: ArrayFile, share: int, shares: int) -> tuple[int, int]:
    """Values ``[start, stop)`` of share ``share`` of ``shares``: whole samples (first-axis rows) when rows allow."""
    if not 0 <= share < shares:
        raise InputError(f"share {share} of {shares}; expected 0 <= share < shares")
    values = math.prod(array.shape)
    rows = array.shape[0] if array.shape and not array.header.fortran else values
    per_row = values // rows if rows else 1
    return share * rows // shares * per_row, (share + 1) * rows // shares * per_row


def share_histograms(path: str | os.PathLike[str], share: int, shares: int, bins: int) -> Shares:
    """(tensor, histogram of its share ``share`` of ``shares``) for every array of one file, in file order.

    A share may be empty (fewer rows than shares); its histogram then has no values.
    """
    out: Shares = []
    for array in arrays_in(path, numbered_by_folder=True):
        hist = StreamingHistogram(bins)
        start, stop = share_bounds(array, share, shares)
        for chunk in array.chunks(start=start, stop=stop):
            hist.update(chunk)
        out.append((array.name, hist))
    return out


def state_of_shares(parts: Sequence[Shares], key: str, bins: int) -> Calibrator:
    """The state `file_state` gives, from the `share_histograms` of every share of the file, in share order."""
    if not parts or any([n for n, _ in p] != [n for n, _ in parts[0]] for p in parts):
        raise InputError(f"shares of {key!r} list different tensors; expected every share of one file")
    part = Calibrator(bins)
    for i, (name, hist) in enumerate(parts[0]):
        total = hist.copy()
        for other in parts[1:]:
            total.merge(other[i][1])
        part.observe_histogram(name, total)
    part.consumed.add(key)
    return part
