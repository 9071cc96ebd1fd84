"""C99 headers (``.h``) that compile a table into firmware; write-only.

The header has an include guard, a comment with the edgecal version, model hash
and creation time, and, with the default ``prefix`` ``edgecal``:

- ``EDGECAL_TABLE_VERSION``: the ``.ecal`` format version, and
  ``EDGECAL_TABLE_CRC32``: the CRC-32 that ends the ``.ecal`` encoding of the same
  table, so firmware can tell whether a table pushed over the link is this one;
- ``EDGECAL_NUM_TENSORS`` and one index macro ``EDGECAL_T_<NAME>`` per tensor;
- ``static const`` arrays indexed by tensor: ``edgecal_names`` (UTF-8 strings),
  ``edgecal_scales`` (float), ``edgecal_zero_points`` (int32_t),
  ``edgecal_multipliers`` (int32_t) and ``edgecal_shifts`` (int), where
  real = scale * (q - zero_point) and scale == multiplier * 2^(shift - 31).

A table with codebook entries (``lut``, `edgecal.methods.codebook`) also gets, per
such tensor, ``<prefix>_lut_<MACRO>`` (its C levels as float, ascending) and
``<prefix>_bounds_<MACRO>`` (the C - 1 decision boundaries: float64 midpoints of
consecutive levels rounded to float), and two arrays indexed by tensor,
``<prefix>_luts`` (the levels, or NULL for a uniform entry) and
``<prefix>_lut_sizes`` (C, or 0). ``ecal_lut_quantize`` in
``firmware_interface/include/ecal_lut.h`` takes the boundaries; a value's code is
the number of boundaries at or below it, and ``<prefix>_lut_<MACRO>[code]`` its
dequantized value. Tables without a codebook get none of these.

Index macro names: the tensor name with every character other than an ASCII letter
or digit replaced by ``_`` and letters upper-cased (``input_1:0`` gives
``EDGECAL_T_INPUT_1_0``); when that name is already taken by an earlier tensor of
the table, ``_2``, ``_3``, ... is appended (the first free one, in table order).

The multiplier and shift are TensorFlow Lite's ``QuantizeMultiplier`` of the
float64 scale: scale = q * 2^shift with q in [0.5, 1) (``frexp``), multiplier =
q * 2^31 rounded half away from zero, and if that rounds up to 2^31 it is halved
and shift incremented. Multipliers lie in [2^30, 2^31 - 1]. edgecal does not clamp
the shift, so scales below 2^-32 or of 2^31 and more give shifts outside the
[-31, 30] that TFLite's fixed-point kernels accept. Symmetric and ``tflite`` int8
entries can be written (the latter with their zero points), and a table needs at least one tensor (C has no empty arrays).

>>> quantize_multiplier(0.02)
(1374389535, -5)
"""

from __future__ import annotations

import json
import math
import re
import struct

from ..errors import InputError
from ..reference.lut import lut_bounds
from ..table import CalibrationTable
from . import ecal
from .registry import Format, register_format

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def quantize_multiplier(scale: float) -> tuple[int, int]:
    """Q31 ``(multiplier, shift)`` with scale == multiplier * 2**(shift - 31), as TFLite computes it.

    >>> quantize_multiplier(0.5), quantize_multiplier(0.5 + 2**-32)
    ((1073741824, 0), (1073741825, 0))
    """
    q, shift = math.frexp(scale)
    exact = q * 2**31  # exact: a power-of-two multiple of a float64
    multiplier = math.floor(exact)
    if exact - multiplier >= 0.5:
        multiplier += 1
    if multiplier == 2**31:
        multiplier //= 2
        shift += 1
    return multiplier, shift


def macro_names(names: list[str]) -> list[str]:
    """Index macro suffixes of ``names``, sanitized and made unique in order (see above).

    >>> macro_names(["input_1:0", "input_1/0", "a"])
    ['INPUT_1_0', 'INPUT_1_0_2', 'A']
    """
    taken: set[str] = set()
    out = []
    for name in names:
        base = "".join(c.upper() if c.isascii() and c.isalnum() else "_" for c in name)
        candidate, k = base, 2
        while candidate in taken:
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate)
        out.append(candidate)
    return out


def _c_string(name: str) -> str:
    """A C string literal: printable ASCII as is; quote, backslash, '?' and other bytes as octal escapes."""
    plain = (chr(b) if 32 <= b < 127 and chr(b) not in '"\\?' else f"\\{b:03o}" for b in name.encode())
    return '"' + "".join(plain) + '"'


def _comment(value: object) -> str:
    """A value as JSON inside a C comment: ASCII only, '*' escaped as \\u002a so neither ``/*`` nor ``*/`` occurs."""
    return json.dumps(value).replace("*", "\\u002a")


def _array(ctype: str, symbol: str, count: str, values: list[str]) -> list[str]:
    return [f"static const {ctype} {symbol}[{count}] = {{", *(f"    {v}," for v in values), "};"]


