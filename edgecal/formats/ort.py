"""ONNX Runtime calibration tables (``.flatbuffers``) for the TensorRT execution provider.

This is the file the provider reads through its ``trt_int8_calibration_table_name``
option, a FlatBuffer of the schema (from ONNX Runtime's quantization tools)::

    namespace CalTableFlatBuffers;
    table KeyValue { key:string (key); value:string; }
    table TrtTable { dict:[KeyValue]; }
    root_type TrtTable;

with one ``KeyValue`` per tensor: the tensor name, and its amax (the dynamic range
max |x|) as a decimal string (Python ``repr``, so it reads back exactly). ONNX
Runtime 1.32's own writer stores max(highest, lowest) there, which is wrong for a
tensor whose negative side dominates; edgecal stores the entry's amax. edgecal sorts
the dict by the UTF-8 bytes of the key, as the ``(key)`` attribute requires for
binary search (ONNX Runtime's writer leaves it in descending order; the provider
only iterates, and the reader here accepts any order). Only symmetric int8 entries
can be written; ``tflite``-scheme entries are converted by
`TensorCalibration.as_symmetric` (amax kept, zero point dropped).

The buffer is encoded here without the ``flatbuffers`` package, front to back (all
integers little-endian, every object 4-byte aligned, uoffsets pointing forward)::

    0   u32 root offset (12)
    4   TrtTable vtable: u16 6, u16 8, u16 4; 2 bytes padding
    12  TrtTable: i32 soffset to its vtable (8), u32 offset to the dict vector
    20  KeyValue vtable, shared by all: u16 8, u16 12, u16 4, u16 8
    28  dict vector: u32 n, then n u32 offsets to the KeyValue tables
    ..  n KeyValue tables: i32 soffset to the shared vtable, u32 key, u32 value
    ..  strings, in dict order, key then value: u32 length, bytes, NUL, padding to 4

The reader accepts any valid buffer of the schema (such as those the
``flatbuffers`` builder makes) and checks every offset against the buffer size, so
damage gives `StateError`; a FlatBuffer has no checksum, so damage inside a
string's bytes can go unnoticed. Entries read get method ``"ort-table"``.

>>> from edgecal.table import CalibrationTable, TensorCalibration
>>> t = CalibrationTable([TensorCalibration.symmetric("x", 2.54)])
>>> read_ort(write_ort(t))["x"].amax
2.54
"""

from __future__ import annotations

import math
import re
import struct

from ..errors import InputError, StateError
from ..table import CalibrationTable, TensorCalibration, refuse_lut
from .ecal import check_float32
from .registry import Format, register_format

METHOD = "ort-table"
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_KV_AT = 20  # where the shared KeyValue vtable sits
_HEAD = struct.pack("<IHHHHiIHHHH", 12, 6, 8, 4, 0, 8, 12, 8, 12, 4, 8)


def _string(data: bytes) -> bytes:
    """A FlatBuffers string: u32 length, bytes, NUL, zero padding to a multiple of 4."""
    raw = struct.pack("<I", len(data)) + data + b"\0"
    return raw + b"\0" * (-len(raw) % 4)


def write_ort(table: CalibrationTable) -> bytes:
    """Encode ``table`` as an ONNX Runtime ``TrtTable`` FlatBuffer (layout above).

    Raises
    ------
    InputError
        If an entry is not symmetric int8, or its amax or amax/127 is not a normal
        float32 (`edgecal.formats.ecal.check_float32`).
    """
    refuse_lut(table, "an ONNX Runtime table")
    pairs = []
    for entry in table.values():
        entry = entry.as_symmetric() if entry.scheme == "tflite" else entry  # rule: TensorCalibration.as_symmetric
        if entry.scheme != "symmetric":
            raise InputError(f"tensor {entry.name!r}: scheme {entry.scheme!r}; ORT tables hold symmetric int8 only")
        check_float32(entry)  # the TensorRT EP parses the decimal into a float32
        pairs.append((entry.name.encode(), repr(float(entry.amax)).encode()))
    pairs.sort()
    n = len(pairs)
    tables_at = len(_HEAD) + 4 + 4 * n
    strings_at = tables_at + 12 * n
    vector, tables, strings = [struct.pack("<I", n)], [], []  # type: list[bytes], list[bytes], list[bytes]
    for j, (key, value) in enumerate(pairs):
        here = tables_at + 12 * j
        vector.append(struct.pack("<I", here - (len(_HEAD) + 4 + 4 * j)))
        key_at = strings_at + sum(len(s) for s in strings)
        strings.append(_string(key))
        value_at = key_at + len(strings[-1])
        strings.append(_string(value))
        tables.append(struct.pack("<iII", here - _KV_AT, key_at - (here + 4), value_at - (here + 8)))
    return b"".join([_HEAD, *vector, *tables, *strings])


