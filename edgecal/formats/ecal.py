"""``.ecal``: the compact binary table, for flash and for the serial link.

It holds every field of a table, so the round trip is exact, and it ends in a
CRC-32, so a truncated or corrupted table is rejected instead of being trusted.
Firmware can parse it in place, with no heap: the fields it needs come first in
each entry, at fixed offsets, and each entry starts with its own length.

Layout, version 1
-----------------
Integers and floats are little-endian; ``f32``/``f64`` are IEEE-754 binary32 and
binary64. Fields are packed with no padding, so most of them are NOT aligned:
read them with ``memcpy`` (or byte by byte), never through a cast pointer.

Header, at offset 0:

======  ====  ========  ==================================================
offset  size  type      field
======  ====  ========  ==================================================
0       4     char[4]   magic ``ECAL`` (bytes 45 43 41 4C)
4       2     u16       format version: 1
6       2     u16       header size H in bytes: 16
8       4     u32       entry count N
12      4     u32       metadata length M in bytes
======  ====  ========  ==================================================

At offset H: metadata, M bytes of UTF-8 JSON: an object with the keys
``created`` (ISO 8601 string), ``edgecal_version`` (string) and ``model_hash``
(string, or null when unknown), and optionally ``provenance`` (an object, e.g. the
serial link's loss counters; absent when the table has none). Firmware can skip it.

At offset H + M: N entries, one after another. Offsets inside an entry, with K the
name length read at offset 22:

======  ====  ========  ==================================================
offset  size  type      field
======  ====  ========  ==================================================
0       2     u16       entry length L in bytes, these 2 bytes included
2       4     f32       scale, rounded to float32 (finite and > 0)
6       4     i32       zero point
10      1     u8        dtype code: 1 = int8, 2 = uint8
11      1     u8        scheme code: 1 = symmetric, 2 = tflite
                        (asymmetric int8, real = scale * (q - zero point),
                        any zero point in [-128, 127])
12      2     u16       flags: bit 0 (1) all_zero, bit 1 (2) constant,
                        bit 2 (4) nonfinite, bit 3 (8) fallback,
                        bit 4 (16) clipped_heavy; others 0
14      8     f64       amax, the threshold
22      1     u8        name length K in bytes, 1..255
23      K     bytes     tensor name, UTF-8, no NUL terminator
23+K    8     u64       samples: arrays observed
31+K    8     u64       count: values observed
39+K    8     u64       zeros
47+K    8     u64       nans
55+K    8     u64       posinf
63+K    8     u64       neginf
71+K    8     f64       min value seen (NaN when unknown)
79+K    8     f64       max value seen (NaN when unknown)
87+K    8     f64       scale, exact (the f32 at offset 2 is this, rounded)
95+K    2     u16       length J of the method JSON
97+K    J     bytes     UTF-8 JSON ``{"method": str, "params": {...}}``
======  ====  ========  ==================================================

A version-1 entry is L = 97 + K + J bytes; its flags are the bits above (a table
always lists them in that order). An entry with a codebook (``lut``: the levels of
nearest-level quantization, see `edgecal.methods.codebook`) appends, so that
readers that do not know it skip it by stepping L:

======  ====  ========  ==================================================
97+K+J  4     char[4]   tag ``LUT1`` (bytes 4C 55 54 31)
101+K+J 2     u16       level count C: a power of two, 2..256
103+K+J 8C    f64[C]    the levels, strictly ascending
======  ====  ========  ==================================================

and is then L = 103 + K + J + 8C bytes. Entries without a codebook end at the
JSON; appended bytes that do not start with the tag belong to a later revision
and are skipped. edgecal writes both JSON texts compact (no spaces), with sorted keys
and ASCII only (``\\uXXXX`` escapes); readers may accept any valid JSON.

After the N entries, the last 4 bytes of the file: u32 CRC-32 of every byte
before it (the zlib / IEEE 802.3 CRC: reflected polynomial 0xEDB88320, initial
value 0xFFFFFFFF, final XOR 0xFFFFFFFF; the CRC of ``"123456789"`` is 0xCBF43926).

To read a table: check the size is at least 20 bytes, the magic and the version;
check the CRC-32; then start at H + M and, for each of the N entries, read the
fields at the offsets above and step L bytes to the next entry; the last entry
must end exactly where the CRC starts. Always step by H and L, never by the sizes
above: a later revision of version 1 may append fields to the header or to an
entry, and readers skip what they do not know. Changes that older readers cannot
skip bump the version.

Limits: names of at most 255 UTF-8 bytes, entries of at most 65535 bytes (so the
params of one tensor stay under about 65 kB), ``params`` made of JSON values, and
a scale and an amax that are normal float32 values (`check_float32`; the same limit
as every other float32 format).

>>> from edgecal.table import CalibrationTable, TensorCalibration
>>> t = CalibrationTable([TensorCalibration.symmetric("x", 2.54)], created="2026-01-01T00:00:00Z", edgecal_version="1")
>>> data = write_ecal(t)
>>> data[:4], len(data), read_ecal(data) == t
(b'ECAL', 223, True)
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from typing import Any

from ..errors import InputError, StateError
from ..safe_json import load_json
from ..table import CalibrationTable, TensorCalibration, TensorStats
from .registry import Format, register_format

MAGIC = b"ECAL"
VERSION = 1
DTYPE_CODES = {"int8": 1, "uint8": 2}
SCHEME_CODES = {"symmetric": 1, "tflite": 2}
FLAG_BITS = {"all_zero": 1, "constant": 2, "nonfinite": 4, "fallback": 8, "clipped_heavy": 16}

_HEADER = struct.Struct("<4sHHII")  # magic, version, header size, entry count, metadata length
_FIXED = struct.Struct("<HfiBBHdB")  # length, f32 scale, zero point, dtype, scheme, flags, amax, name length
_TAIL = struct.Struct("<6Q3dH")  # six counters, min, max, exact scale, JSON length
_CRC = struct.Struct("<I")
_LUT_TAG = b"LUT1"
_LUT_COUNT = struct.Struct("<H")
_MAX_ENTRY = 0xFFFF


FLOAT32_MIN = 2.0**-126  # the smallest normal float32; below it precision drops (subnormal) down to 0
FLOAT32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]


def float32(value: float, what: str, name: str) -> float:
    """``value`` rounded to float32; `InputError` naming tensor ``name`` unless that is a normal float32.

    0, subnormals (below 2^-126, where a scale keeps few significant bits) and
    overflow to infinity are refused the same way by every writer.
    """
    try:
        rounded = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        rounded = math.inf
    if not (math.isfinite(rounded) and abs(rounded) >= FLOAT32_MIN):
        raise InputError(
            f"tensor {name!r}: {what} {value!r} is {rounded!r} in float32; expected a normal float32 "
            f"(magnitude {FLOAT32_MIN:.4g} to {FLOAT32_MAX:.4g})"
        )
    return rounded


def check_float32(entry: TensorCalibration) -> None:
    """`InputError` unless ``entry``'s scale and amax are both normal float32 values.

    Every writer of a float32 format (ecal, trt, ncnn, ort, c) calls this, so a table
    that one of them refuses is refused by all of them; JSON keeps float64 and takes any.
    """
    float32(entry.scale, "scale", entry.name)
    float32(entry.amax, "amax", entry.name)


def _info_json(entry: TensorCalibration) -> bytes:
    info: dict[str, Any] = {"method": entry.method, "params": entry.params}
    try:
        return json.dumps(info, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as err:
        raise InputError(f"tensor {entry.name!r}: method params must be JSON values, found {err}") from err


def _flag_bits(entry: TensorCalibration) -> int:
    unknown = [f for f in entry.flags if f not in FLAG_BITS]
    if unknown:
        raise InputError(f"tensor {entry.name!r}: flag {unknown[0]!r} has no .ecal bit; known: {', '.join(FLAG_BITS)}")
    return sum(FLAG_BITS[f] for f in set(entry.flags))


def _encode_entry(entry: TensorCalibration) -> bytes:
    name = entry.name.encode()
    if len(name) > 255:
        raise InputError(f"tensor {entry.name[:40]!r}...: name is {len(name)} UTF-8 bytes; .ecal holds at most 255")
    if entry.dtype not in DTYPE_CODES or entry.scheme not in SCHEME_CODES:
        raise InputError(
            f"tensor {entry.name!r}: dtype {entry.dtype} / scheme {entry.scheme} has no .ecal code; "
            f"known dtypes {', '.join(DTYPE_CODES)}, schemes {', '.join(SCHEME_CODES)}"
        )
    s = entry.stats
    if any(v is not None and math.isnan(v) for v in (s.min, s.max)):
        raise InputError(f"tensor {entry.name!r}: stats min/max is NaN; expected a number or None")
    info = _info_json(entry)
    lut = b"" if entry.lut is None else \
        _LUT_TAG + _LUT_COUNT.pack(len(entry.lut)) + struct.pack(f"<{len(entry.lut)}d", *entry.lut)
    length = _FIXED.size + len(name) + _TAIL.size + len(info) + len(lut)
    if length > _MAX_ENTRY:
        raise InputError(f"tensor {entry.name!r}: entry is {length} bytes; .ecal entries hold at most {_MAX_ENTRY}")
    scale32 = float32(entry.scale, "scale", entry.name)
    check_float32(entry)
    code = (DTYPE_CODES[entry.dtype], SCHEME_CODES[entry.scheme], _flag_bits(entry))
    lo, hi = (math.nan if v is None else v for v in (s.min, s.max))
    fixed = _FIXED.pack(length, scale32, entry.zero_point, *code, entry.amax, len(name))
    try:
        tail = _TAIL.pack(s.samples, s.count, s.zeros, s.nans, s.posinf, s.neginf, lo, hi, entry.scale, len(info))
    except struct.error as err:
        raise InputError(f"tensor {entry.name!r}: stats do not fit .ecal (counters are u64): {err}") from err
    return fixed + name + tail + info + lut


def _decode_lut(data: bytes, at: int, end: int, index: int) -> tuple[float, ...] | None:
    """The appended codebook between ``at`` and the entry's ``end``; None when the entry has none."""
    if data[at : at + len(_LUT_TAG)] != _LUT_TAG or end - at < len(_LUT_TAG):
        return None  # nothing appended, or a later revision's field
    at += len(_LUT_TAG)
    count = _LUT_COUNT.unpack_from(data, at)[0] if end - at >= _LUT_COUNT.size else 0
    if end - at < _LUT_COUNT.size + 8 * count:
        raise StateError(f".ecal entry {index}: codebook of {end - at} bytes after its tag; expected a level count "
                         f"and {count} f64 levels")
    return struct.unpack_from(f"<{count}d", data, at + _LUT_COUNT.size)


