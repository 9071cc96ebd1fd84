"""ONNX constant tensors (initializers, Constant values) as numpy arrays, read defensively.

A model file is untrusted input. Every tensor's declared size is checked against
its data before anything is decoded, and against a byte budget before anything is
allocated. External data (``data_location = EXTERNAL``) is resolved by edgecal, never
by ``onnx``: the file must lie inside the model's own folder (a relative path with
no ``..``, no symlink leading out of the folder, a regular file), and ``offset`` /
``length`` must lie inside it and match the tensor's size. A model held in memory,
with no folder, cannot use external data.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from ..errors import InputError, MalformedModelError, UnsafeModelError


#: ONNX data type -> (numpy dtype, name, typed field holding the values when not raw)
DTYPES = {
    1: (np.float32, "float", "float_data"), 2: (np.uint8, "uint8", "int32_data"), 3: (np.int8, "int8", "int32_data"),
    4: (np.uint16, "uint16", "int32_data"), 5: (np.int16, "int16", "int32_data"),
    6: (np.int32, "int32", "int32_data"), 7: (np.int64, "int64", "int64_data"), 9: (np.bool_, "bool", "int32_data"),
    10: (np.float16, "float16", "int32_data"), 11: (np.float64, "double", "double_data"),
    12: (np.uint32, "uint32", "uint64_data"), 13: (np.uint64, "uint64", "uint64_data"),
}


def _dtype_and_size(t: Any, where: str, max_bytes: int) -> tuple[Any, str, str, int]:
    if t.data_type not in DTYPES:
        raise InputError(f"{where}: data type {t.data_type} is not supported; expected a real number or bool type "
                         f"({', '.join(name for _, name, _ in DTYPES.values())})")
    dtype, name, field = DTYPES[t.data_type]
    dims = list(t.dims)
    if any(d < 0 for d in dims):
        raise MalformedModelError(f"{where}: negative dimension in shape {dims}; expected sizes >= 0")
    count = math.prod(dims)
    if count * np.dtype(dtype).itemsize > max_bytes:
        raise InputError(f"{where}: shape {dims} of {name} needs {count * np.dtype(dtype).itemsize} bytes; "
                         f"expected at most {max_bytes} per tensor (the model memory budget)")
    return dtype, name, field, count


def tensor_array(t: Any, folder: Path | None, max_bytes: int) -> np.ndarray:
    """The values of ``onnx.TensorProto`` ``t``; `InputError` naming the tensor for anything malformed."""
    where = f"tensor {t.name!r}"
    if t.HasField("segment"):
        raise InputError(f"{where}: segmented tensors are not supported; expected the whole tensor")
    dtype, name, field, count = _dtype_and_size(t, where, max_bytes)
    nbytes = count * np.dtype(dtype).itemsize
    if t.data_location == 1:  # EXTERNAL
        raw = read_external(t, folder, nbytes, where)
    elif t.HasField("raw_data"):
        raw = t.raw_data
        if len(raw) != nbytes:
            raise MalformedModelError(f"{where}: {len(raw)} bytes of raw data for shape {list(t.dims)} of {name}; "
                             f"expected {nbytes}")
    else:
        values = getattr(t, field)
        if len(values) != count:
            raise MalformedModelError(f"{where}: {len(values)} values in {field} for shape {list(t.dims)}; "
                                      f"expected {count}")
        if t.data_type == 10:  # float16 bit patterns stored in int32_data
            return np.asarray(values, np.uint16).view(np.float16).reshape(tuple(t.dims))
        return np.asarray(values).astype(dtype).reshape(tuple(t.dims))
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(tuple(t.dims))


def _external_fields(t: Any, where: str) -> tuple[str, int, int | None]:
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise MalformedModelError(f"{where}: external data offset / length {info.get('offset')!r} / "
                                  f"{info.get('length')!r}; "
                         "expected integers") from None
    if offset < 0 or (length is not None and length < 0):
        raise MalformedModelError(f"{where}: external data offset {offset} / length {length}; expected values >= 0")
    return location, offset, length


def external_path(location: str, folder: Path | None, where: str) -> Path:
    """The file of an external-data ``location``, inside ``folder``; `InputError` for anything that leaves it."""
    if folder is None:
        raise UnsafeModelError(f"{where}: external data {location!r} but the model was not read from a file; "
                         "expected a model file whose folder holds the data")
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if (not location or PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute()
            or PureWindowsPath(location).drive or ".." in parts or "\x00" in location):
        raise UnsafeModelError(f"{where}: external data location {location!r} is not a plain relative path; "
                         "expected a file inside the model's folder (no absolute path, no '..')")
    base = folder.resolve()
    path = (base / Path(*parts)).resolve()
    if not path.is_relative_to(base):
        raise UnsafeModelError(f"{where}: external data {location!r} leads out of the model's folder {base} "
                               "(a symlink); "
                         "expected a file inside it")
    return path


def read_external(t: Any, folder: Path | None, nbytes: int, where: str) -> bytes:
    """``nbytes`` of external data of tensor ``t``, checked as the module docstring says."""
    location, offset, length = _external_fields(t, where)
    path = external_path(location, folder, where)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        raise MalformedModelError(f"{where}: cannot open external data {location!r}: {err.strerror or err}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise MalformedModelError(f"{where}: external data {location!r} is not a regular file; expected a data file")
    with os.fdopen(fd, "rb") as f:
        size = info.st_size
        want = size - offset if length is None else length
        if offset > size or offset + want > size:
            raise MalformedModelError(f"{where}: external data {location!r} offset {offset} length {want} lies beyond "
                                      f"its {size} bytes; expected a range inside the file")
        if want != nbytes:
            raise MalformedModelError(f"{where}: external data {location!r} holds {want} bytes for shape "
                                      f"{list(t.dims)}; expected {nbytes}")
        f.seek(offset)
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise MalformedModelError(f"{where}: external data {location!r} ended after {len(data)} bytes; "
                                  f"expected {nbytes}")
    return data