def _u(data: bytes, fmt: str, pos: int, what: str) -> int:
    size = struct.calcsize(fmt)
    if pos < 0 or pos + size > len(data):
        raise StateError(
            f"ORT calibration table: {what} at byte {pos} lies outside the {len(data)}-byte buffer; "
            "expected a complete FlatBuffer"
        )
    return struct.unpack_from(fmt, data, pos)[0]


def _field(data: bytes, table: int, slot: int, what: str) -> int | None:
    """Absolute position of the object field ``slot`` of ``table`` points to, or None if absent."""
    vtable = table - _u(data, "<i", table, f"{what} table")
    vsize = _u(data, "<H", vtable, f"{what} vtable")
    if 4 + 2 * slot + 2 > vsize:
        return None
    offset = _u(data, "<H", vtable + 4 + 2 * slot, f"{what} vtable")
    if offset == 0:
        return None
    return table + offset + _u(data, "<I", table + offset, what)


def _text(data: bytes, pos: int, what: str) -> str:
    size = _u(data, "<I", pos, what)
    if _u(data, "<B", pos + 4 + size, f"{what} terminator") != 0:
        raise StateError(f"ORT calibration table: {what} at byte {pos} has no NUL terminator; expected a string")
    try:
        return data[pos + 4 : pos + 4 + size].decode()
    except UnicodeDecodeError as err:
        raise StateError(f"ORT calibration table: {what} at byte {pos} is not UTF-8; expected a string") from err


def _entry(data: bytes, table: int, j: int) -> TensorCalibration:
    key_at, value_at = _field(data, table, 0, f"dict[{j}].key"), _field(data, table, 1, f"dict[{j}].value")
    if key_at is None or value_at is None:
        raise StateError(f"ORT calibration table: dict[{j}] lacks its key or value; expected both")
    name, value = _text(data, key_at, f"dict[{j}].key"), _text(data, value_at, f"dict[{j}].value")
    amax = float(value) if _DECIMAL.fullmatch(value) else math.nan
    if not (0.0 < amax < math.inf) or not name or "\n" in name:
        raise StateError(
            f"ORT calibration table: dict[{j}] is {name!r}: {value!r}; expected a one-line name and a decimal amax > 0"
        )
    return TensorCalibration.symmetric(name, amax, method=METHOD)


def read_ort(data: bytes) -> CalibrationTable:
    """Decode an ONNX Runtime ``TrtTable`` FlatBuffer; `StateError` on damage that breaks its structure."""
    data = bytes(data)
    root = _u(data, "<I", 0, "root offset")
    if root < 4:  # it points past itself; an all-zero file must not read as an empty table
        raise StateError(f"ORT calibration table: root offset is {root}; expected at least 4")
    vector = _field(data, root, 0, "dict")
    if vector is None:  # a TrtTable without a dict: no tensors
        return CalibrationTable([])
    entries: dict[str, TensorCalibration] = {}
    for j in range(_u(data, "<I", vector, "dict length")):
        at = vector + 4 + 4 * j
        entry = _entry(data, at + _u(data, "<I", at, f"dict[{j}] offset"), j)
        if entry.name in entries:
            raise StateError(f"ORT calibration table: tensor {entry.name!r} appears twice in dict; expected once")
        entries[entry.name] = entry
    return CalibrationTable(entries.values())


register_format(
    Format(
        name="ort",
        suffixes=(".flatbuffers",),
        write=write_ort,
        read=read_ort,
        description="ONNX Runtime TensorRT EP calibration table (FlatBuffers): amax per tensor",
    )
)