def write_ecal(table: CalibrationTable) -> bytes:
    """Encode ``table`` as version-1 ``.ecal`` bytes (layout in the module docstring).

    Raises
    ------
    InputError
        If an entry does not fit the format (see Limits above); the message names the tensor.
    """
    meta: dict[str, Any] = {"created": table.created, "edgecal_version": table.edgecal_version,
                            "model_hash": table.model_hash}
    if table.provenance:  # optional key: tables without provenance encode exactly as before
        meta["provenance"] = table.provenance
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    body = _HEADER.pack(MAGIC, VERSION, _HEADER.size, len(table), len(meta_bytes)) + meta_bytes
    body += b"".join(_encode_entry(e) for e in table.values())
    return body + _CRC.pack(zlib.crc32(body))


def _need(start: int, size: int, end: int, what: str) -> None:
    if start + size > end:
        raise StateError(f".ecal {what} needs bytes {start}..{start + size} but the entries end at byte {end}")


def _read_meta(data: bytes, start: int, size: int, end: int) -> dict[str, Any]:
    _need(start, size, end, "metadata")
    try:
        meta = load_json(data[start : start + size], ".ecal metadata")
        fields = {k: meta[k] for k in ("created", "edgecal_version", "model_hash")}
    except (KeyError, TypeError) as err:
        raise StateError(f".ecal metadata is not the expected JSON object ({err!r})") from err
    texts = (fields["created"], fields["edgecal_version"])
    if not all(isinstance(v, str) and v for v in texts) or not isinstance(fields["model_hash"], (str, type(None))):
        raise StateError(f".ecal metadata {fields}: expected non-empty strings (model_hash may be null)")
    if meta.get("provenance") is not None:
        if not isinstance(meta["provenance"], dict):
            raise StateError(f".ecal metadata provenance is {type(meta['provenance']).__name__}; expected an object")
        fields["provenance"] = meta["provenance"]
    return fields