def _check(table: CalibrationTable, prefix: object) -> None:
    if not isinstance(prefix, str) or not _IDENTIFIER.fullmatch(prefix):
        raise InputError(f"C header prefix {prefix!r}: expected a C identifier such as 'edgecal'")
    if not len(table):
        raise InputError("C header of an empty table: expected at least one tensor (C has no empty arrays)")
    for entry in table.values():
        if entry.scheme not in ("symmetric", "tflite"):  # both are real = scale * (q - zero_point)
            raise InputError(f"tensor {entry.name!r}: scheme {entry.scheme!r}; C headers hold symmetric or tflite int8")
        if "\0" in entry.name:
            raise InputError(f"tensor {entry.name!r}: name contains NUL, which a C string cannot hold")
        ecal.check_float32(entry)


def _preamble(table: CalibrationTable, prefix: str) -> list[str]:
    up, n = prefix.upper(), f"{prefix.upper()}_NUM_TENSORS"
    crc = struct.unpack("<I", ecal.write_ecal(table)[-4:])[0]
    macros = zip(macro_names(list(table)), table)
    indices = [f"#define {up}_T_{macro} {i} /* {_comment(name)} */" for i, (macro, name) in enumerate(macros)]
    return [
        "/* edgecal calibration table. Generated by edgecal; do not edit.",
        f" * edgecal version: {_comment(table.edgecal_version)}",
        f" * model hash:      {_comment(table.model_hash)}",
        f" * created:         {_comment(table.created)}",
        " *",
        f" * Tensor i < {n}: real = {prefix}_scales[i] * (q - {prefix}_zero_points[i]),",
        f" * {prefix}_scales[i] == {prefix}_multipliers[i] * 2^({prefix}_shifts[i] - 31).",
        " */",
        f"#ifndef {up}_TABLE_H",
        f"#define {up}_TABLE_H",
        "",
        "#include <stdint.h>",
        "",
        f"#define {up}_TABLE_VERSION {ecal.VERSION} /* .ecal format version of the CRC-32 below */",
        f"#define {up}_TABLE_CRC32 0x{crc:08x}u /* CRC-32 at the end of this table's .ecal encoding */",
        f"#define {n} {len(table)}",
        "",
        *indices,
    ]


def _float(v: float) -> str:
    return f"{struct.unpack('<f', struct.pack('<f', v))[0]:.9e}f"


def _luts(table: CalibrationTable, prefix: str) -> list[str]:
    """The codebook arrays (module docstring); nothing when no entry has a LUT."""
    entries = list(table.values())
    if all(e.lut is None for e in entries):
        return []
    n = f"{prefix.upper()}_NUM_TENSORS"
    lines, pointers, sizes = ["", "#include <stddef.h>"], [], []
    for macro, e in zip(macro_names(list(table)), entries):
        if e.lut is None:
            pointers.append("NULL")
            sizes.append("0")
            continue
        lines += _array("float", f"{prefix}_lut_{macro}", str(len(e.lut)), [_float(v) for v in e.lut])
        lines += _array("float", f"{prefix}_bounds_{macro}", str(len(e.lut) - 1), [_float(float(v)) for v in lut_bounds(e.lut)])
        pointers.append(f"{prefix}_lut_{macro}")
        sizes.append(str(len(e.lut)))
    return [*lines, *_array("float *const", f"{prefix}_luts", n, pointers),
            *_array("uint16_t", f"{prefix}_lut_sizes", n, sizes)]


def write_c(table: CalibrationTable, *, prefix: str = "edgecal") -> bytes:
    """Encode ``table`` as a C99 header with symbols starting ``prefix``.

    Raises
    ------
    InputError
        If ``prefix`` is not a C identifier, the table is empty, an entry is not
        symmetric or tflite int8, a name contains NUL, a scale or amax is not a normal float32, or
        the table does not fit ``.ecal`` (whose CRC-32 the header carries).
    """
    _check(table, prefix)
    entries = list(table.values())
    n = f"{prefix.upper()}_NUM_TENSORS"
    q31 = [quantize_multiplier(e.scale) for e in entries]
    scales = [f"{ecal.float32(e.scale, 'scale', e.name):.9e}f" for e in entries]
    lines = [
        *_preamble(table, prefix),
        "",
        *_array("char *const", f"{prefix}_names", n, [_c_string(e.name) for e in entries]),
        *_array("float", f"{prefix}_scales", n, scales),
        *_array("int32_t", f"{prefix}_zero_points", n, [str(e.zero_point) for e in entries]),
        *_array("int32_t", f"{prefix}_multipliers", n, [str(m) for m, _ in q31]),
        *_array("int", f"{prefix}_shifts", n, [str(s) for _, s in q31]),
        *_luts(table, prefix),
        "",
        f"#endif /* {prefix.upper()}_TABLE_H */",
    ]
    return ("\n".join(lines) + "\n").encode()


register_format(
    Format(
        name="c",
        suffixes=(".h",),
        write=write_c,
        description="C99 header: scales, zero points, Q31 multipliers and shifts (write-only)",
        options={"prefix": str},
    )
)
