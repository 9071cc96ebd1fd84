"""TensorRT calibration caches (``.cache``, ``.trt``): the text ``IInt8Calibrator`` reads.

The first line is ``TRT-<version>-<algorithm>``, e.g. ``TRT-8601-EntropyCalibration2``
(the version looks like ``NV_TENSORRT_VERSION``: real caches from 8.4.1 and 10.3.0
say 8401 and 100300; TensorRT skips calibration only when the cache matches its
version and calibrator). Then one line per tensor, ``<name>: <hex>``, where
``<hex>`` is the IEEE-754 float32 bit pattern of the scale = amax / 127 as a
lowercase hex integer without ``0x`` and without leading zeros: amax 2.54 has
scale 0.02, float32 bits 0x3CA3D70A, written ``3ca3d70a``. TensorRT recovers the
dynamic range as scale * 127.

Writing: every tensor gets its amax / 127, including all-zero tensors (edgecal's
amax 1.0 for them is written as ``3c010204``, not TensorRT's own ``0``, because
some readers cannot parse the short form). Only symmetric int8 entries can be
written; ``tflite``-scheme entries are converted by `TensorCalibration.as_symmetric`
(amax kept, zero point dropped). Options: ``trt_version`` (digits, default ``"8601"``) and ``algorithm``
(default ``"EntropyCalibration2"``).

Reading is tolerant of what real caches contain:

- names with spaces, brackets and colons, e.g. ``(Unnamed Layer* 64) [Shuffle]_output``
  or TF-style ``input_1:0``: each line is split at its LAST ``": "``;
- short hex such as ``0``, which TensorRT writes for an all-zero tensor. A scale of
  0 cannot be stored (scales are > 0), and any scale quantizes zeros exactly, so
  ``0`` is read as edgecal's all-zero entry: amax 1.0 (scale 1/127) with flag
  ``all_zero``;
- blank lines and CRLF line ends.

A cache has no checksum: damage that keeps a line's syntax (a changed hex digit,
a changed letter of a name) reads as another valid table. `disagreements` (the CLI's
``edgecal show CACHE --against TABLE``) compares a cache with a table or state known
to be good.

Entries read from a cache have method ``"trt-cache"`` with params ``trt_version``
and ``algorithm`` from the header; their amax is exactly float32(scale) * 127.

>>> t = read_trt(b"TRT-8401-EntropyCalibration2\\ninput_1:0: 3c010a14\\n366: 0\\n")
>>> round(t["input_1:0"].amax, 5), t["366"].amax, t["366"].flags
(1.00024, 1.0, ('all_zero',))
"""

from __future__ import annotations

import re
import struct

from ..errors import InputError, StateError
from ..table import ALL_ZERO_AMAX, CalibrationTable, TensorCalibration, refuse_lut
from .ecal import check_float32, float32
from .registry import Format, register_format

METHOD = "trt-cache"
_VERSION = re.compile(r"[0-9]+")
_ALGORITHM = re.compile(r"[A-Za-z0-9_]+")
_HEADER = re.compile(f"TRT-({_VERSION.pattern})-({_ALGORITHM.pattern})")
_HEX = re.compile(r"[0-9a-fA-F]{1,8}")


def scale_hex(amax: float, name: str = "?") -> str:
    """The cache's hex for ``amax``: float32 bits of amax / 127, lowercase, no leading zeros.

    >>> scale_hex(2.54), scale_hex(127.0)
    ('3ca3d70a', '3f800000')
    """
    scale = float32(amax / 127.0, "scale amax/127", name)
    return "%x" % struct.unpack(">I", struct.pack(">f", scale))[0]


def write_trt(table: CalibrationTable, *, trt_version: str = "8601", algorithm: str = "EntropyCalibration2") -> bytes:
    """Encode ``table`` as a TensorRT calibration cache.

    Raises
    ------
    InputError
        If an option is malformed, an entry is not symmetric int8, or amax / 127 or
        amax is not a normal float32 (`edgecal.formats.ecal.check_float32`).
    """
    refuse_lut(table, "a TensorRT cache")
    if not (_VERSION.fullmatch(str(trt_version)) and _ALGORITHM.fullmatch(str(algorithm))):
        raise InputError(
            f"TensorRT cache header TRT-{trt_version}-{algorithm}: expected trt_version of digits (e.g. 8601) "
            "and algorithm of letters, digits and '_' (e.g. EntropyCalibration2)"
        )
    lines = [f"TRT-{trt_version}-{algorithm}"]
    for entry in table.values():
        entry = entry.as_symmetric() if entry.scheme == "tflite" else entry  # rule: TensorCalibration.as_symmetric
        if entry.scheme != "symmetric":
            raise InputError(f"tensor {entry.name!r}: scheme {entry.scheme!r}; TensorRT caches hold symmetric int8")
        value = scale_hex(entry.amax, entry.name)
        check_float32(entry)
        lines.append(f"{entry.name}: {value}")
    return ("\n".join(lines) + "\n").encode()


