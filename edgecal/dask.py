"""Calibration on a Dask cluster: one exact state per input file on the workers, merged in a tree.

`calibrate_files` sends each file (or each shard of a file, with ``shards``) to a
worker, which builds that file's state with `edgecal.file_state` exactly as
``edgecal calibrate`` does on one machine. Adjacent states are then merged pairwise
on the workers, in file order, until one is left. The merge is exact and
associative (histograms meet on their common power-of-two lattice, whatever range
each file saw) and keeps first-seen tensor order, so the state and the table equal a
single-machine run bit for bit.

What crosses the wire is small and checked: paths (absolute, so numbered files take
their folder's name on every worker) and consumed-input keys (computed here, as one
machine would) go out; states come back in the versioned, CRC-checked state format
(`Calibrator.to_bytes`) and shards in the histogram format, never pickled Numba
objects. A worker's error comes back as one `InputError` line naming the file.

Needs the ``dask`` extra (``dask[distributed]``). Workers must run the same
edgecal and see the files at the same paths (a shared file system).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .arrays import expand_inputs
from .calibrator import DEFAULT_BINS, Calibrator
from .errors import EdgecalError, InputError
from .file_state import file_state, shard_histograms, state_of_shards
from .histogram import StreamingHistogram, check_bins
from .identity import file_identity
from .methods import DEFAULT_METHOD, get_method
from .model.graph import MissingExtraError
from .table import SCHEMES, CalibrationTable

__all__ = ["INSTALL", "build_state", "calibrate_files", "connect"]

INSTALL = "install it with: pip install -e '.[dask]'"


def import_distributed() -> Any:
    """The ``distributed`` module, or `MissingExtraError` naming the extra to install."""
    try:
        import distributed
    except ImportError as err:
        raise MissingExtraError(f"running on Dask needs dask[distributed] ({err.name} is missing); {INSTALL}") from err
    return distributed


@contextlib.contextmanager
def connect(address: str, timeout: float = 10.0) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``address`` (reached within ``timeout`` s), closed on exit.

    ``local`` or ``local:N`` starts a LocalCluster of N single-threaded worker
    processes (default: one per core) for the time of the block.
    """
    distributed = import_distributed()
    kind, colon, count = address.partition(":")
    if kind != "local":
        with _reached(address):
            client = distributed.Client(address, timeout=timeout)
        with client:
            yield client
        return
    if colon and not (count.isdigit() and int(count) > 0):
        raise InputError(f"--dask {address!r}: expected local, local:N with N >= 1 workers, or a scheduler address")
    workers = int(count) if colon else os.cpu_count() or 1
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0",
                                  silence_logs=logging.CRITICAL) as cluster, distributed.Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _reached(address: str) -> Iterator[None]:
    try:
        yield
    except (OSError, TimeoutError) as err:
        raise InputError(f"cannot reach a Dask scheduler at {address!r} ({err}); expected a running scheduler "
                         "(`dask scheduler`) or local[:N]") from None


def calibrate_files(client: Any, paths: Sequence[str | os.PathLike[str]], method: str = DEFAULT_METHOD,
                    scheme: str = "symmetric", bins: int = DEFAULT_BINS, shards: int = 1,
                    **params: Any) -> tuple[Calibrator, CalibrationTable]:
    """(state, table) of the `.npy`/`.npz` files and folders in ``paths``, built on ``client``'s workers.

    Equals ``edgecal calibrate PATHS -m METHOD --scheme SCHEME --bins BINS``: same
    state bytes, same table. ``shards`` > 1 splits every file into that many runs of
    whole samples, each binned by its own task (for a few large files and many workers).
    """
    get_method(method).resolve(params)  # a bad method, parameter or scheme is refused before any work
    if scheme not in SCHEMES:
        raise InputError(f"unknown scheme {scheme!r}; known schemes: {', '.join(SCHEMES)}")
    state = build_state(client, expand_inputs(list(paths)), bins=bins, shards=shards)
    return state, state.compute(method, scheme=scheme, **params)


def build_state(client: Any, files: Sequence[str | os.PathLike[str]], bins: int = DEFAULT_BINS,
                shards: int = 1) -> Calibrator:
    """The state of ``files`` (in this order), each file's state built on a worker, all merged there in a tree.

    ``client`` needs ``submit(fn, *args, pure=False)`` and ``cancel(futures)``, as a
    ``distributed.Client`` has; futures passed as arguments stand for their results.
    """
    check_bins(bins)  # here, not on every worker
    if type(shards) is not int or shards < 1:
        raise InputError(f"shards must be an integer >= 1, found {shards!r}")
    if not files:
        raise InputError("no input files; expected at least one .npy or .npz file")
    jobs = [(str(Path(f).absolute()), file_identity(f)) for f in files]
    futures = [_file_future(client, path, key, bins, shards) for path, key in jobs]
    try:
        return Calibrator.from_bytes(_tree(client, futures).result())
    finally:
        client.cancel(futures)


def _file_future(client: Any, path: str, key: str, bins: int, shards: int) -> Any:
    """A future of one file's state bytes: one task, or one per shard and one putting them together."""
    if shards == 1:
        return client.submit(_state_task, path, key, bins, pure=False)
    parts = [client.submit(_shard_task, path, i, shards, bins, pure=False) for i in range(shards)]
    return client.submit(_shards_task, path, key, bins, *parts, pure=False)


def _tree(client: Any, futures: list[Any]) -> Any:
    """Adjacent futures merged pairwise, level by level, in order, until one is left."""
    while len(futures) > 1:
        merged = [client.submit(_merge_task, a, b, pure=False) for a, b in zip(futures[::2], futures[1::2])]
        futures = merged + futures[len(merged) * 2:]
    return futures[0]


# -- worker side ---------------------------------------------------------------------------
@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """Errors on a worker as one `InputError` line that names the file."""
    try:
        yield
    except (EdgecalError, OSError) as err:
        text = " ".join(str(err).split())
        raise InputError(text if path in text else f"{path}: {text}") from None


def _state_task(path: str, key: str, bins: int) -> bytes:
    with _naming(path):
        return file_state(path, key, bins).to_bytes()


def _shard_task(path: str, shard: int, shards: int, bins: int) -> list[tuple[str, bytes]]:
    with _naming(path):
        return [(name, hist.to_bytes()) for name, hist in shard_histograms(path, shard, shards, bins)]


def _shards_task(path: str, key: str, bins: int, *parts: list[tuple[str, bytes]]) -> bytes:
    with _naming(path):
        decoded = [[(name, StreamingHistogram.from_bytes(raw)) for name, raw in part] for part in parts]
        return state_of_shards(decoded, key, bins).to_bytes()


def _merge_task(left: bytes, right: bytes) -> bytes:
    return Calibrator.from_bytes(left).merge(Calibrator.from_bytes(right)).to_bytes()
