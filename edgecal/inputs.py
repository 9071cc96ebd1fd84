"""Arrays from `.npy` / `.npz` files and folders, streamed in bounded memory.

A `.npy` file is one tensor named by the file's stem; a `.npz` archive holds one
tensor per key; a folder contributes every `.npy`/`.npz` below it, in sorted order.
Data is read in chunks straight from the file (or from the zip member), never as
one whole array, and headers are checked before any data is read, so a bad file is
reported with its name, what was found and what was expected.

>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp(); np.save(os.path.join(d, "conv1.npy"), np.arange(6.0).reshape(2, 3))
>>> [(a.name, a.shape, str(a.dtype)) for a in arrays_in(os.path.join(d, "conv1.npy"))]
[('conv1', (2, 3), 'float64')]
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import numpy as np

from .errors import InputError

SUFFIXES = (".npy", ".npz")
CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class ArrayFile:
    """One tensor's array inside an input file, described by its header."""

    name: str
    path: Path
    member: str | None
    shape: tuple[int, ...]
    dtype: np.dtype
    opener: Callable[[], IO[bytes]]

    @property
    def where(self) -> str:
        return f"{self.path}" + (f"[{self.member}]" if self.member else "")

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The array's values in file order, as 1-D arrays of at most ``chunk_bytes``."""
        step = max(1, chunk_bytes // self.dtype.itemsize) * self.dtype.itemsize
        left = self.nbytes
        with self.opener() as fh:
            _read_header(fh, self.where)
            while left > 0:
                data = fh.read(min(step, left))
                if len(data) < min(step, left):
                    raise InputError(
                        f"{self.where}: truncated, found {self.nbytes - left + len(data)} bytes of data, "
                        f"expected {self.nbytes}"
                    )
                left -= len(data)
                yield np.frombuffer(data, dtype=self.dtype)


def input_key(path: Path) -> str:
    """Identity of an input file for resuming: path, size and modification time."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def expand_inputs(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Files named and `.npy`/`.npz` files inside folders named, sorted, without repeats."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in SUFFIXES and f.is_file())
            if not found:
                raise InputError(f"{p}: folder holds no .npy or .npz files")
            out.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in SUFFIXES:
                raise InputError(f"{p}: unsupported input {p.suffix or '(no suffix)'}; expected .npy, .npz or a folder")
            out.append(p)
        elif p.exists():
            raise InputError(f"{p}: not a regular file or folder")
        else:
            raise InputError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    return [f for f in out if not (f.resolve() in seen or seen.add(f.resolve()))]


def arrays_in(path: str | os.PathLike[str]) -> list[ArrayFile]:
    """Every array of one input file, headers checked; no data read yet."""
    p = Path(path)
    if p.suffix.lower() == ".npz":
        return _npz_arrays(p)
    return [_described(p.stem, p, None, lambda: _open_file(p))]


def _open_file(p: Path) -> IO[bytes]:
    try:
        return open(p, "rb")
    except OSError as err:
        raise InputError(f"{p}: cannot read ({err.strerror or err})") from err


def _npz_arrays(p: Path) -> list[ArrayFile]:
    try:
        with zipfile.ZipFile(p) as zf:
            members = [m for m in zf.namelist() if m.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{p}: not a readable .npz archive ({err})") from err
    if not members:
        raise InputError(f"{p}: archive holds no arrays; expected at least one .npy member")

    def opener(member: str) -> Callable[[], IO[bytes]]:
        def open_member() -> IO[bytes]:
            try:
                zf = zipfile.ZipFile(p)
                return _ZipMember(zf, zf.open(member))
            except (zipfile.BadZipFile, OSError, KeyError) as err:
                raise InputError(f"{p}[{member}]: cannot read ({err})") from err

        return open_member

    return [_described(m[: -len(".npy")], p, m, opener(m)) for m in members]


class _ZipMember:
    """A zip member stream that also closes its archive."""

    def __init__(self, zf: zipfile.ZipFile, fh: IO[bytes]) -> None:
        self._zf, self._fh = zf, fh

    def read(self, n: int = -1) -> bytes:
        try:
            return self._fh.read(n)
        except (zipfile.BadZipFile, OSError, EOFError) as err:  # CRC or deflate failure
            raise InputError(f"{self._zf.filename}: damaged archive ({err})") from err

    def __enter__(self) -> _ZipMember:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()
        self._zf.close()


def _described(name: str, path: Path, member: str | None, opener: Callable[[], IO[bytes]]) -> ArrayFile:
    where = f"{path}" + (f"[{member}]" if member else "")
    with opener() as fh:
        shape, dtype = _read_header(fh, where)
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
        raise InputError(f"{where}: dtype {dtype} is not real numbers; expected a float or integer array")
    if math.prod(shape) == 0:
        raise InputError(f"{where}: tensor {name!r} is empty (shape {shape}); expected at least one value")
    return ArrayFile(name, path, member, shape, dtype, opener)


def _read_header(fh: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except InputError:
        raise
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise InputError(f"{where}: not a NumPy array file ({err}); expected .npy data") from err
    return tuple(shape), np.dtype(dtype)