def disagreements(cache: CalibrationTable, reference: CalibrationTable) -> list[tuple[str, str]]:
    """``(tensor, why)`` for every tensor where ``cache`` and ``reference`` differ as a TensorRT cache holds them.

    A cache has no checksum, so damage to a hex digit reads as another valid table;
    this compares it with a table or state known to be good (an ``.ecal`` has a
    CRC-32). Tensors are compared by the float32 bits of amax/127 (what the cache
    stores; ``tflite`` entries through `TensorCalibration.as_symmetric`), in
    ``reference`` order, then the tensors only ``cache`` holds.

    >>> good = CalibrationTable([TensorCalibration.symmetric("a", 2.54), TensorCalibration.symmetric("b", 1.0)])
    >>> disagreements(read_trt(write_trt(good)), good)
    []
    >>> disagreements(read_trt(b"TRT-8601-EntropyCalibration2\\na: 3ca3d70b\\n"), good)
    [('a', 'cache scale 3ca3d70b (amax 2.54), reference 3ca3d70a (amax 2.54)'), ('b', 'missing from the cache')]
    """
    out = []
    for name, ref in reference.items():
        want = scale_hex(ref.as_symmetric().amax, name)
        if name not in cache:
            out.append((name, "missing from the cache"))
            continue
        got = scale_hex(cache[name].as_symmetric().amax, name)
        if got != want:
            amaxes = cache[name].as_symmetric().amax, ref.as_symmetric().amax
            out.append((name, f"cache scale {got} (amax {amaxes[0]:.6g}), reference {want} (amax {amaxes[1]:.6g})"))
    out.extend((name, "in the cache but not in the reference") for name in cache if name not in reference)
    return out


def _parse_line(line: str, number: int, params: dict[str, str]) -> TensorCalibration:
    name, sep, value = line.rpartition(": ")
    if not sep or not name or not _HEX.fullmatch(value.strip()):
        raise StateError(f"TensorRT cache line {number}: found {line[:80]!r}; expected '<tensor name>: <hex>'")
    bits = int(value, 16)
    if bits == 0:
        return TensorCalibration.symmetric(name, ALL_ZERO_AMAX, method=METHOD, params=params, flags=("all_zero",))
    scale = struct.unpack(">f", struct.pack(">I", bits))[0]
    if not (0.0 < scale < float("inf")):
        raise StateError(f"TensorRT cache line {number}: {value.strip()} is float32 {scale!r}; expected a scale > 0")
    return TensorCalibration.symmetric(name, scale * 127.0, method=METHOD, params=params)


def read_trt(data: bytes) -> CalibrationTable:
    """Decode a TensorRT calibration cache; `StateError` naming the line on any damage."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as err:
        raise StateError(f"TensorRT cache is not UTF-8 text (byte {err.start}); expected a text file") from err
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    header = _HEADER.fullmatch(lines[0])
    if header is None:
        raise StateError(f"TensorRT cache line 1: found {lines[0][:80]!r}; expected 'TRT-<version>-<algorithm>'")
    params = {"trt_version": header.group(1), "algorithm": header.group(2)}
    entries: dict[str, TensorCalibration] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        entry = _parse_line(line, number, params)
        if entry.name in entries:
            raise StateError(f"TensorRT cache line {number}: tensor {entry.name!r} appears twice; expected once")
        entries[entry.name] = entry
    return CalibrationTable(entries.values())


register_format(
    Format(
        name="trt",
        suffixes=(".cache", ".trt"),
        write=write_trt,
        read=read_trt,
        sniff=lambda head: head.startswith(b"TRT-"),
        description="TensorRT calibration cache: hex float32 bits of amax/127",
        options={"trt_version": str, "algorithm": str},
    )
)
