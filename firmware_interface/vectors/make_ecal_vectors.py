#!/usr/bin/env python3
"""Write ecal_tables.txt, the known-answer vectors of the ``.ecal`` table format for the C reader.

The tables are written by edgecal's own writer (``edgecal.formats.ecal.write_ecal``, from this
checkout); the damaged ones are those bytes patched as named below, most with the CRC-32
recomputed so that the check under test, not the CRC, is what fails. The expected field values
come from the tables given to the writer, not from any reader. The C test
(tests/test_ecal_table.c) checks every field against them; tests/test_ecal_c_parser.py checks
this file equals what the script writes now and that edgecal's reader agrees. Regenerate only
after a deliberate format change:

    python3 firmware_interface/vectors/make_ecal_vectors.py          # rewrite ecal_tables.txt
    python3 firmware_interface/vectors/make_ecal_vectors.py --check  # exit 1 if it differs

File format, one record per line, fields separated by single spaces, '-' for empty hex:

    table NAME RESULT BAD_ENTRY COUNT TABLE_HEX
    entry NAME INDEX NAME_HEX SCALE_F32 ZERO_POINT DTYPE SCHEME FLAGS AMAX_F64
          SAMPLES COUNT ZEROS NANS POSINF NEGINF MIN_F64 MAX_F64 SCALE_F64 METHOD_JSON_HEX
    find  NAME KEY_HEX INDEX

RESULT is ok or the first failed check (short, magic, version, crc, header, entry, name, code,
value, gap: ECT_E_* in include/ecal_table.h); BAD_ENTRY is the index of the entry that failed
(or -), COUNT the number of entries an ok table yields. *_F32 / *_F64 are the IEEE-754 bits in
hex (big-endian digits, so 0x3f800000 is 1.0); min/max are NaN when unknown. The entry lines
of an ok table follow its table line, in table order. A find line looks KEY up in the table
NAME and expects the entry INDEX, or -1 for none.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "ecal_tables.txt"
sys.path.insert(0, str(HERE.parents[1]))  # this checkout's edgecal, whatever is installed

from edgecal.formats.ecal import write_ecal  # noqa: E402
from edgecal.table import CalibrationTable, TensorCalibration, TensorStats  # noqa: E402

CREATED = "2026-01-01T00:00:00Z"
DTYPES, SCHEMES = {"int8": 1, "uint8": 2}, {"symmetric": 1, "tflite": 2}
FLAG_BITS = {"all_zero": 1, "constant": 2, "nonfinite": 4, "fallback": 8, "clipped_heavy": 16}


def tables() -> dict[str, CalibrationTable]:
    """The good tables, as given to the writer."""
    big = TensorStats(samples=2**40, count=2**64 - 1, zeros=7, nans=3, posinf=2**33 + 5, neginf=1, min=-3.5, max=1e30)
    mixed = [
        TensorCalibration.symmetric("conv1", 2.54, method="kl", params={"bins": 2048, "target": 128},
                                    stats=TensorStats(10, 7840, 12, 0, 0, 0, -2.5, 2.54), flags=("fallback", "clipped_heavy")),
        TensorCalibration.unsigned("relu/out", 6.0, method="max", stats=TensorStats(3, 30, 30, min=0.0, max=6.0)),
        TensorCalibration.asymmetric("input", -1.5, 3.25, method="minmax", stats=big,
                                     flags=("all_zero", "constant", "nonfinite", "fallback", "clipped_heavy")),
        TensorCalibration.symmetric("conv12", 1e-30, params={"note": "tiny amax", "list": [1, 2.5, None]}),
        TensorCalibration.symmetric("Ünïcødé→名前", 3e38, method="percentile", params={"p": 99.99}),
        TensorCalibration.symmetric("n" * 255, 0.5),
    ]  # fmt: skip
    return {
        "empty": CalibrationTable([], created=CREATED, edgecal_version="0.1.0"),
        "one": CalibrationTable([TensorCalibration.symmetric("x", 2.54)], created=CREATED, edgecal_version="1"),
        "mixed": CalibrationTable(mixed, created=CREATED, edgecal_version="0.1.0", model_hash="ab" * 32,
                                  provenance={"link": {"lost": 3, "crc_errors": 1}}),
    }  # fmt: skip


def entry_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, length) of each entry, walking by the header and entry lengths."""
    header, count, meta = struct.unpack_from("<H", data, 6)[0], *struct.unpack_from("<II", data, 8)
    pos, spans = header + meta, []
    for _ in range(count):
        length = struct.unpack_from("<H", data, pos)[0]
        spans.append((pos, length))
        pos += length
    return spans


def recrc(body: bytes) -> bytes:
    """``body`` (a table without its CRC) with a fresh CRC-32 appended."""
    return body + struct.pack("<I", zlib.crc32(body))


