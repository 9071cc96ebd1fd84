"""`file_state`: the exact calibration state of one input file, whole or put together from shards.

`edgecal calibrate` folds the states of its files one at a time; `edgecal.dask` builds
them on workers and merges them in a tree. Both get each file's state here, so the
tensor names (`edgecal.arrays.tensor_name` with ``numbered_by_folder``) and the
sample counts are the same whoever builds it: every array of a file is one sample.

A large file can be binned in shards by several workers: `shard_histograms` bins
one shard of the values of every array of the file, and `state_of_shards` adds the
shards of each array into one histogram, registered as one array. The histogram is
a function of the multiset of values alone, so the state equals `file_state`'s.

>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp(); path = os.path.join(d, "conv1.npy"); np.save(path, np.arange(-8.0, 8.0))
>>> whole = file_state(path, "key", bins=16)
>>> shards = [shard_histograms(path, i, 3, bins=16) for i in range(3)]
>>> state_of_shards(shards, "key", bins=16) == whole, whole.names(), whole.samples("conv1")
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

Shards = list[tuple[str, StreamingHistogram]]


def file_state(path: str | os.PathLike[str], key: str, bins: int) -> Calibrator:
    """Every array of one file in a fresh calibrator (so a bad file leaves no trace), ``key`` recorded as consumed."""
    part = Calibrator(bins)
    for array in arrays_in(path, numbered_by_folder=True):
        part.observe_chunks(array.name, array.chunks(reuse=True))
    part.consumed.add(key)
    return part


def shard_bounds(array: ArrayFile, shard: int, shards: int) -> tuple[int, int]:
    """Values ``[start, stop)`` of shard ``shard`` of ``shards``: whole samples (first-axis rows) when rows allow."""
    if not 0 <= shard < shards:
        raise InputError(f"shard {shard} of {shards}; expected 0 <= shard < shards")
    values = math.prod(array.shape)
    rows = array.shape[0] if array.shape and not array.header.fortran else values
    per_row = values // rows if rows else 1
    return shard * rows // shards * per_row, (shard + 1) * rows // shards * per_row


def shard_histograms(path: str | os.PathLike[str], shard: int, shards: int, bins: int) -> Shards:
    """(tensor, histogram of its shard ``shard`` of ``shards``) for every array of one file, in file order.

    A shard may be empty (fewer rows than shards); its histogram then has no values.
    """
    out: Shards = []
    for array in arrays_in(path, numbered_by_folder=True):
        hist = StreamingHistogram(bins)
        start, stop = shard_bounds(array, shard, shards)
        for chunk in array.chunks(start=start, stop=stop, reuse=True):
            hist.update(chunk)
        out.append((array.name, hist))
    return out


def state_of_shards(parts: Sequence[Shards], key: str, bins: int) -> Calibrator:
    """The state `file_state` gives, from the `shard_histograms` of every shard of the file, in shard order."""
    if not parts or any([n for n, _ in p] != [n for n, _ in parts[0]] for p in parts):
        raise InputError(f"shards of {key!r} list different tensors; expected every shard of one file")
    part = Calibrator(bins)
    for i, (name, hist) in enumerate(parts[0]):
        total = hist.copy()
        for other in parts[1:]:
            total.merge(other[i][1])
        part.observe_histogram(name, total)
    part.consumed.add(key)
    return part