def _decode_flags(bits: int, index: int) -> tuple[str, ...]:
    if bits & ~sum(FLAG_BITS.values()):
        raise StateError(f".ecal entry {index}: flag bits {bits:#06x}; expected only bits of {FLAG_BITS}")
    return tuple(f for f, bit in FLAG_BITS.items() if bits & bit)


def _decode_entry(data: bytes, start: int, end: int, index: int) -> tuple[TensorCalibration, int]:
    _need(start, _FIXED.size, end, f"entry {index}")
    length, scale32, zero_point, dcode, scode, bits, amax, klen = _FIXED.unpack_from(data, start)
    tail_at = start + _FIXED.size + klen
    if length < _FIXED.size + klen + _TAIL.size:
        raise StateError(
            f".ecal entry {index}: length {length} is less than its fields ({tail_at + _TAIL.size - start} bytes)"
        )
    _need(start, length, end, f"entry {index}")
    samples, count, zeros, nans, posinf, neginf, lo, hi, scale, jlen = _TAIL.unpack_from(data, tail_at)
    if tail_at + _TAIL.size + jlen > start + length:
        raise StateError(f".ecal entry {index}: method JSON of {jlen} bytes overruns the entry length {length}")
    dtypes, schemes = {v: k for k, v in DTYPE_CODES.items()}, {v: k for k, v in SCHEME_CODES.items()}
    if dcode not in dtypes or scode not in schemes:
        raise StateError(f".ecal entry {index}: dtype code {dcode}, scheme code {scode}; expected {dtypes}, {schemes}")
    if struct.pack("<f", scale32) != struct.pack("<f", scale):
        raise StateError(f".ecal entry {index}: float32 scale {scale32!r} is not the exact scale {scale!r} rounded")
    try:
        name = data[start + _FIXED.size : tail_at].decode()
        json_at = tail_at + _TAIL.size
        info = load_json(data[json_at : json_at + jlen], f".ecal entry {index} is malformed: method")
        method, params = info["method"], info["params"]
        flags = _decode_flags(bits, index)
        stats = TensorStats(samples, count, zeros, nans, posinf, neginf, None if math.isnan(lo) else lo,
                            None if math.isnan(hi) else hi)
        lut = _decode_lut(data, json_at + jlen, start + length, index)
        entry = TensorCalibration(name, amax, scale, zero_point, dtypes[dcode], schemes[scode],
                                  method, params, stats, flags, lut)  # fmt: skip
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError, InputError) as err:
        raise StateError(f".ecal entry {index} is malformed: {err}") from err
    return entry, start + length