def patch(data: bytes, at: int, fmt: str, value: float) -> bytes:
    """``data`` with the field ``fmt`` at ``at`` set to ``value`` and the CRC-32 recomputed."""
    body = bytearray(data[:-4])
    struct.pack_into(fmt, body, at, value)
    return recrc(bytes(body))


def bits32(data: bytes, at: int) -> int:
    return struct.unpack_from("<I", data, at)[0]


def append_entry_fields(data: bytes, extra: bytes) -> bytes:
    """Every entry grows by ``extra`` at its end (fields a later revision may add), L updated."""
    body, last = bytearray(), 0
    for start, length in entry_spans(data):
        body += data[last:start] + struct.pack("<H", length + len(extra)) + data[start + 2 : start + length] + extra
        last = start + length
    return recrc(bytes(body) + data[last:-4])


def append_header_fields(data: bytes, extra: bytes) -> bytes:
    """The header grows by ``extra`` (fields a later revision may add), H updated."""
    body = data[:6] + struct.pack("<H", 16 + len(extra)) + data[8:16] + extra + data[16:-4]
    return recrc(body)


def drop_name(data: bytes, index: int) -> bytes:
    """Entry ``index`` with its name removed: name length 0, L shortened to match."""
    start, length = entry_spans(data)[index]
    k = data[start + 22]
    entry = struct.pack("<H", length - k) + data[start + 2 : start + 22] + b"\0" + data[start + 23 + k : start + length]
    return recrc(data[:start] + entry + data[start + length : -4])


def rename(data: bytes, index: int, name: bytes) -> bytes:
    """Entry ``index``'s name bytes replaced by ``name`` of the same length."""
    start, _ = entry_spans(data)[index]
    assert data[start + 22] == len(name)
    return recrc(data[: start + 23] + name + data[start + 23 + len(name) : -4])


def damaged(good: dict[str, bytes]) -> Iterator[tuple[str, bytes, str, int | None]]:
    """(name, bytes, first failed check, index of the failed entry or None)."""
    m, one = good["mixed"], good["one"]
    spans = entry_spans(m)
    last, (last_at, last_len) = len(spans) - 1, spans[-1]
    body_end = len(m) - 4
    yield "truncated_to_header", m[:19], "short", None
    yield "empty_file", b"", "short", None
    yield "truncated_last_byte", m[:-1], "crc", None
    yield "truncated_mid_entry", m[: spans[2][0] + 30], "crc", None
    yield "crc_flipped", m[:-1] + bytes([m[-1] ^ 0x80]), "crc", None
    yield "body_bit_flipped", m[:40] + bytes([m[40] ^ 1]) + m[41:], "crc", None
    yield "bad_magic", recrc(b"ECAX" + m[4:-4]), "magic", None
    yield "json_not_ecal", recrc(b'{"tensors": []}' + bytes(8)), "magic", None
    yield "version_2", patch(m, 4, "<H", 2), "version", None
    yield "version_0", patch(one, 4, "<H", 0), "version", None
    yield "header_size_12", patch(m, 6, "<H", 12), "header", None
    yield "header_size_past_end", patch(one, 6, "<H", 0xFFFF), "header", None
    yield "metadata_overrun", patch(m, 12, "<I", body_end), "header", None
    yield "metadata_length_huge", patch(m, 12, "<I", 0xFFFFFFFF), "header", None
    yield "count_one_more", patch(m, 8, "<I", len(spans) + 1), "entry", len(spans)
    yield "count_huge", patch(one, 8, "<I", 0xFFFFFFFF), "entry", 1
    yield "count_one_less", patch(m, 8, "<I", len(spans) - 1), "gap", None
    yield "bytes_after_entries", recrc(m[:-4] + b"\0\0\0"), "gap", None
    yield "entry_length_overruns", patch(m, last_at, "<H", last_len + 100), "entry", last
    yield "entry_length_to_crc", patch(m, last_at, "<H", last_len + 4), "entry", last
    yield "entry_length_too_small", patch(m, spans[1][0], "<H", 97 + len("relu/out") - 1), "entry", 1
    yield "entry_length_zero", patch(m, spans[0][0], "<H", 0), "entry", 0
    yield "method_json_overruns", patch(m, spans[0][0] + 23 + 5 + 72, "<H", 1000), "entry", 0
    yield "name_length_overruns", patch(one, entry_spans(one)[0][0] + 22, "<B", 255), "entry", 0
    yield "name_length_0", drop_name(m, 1), "name", 1
    yield "name_invalid_utf8", rename(m, 0, b"conv\xff"), "name", 0
    yield "name_overlong_nul", rename(m, 2, b"in\xc0\x80t"), "name", 2
    yield "name_surrogate", rename(m, 2, b"in\xed\xa0\x80"), "name", 2
    yield "name_cut_utf8", rename(m, 2, b"inpu\xe2"), "name", 2
    yield "name_repeated", rename(m, 2, b"conv1"), "name", 2
    yield "dtype_code_3", patch(m, spans[2][0] + 10, "<B", 3), "code", 2
    yield "dtype_code_0", patch(m, spans[0][0] + 10, "<B", 0), "code", 0
    yield "scheme_code_3", patch(m, spans[1][0] + 11, "<B", 3), "code", 1
    yield "flag_bit_5", patch(m, spans[1][0] + 12, "<H", 32), "code", 1
    yield "scale_zero", patch(m, spans[0][0] + 2, "<f", 0.0), "value", 0
    yield "scale_negative", patch(m, spans[1][0] + 2, "<f", -0.5), "value", 1
    yield "scale_infinite", patch(m, spans[0][0] + 2, "<f", math.inf), "value", 0
    yield "scale_subnormal", patch(m, spans[0][0] + 2, "<I", 1), "value", 0
    yield "scale_not_the_exact_scale_rounded", patch(m, spans[1][0] + 2, "<I", bits32(m, spans[1][0] + 2) + 1), "value", 1
    yield "exact_scale_changed", patch(m, spans[0][0] + 23 + 5 + 64, "<d", 2.54 / 127 * 1.001), "value", 0
    yield "amax_negative", patch(m, spans[3][0] + 14, "<d", -1e-30), "value", 3
    yield "amax_nan", patch(m, spans[2][0] + 14, "<d", math.nan), "value", 2
    yield "amax_too_large_for_f32", patch(m, spans[4][0] + 14, "<d", 1e39), "value", 4