def read_ecal(data: bytes) -> CalibrationTable:
    """Decode ``.ecal`` bytes; `StateError` on any damage, never a wrong table."""
    data = bytes(data)
    if data[:4] != MAGIC:
        raise StateError(f"not an .ecal table: starts {data[:4]!r}, expected magic {MAGIC!r}")
    if len(data) < _HEADER.size + _CRC.size:
        raise StateError(f".ecal table is truncated: {len(data)} bytes, expected at least {_HEADER.size + _CRC.size}")
    _, version, header_size, count, meta_size = _HEADER.unpack_from(data)
    if version != VERSION:
        raise StateError(f".ecal format version {version} is not supported; expected {VERSION}")
    end = len(data) - _CRC.size
    if zlib.crc32(data[:end]) != _CRC.unpack_from(data, end)[0]:
        raise StateError(".ecal checksum mismatch: the table is truncated or corrupt; expected a matching CRC-32")
    if header_size < _HEADER.size:
        raise StateError(f".ecal header size {header_size} is too small; expected at least {_HEADER.size}")
    meta = _read_meta(data, header_size, meta_size, end)
    pos, entries = header_size + meta_size, []
    for index in range(count):
        entry, pos = _decode_entry(data, pos, end, index)
        entries.append(entry)
    if pos != end:
        raise StateError(f".ecal entries end at byte {pos} but the CRC-32 starts at byte {end}; expected no gap")
    try:
        return CalibrationTable(entries, **meta)
    except InputError as err:
        raise StateError(f".ecal table is malformed: {err}") from err


register_format(
    Format(
        name="ecal",
        suffixes=(".ecal",),
        write=write_ecal,
        read=read_ecal,
        sniff=lambda head: head[:4] == MAGIC,
        description="compact little-endian binary with CRC-32, for flash and the serial link",
    )
)