def hexf32(value: float) -> str:
    return struct.pack(">f", value).hex()


def hexf64(value: float | None) -> str:
    return struct.pack(">d", math.nan if value is None else value).hex()


def entry_line(table: str, index: int, e: TensorCalibration) -> str:
    s = e.stats
    method = json.dumps({"method": e.method, "params": e.params}, sort_keys=True, separators=(",", ":")).encode()
    flags = sum(FLAG_BITS[f] for f in e.flags)
    fields = [table, index, e.name.encode().hex(), hexf32(e.scale), e.zero_point, DTYPES[e.dtype], SCHEMES[e.scheme],
              flags, hexf64(e.amax), s.samples, s.count, s.zeros, s.nans, s.posinf, s.neginf,
              hexf64(s.min), hexf64(s.max), hexf64(e.scale), method.hex()]  # fmt: skip
    return "entry " + " ".join(map(str, fields))


def finds(name: str, table: CalibrationTable) -> Iterator[str]:
    names = list(table)
    keys = [*names, "conv", "conv1x", "CONV1", "relu", "n" * 254, "x\0", ""]
    for key in dict.fromkeys(keys):
        yield f"find {name} {key.encode().hex() or '-'} {names.index(key) if key in names else -1}"


def good_records() -> Iterator[tuple[str, bytes, CalibrationTable]]:
    for name, table in tables().items():
        yield name, write_ecal(table), table
    written = {n: write_ecal(t) for n, t in tables().items()}
    mixed = tables()["mixed"]
    yield "appended_entry_fields", append_entry_fields(written["mixed"], bytes(range(0xA0, 0xA7))), mixed
    yield "appended_header_fields", append_header_fields(written["mixed"], b"\x01\x02\x03\x04\x05\x06\x07\x08"), mixed
    both = append_header_fields(append_entry_fields(written["one"], b"\xff" * 300), b"\0" * 3)
    yield "appended_header_and_entry_fields", both, tables()["one"]


def render() -> str:
    lines = [
        "# edgecal .ecal version-1 known-answer vectors for the C reader; written by make_ecal_vectors.py. Do not edit.",
        "# table NAME RESULT BAD_ENTRY COUNT TABLE_HEX | find NAME KEY_HEX INDEX",
        (
            "# entry NAME INDEX NAME_HEX SCALE_F32 ZERO_POINT DTYPE SCHEME FLAGS AMAX_F64 SAMPLES COUNT ZEROS NANS POSINF"
            " NEGINF MIN_F64 MAX_F64 SCALE_F64 METHOD_JSON_HEX"
        ),
    ]
    good = {}
    for name, data, table in good_records():
        good[name] = data
        lines.append(f"table {name} ok - {len(table)} {data.hex() or '-'}")
        lines += [entry_line(name, i, e) for i, e in enumerate(table.values())]
        lines += finds(name, table)
    for name, data, result, bad in damaged(good):
        lines.append(f"table {name} {result} {'-' if bad is None else bad} 0 {data.hex() or '-'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        same = OUT.exists() and OUT.read_text() == text
        print("ecal_tables.txt is up to date" if same else "ecal_tables.txt differs from make_ecal_vectors.py output")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
