"""Table formats: golden files, round trips, damage, and decoders written apart from the code.

Expected values come from outside the writers: hand-computed numbers, the real
TensorRT cache lines in tests/golden/real_trt.cache, an ``.ecal`` encoder and a C
parser written here from the layout in ``edgecal.formats.ecal``'s docstring, the
``flatbuffers`` package, and a C compiler reading the generated header.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
import shutil
import struct
import subprocess
import zlib
from fractions import Fraction
from pathlib import Path

import pytest
from golden_table import CREATED, VERSION, from_trt_hex, golden_table
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecal import table as table_module
from edgecal.errors import InputError, StateError
from edgecal.formats import cheader, ecal, ncnn, ort, trt
from edgecal.formats import detect_format, format_names, get_format, load_table, save_table
from edgecal.table import FLAGS, CalibrationTable, TensorCalibration, TensorStats

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
NAN = math.nan


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def table_of(*entries: TensorCalibration) -> CalibrationTable:
    return CalibrationTable(entries, created=CREATED, edgecal_version=VERSION)


@pytest.fixture
def asymmetric(monkeypatch: pytest.MonkeyPatch) -> TensorCalibration:
    """An entry of a scheme other than "symmetric", as a later TFLite scheme will be."""
    monkeypatch.setitem(table_module.SCHEMES, "asymmetric", ("int8", -128, 127))
    return TensorCalibration("asym", amax=2.0, scale=0.01, zero_point=-3, scheme="asymmetric")


# -- hypothesis strategies ---------------------------------------------------------------
NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), min_size=1, max_size=12)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
POSITIVE = st.floats(min_value=1e-30, max_value=1e30)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), FINITE, st.text(max_size=6))
PARAMS = st.dictionaries(st.text(max_size=6), st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=3)
COUNTER = st.integers(0, 2**64 - 1)
STATS = st.builds(TensorStats, *[COUNTER] * 6, st.none() | FINITE, st.none() | FINITE)


@st.composite
def entries(draw: st.DrawFn, name: str) -> TensorCalibration:
    amax = draw(POSITIVE)
    scale = draw(st.just(amax / 127.0) | POSITIVE)
    flags = tuple(draw(st.lists(st.sampled_from(FLAGS), max_size=4)))
    method = draw(st.text(min_size=1, max_size=8))
    return TensorCalibration(name, amax, scale, method=method, params=draw(PARAMS), stats=draw(STATS), flags=flags)


@st.composite
def tables(draw: st.DrawFn) -> CalibrationTable:
    names = draw(st.lists(NAMES, unique=True, max_size=5))
    return CalibrationTable(
        [draw(entries(n)) for n in names],
        created=draw(st.text(min_size=1, max_size=25)),
        edgecal_version=draw(st.text(min_size=1, max_size=8)),
        model_hash=draw(st.none() | st.text(max_size=20)),
    )


# -- registry and golden files -------------------------------------------------------------
def _load_regen():
    spec = importlib.util.spec_from_file_location("regen_golden", HERE.parent / "scripts" / "regen_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REGEN = _load_regen()


def test_formats_are_registered_with_their_suffixes():
    assert format_names() == ["c", "ecal", "json", "ncnn", "ort", "trt"]
    suffixes = {"a.ecal": "ecal", "a.cache": "trt", "a.trt": "trt", "a.table": "ncnn", "a.flatbuffers": "ort"}
    suffixes.update({"a.h": "c", "a.json": "json"})
    assert {path: detect_format(path).name for path in suffixes} == suffixes
    readable = {name for name in format_names() if get_format(name).read is not None}
    assert readable == {"json", "ecal", "trt", "ort"}


@pytest.mark.parametrize("filename", sorted(REGEN.FILES))
def test_writers_reproduce_the_golden_files(filename):
    fmt, options = REGEN.FILES[filename]
    assert get_format(fmt).write(golden_table(), **options) == (GOLDEN / filename).read_bytes(), (
        f"{filename} changed; if on purpose, run scripts/regen_golden.py and review the diff"
    )


def test_regen_script_check_mode_writes_nothing_and_agrees(capsys):
    before = {p.name: p.stat().st_mtime_ns for p in GOLDEN.iterdir()}
    assert REGEN.main(["--check"]) == 0
    assert "0 golden file(s) differ" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in GOLDEN.iterdir()} == before


@pytest.mark.parametrize("filename", ["table.json", "table.ecal"])
def test_exact_golden_files_read_back_to_the_golden_table(filename):
    assert load_table(GOLDEN / filename) == golden_table()


def test_save_and_load_pick_the_format_by_suffix_and_by_content(tmp_path):
    t = golden_table()
    save_table(t, tmp_path / "t.ecal")
    assert (tmp_path / "t.ecal").read_bytes() == (GOLDEN / "table.ecal").read_bytes()
    (tmp_path / "renamed.bin").write_bytes((GOLDEN / "table.ecal").read_bytes())
    assert load_table(tmp_path / "renamed.bin") == t
    (tmp_path / "cache.txt").write_bytes((GOLDEN / "real_trt.cache").read_bytes())
    assert list(load_table(tmp_path / "cache.txt")) == list(load_table(GOLDEN / "real_trt.cache"))
    save_table(t, tmp_path / "t.h", prefix="net")
    assert b"static const float net_scales[NET_NUM_TENSORS]" in (tmp_path / "t.h").read_bytes()
    with pytest.raises(InputError, match="format 'ncnn' can be written but not read"):
        load_table(GOLDEN / "table.table")


def _json_table(fix_crc: bool = True, **changes) -> bytes:
    """The golden JSON table with ``changes``, its crc32 recomputed from the documented canonical form."""
    doc = json.loads((GOLDEN / "table.json").read_bytes())
    doc.update(changes)
    if fix_crc:
        doc.pop("crc32")
        doc["crc32"] = f"{zlib.crc32(compact(doc)):08x}"
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: b"{not json", "not valid JSON"),
        (lambda: b"[1, 2]", "has no crc32 field"),
        (lambda: _json_table(fix_crc=False, model_hash="edited"), "checksum mismatch"),
        (lambda: _json_table(format="other"), "not an edgecal table"),
        (lambda: _json_table(schema=2), "schema 2 is not supported"),
        (lambda: _json_table(tensors=[{"name": "x"}]), "table JSON is malformed"),
        (lambda: _json_table(tensors=[{"name": "x", "amax": 1, "scale": 1, "bogus": 1}]), "unexpected fields"),
    ],
)
def test_damaged_json_table_raises_state_error(make, message):
    assert get_format("json").read(_json_table()) == golden_table()  # the re-checksummed baseline is valid
    with pytest.raises(StateError, match=message):
        get_format("json").read(make())


def test_save_rejects_unknown_formats_and_options(tmp_path):
    accepted = r"accepted: trt_version \(str\), algorithm \(str\)"
    with pytest.raises(InputError, match=r"format 'trt' has no option 'bogus'; " + accepted):
        save_table(golden_table(), tmp_path / "t.cache", bogus=1)
    with pytest.raises(ValueError, match="unknown format 'nope'; known formats: c, ecal, json, ncnn, ort, trt"):
        save_table(golden_table(), tmp_path / "t.cache", format="nope")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("text, expected", [("true", True), ("TRUE", True), ("1", True), ("yes", True),
                                            ("false", False), ("0", False), ("No", False)])
def test_boolean_options_are_read_from_their_documented_spellings(text, expected):
    assert get_format("ncnn").check_options({"skip_unsupported": text}) == {"skip_unsupported": expected}


@pytest.mark.parametrize("fmt, key, value, expected", [
    ("ncnn", "skip_unsupported", "maybe", "expected true or false"),
    ("ncnn", "skip_unsupported", "2", "expected true or false"),
    ("ncnn", "skip_unsupported", 1, "expected true or false"),  # a TOML integer is not a boolean
    ("c", "prefix", 5, "expected text"),
    ("trt", "trt_version", True, "expected text"),
])
def test_options_of_the_wrong_kind_are_refused_naming_option_value_and_kind(tmp_path, fmt, key, value, expected):
    message = f"format '{fmt}' option '{key}': found {value!r}; {expected}"
    with pytest.raises(InputError, match=re.escape(message)):
        save_table(golden_table(), tmp_path / "t", format=fmt, **{key: value})
    assert not list(tmp_path.iterdir())


def test_skip_unsupported_no_means_no(tmp_path):
    t = table_of(TensorCalibration.symmetric("a b", 1.0), TensorCalibration.symmetric("ok", 2.54))
    with pytest.raises(InputError, match="its name contains whitespace"):
        save_table(t, tmp_path / "t.table", skip_unsupported="no")
    save_table(t, tmp_path / "t.table", skip_unsupported="yes")
    assert (tmp_path / "t.table").read_bytes() == b"ok 50\n"


FLOAT32_WRITERS = ("ecal", "trt", "ncnn", "ort", "c")


@pytest.mark.parametrize("fmt", FLOAT32_WRITERS)
@pytest.mark.parametrize("amax", [
    1e300,  # amax/127 and amax overflow float32 (the outside tester's ORT case)
    1e39,  # amax/127 fits, amax does not
    1e-37,  # amax/127 is a float32 subnormal (ncnn's 127/amax fits)
    2.0**-127 * 127,  # scale exactly 2^-127: subnormal
])
def test_every_float32_writer_refuses_values_float32_cannot_hold(tmp_path, fmt, amax):
    t = table_of(TensorCalibration.symmetric("big", amax))
    message = r"^tensor 'big': [a-z0-9/ ]+ \S+ is \S+ in float32; expected a normal float32"
    with pytest.raises(InputError, match=message):
        save_table(t, tmp_path / "t", format=fmt)
    assert not list(tmp_path.iterdir())


def test_the_smallest_normal_float32_scale_is_written_and_json_keeps_any_float64(tmp_path):
    smallest = TensorCalibration("s", 2.0**-126 * 127, 2.0**-126)
    for fmt in ("ecal", "trt", "ort", "c"):
        save_table(table_of(smallest), tmp_path / f"t.{fmt}", format=fmt)
    assert (tmp_path / "t.trt").read_text().splitlines()[1] == "s: 800000"  # float32 bits of 2^-126
    huge = table_of(TensorCalibration.symmetric("big", 1e300))
    save_table(huge, tmp_path / "t.json")
    assert load_table(tmp_path / "t.json")["big"].amax == 1e300


# -- .ecal: an encoder and a C parser written from the docstring -------------------------------
BITS = {"all_zero": 1, "constant": 2, "nonfinite": 4, "fallback": 8}
META = {"created": CREATED, "edgecal_version": VERSION, "model_hash": None}


def compact(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def raw_entry(name=b"t", scale=0.02, *, scale32=None, zp=0, dtype=1, scheme=1, flags=0, amax=2.54, counts=(0,) * 6,
              lo=NAN, hi=NAN, info=b'{"method":"manual","params":{}}', length=None, extra=b""):  # fmt: skip
    body = struct.pack("<fiBBHdB", scale if scale32 is None else scale32, zp, dtype, scheme, flags, amax, len(name))
    body += name + struct.pack("<6Q3dH", *counts, lo, hi, scale, len(info)) + info + extra
    return struct.pack("<H", 2 + len(body) if length is None else length) + body


def raw_ecal(entries, *, meta=None, count=None, version=1, header_extra=b"", gap=b"") -> bytes:
    meta = meta if isinstance(meta, bytes) else compact(META if meta is None else meta)
    count = len(entries) if count is None else count
    head = b"ECAL" + struct.pack("<HHII", version, 16 + len(header_extra), count, len(meta))
    body = head + header_extra + meta + b"".join(entries) + gap
    return body + struct.pack("<I", zlib.crc32(body))


def reference_ecal(table: CalibrationTable) -> bytes:
    out = []
    for e in table.values():
        info = {"method": e.method, "params": e.params}
        s = e.stats
        out.append(raw_entry(e.name.encode(), e.scale, zp=e.zero_point, flags=sum(BITS[f] for f in set(e.flags)),
                             amax=e.amax, counts=(s.samples, s.count, s.zeros, s.nans, s.posinf, s.neginf),
                             lo=NAN if s.min is None else s.min, hi=NAN if s.max is None else s.max,
                             info=compact(info)))  # fmt: skip
    meta = {"created": table.created, "edgecal_version": table.edgecal_version, "model_hash": table.model_hash}
    return raw_ecal(out, meta=meta)


def test_ecal_bytes_follow_the_documented_layout():
    assert ecal.write_ecal(golden_table()) == reference_ecal(golden_table())
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the CRC the docstring names


def test_ecal_flags_are_bits_in_canonical_order():
    e = TensorCalibration.symmetric("t", 1.0, flags=("fallback", "all_zero", "fallback"))
    data = ecal.write_ecal(table_of(e))
    assert data == reference_ecal(table_of(e))
    assert struct.unpack_from("<H", data, 16 + len(compact(META)) + 12)[0] == 1 | 8
    assert ecal.read_ecal(data)["t"].flags == ("all_zero", "fallback")


def test_ecal_keeps_infinite_min_max_and_none():
    stats = TensorStats(count=3, min=-math.inf, max=math.inf)
    t = table_of(TensorCalibration.symmetric("a", 1.0, stats=stats), TensorCalibration.symmetric("b", 1.0))
    assert ecal.read_ecal(ecal.write_ecal(t)) == t


def test_ecal_reader_steps_over_fields_appended_by_later_revisions():
    plain = raw_ecal([raw_entry(), raw_entry(b"u")])
    extended = raw_ecal([raw_entry(extra=b"\x07" * 5), raw_entry(b"u")], header_extra=b"\0" * 8)
    assert ecal.read_ecal(extended) == ecal.read_ecal(plain)


C_ECAL_PARSER = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static unsigned char buf[1 << 16];

static uint32_t rd(const unsigned char *p, int n) {
    uint32_t v = 0;
    while (n-- > 0) v = (v << 8) | p[n];
    return v;
}
static uint64_t rd64(const unsigned char *p) { return ((uint64_t)rd(p + 4, 4) << 32) | rd(p, 4); }
static float f32(const unsigned char *p) { uint32_t u = rd(p, 4); float f; memcpy(&f, &u, 4); return f; }
static double f64(const unsigned char *p) { uint64_t u = rd64(p); double d; memcpy(&d, &u, 8); return d; }
static uint32_t crc32(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    int k;
    while (n--) for (c ^= *p++, k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    return c ^ 0xFFFFFFFFu;
}

int main(int argc, char **argv) {
    FILE *f = fopen(argv[argc - 1], "rb");
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0, p;
    uint32_t i, count;
    if (n < 20 || memcmp(buf, "ECAL", 4) != 0 || rd(buf + 4, 2) != 1) return 2;
    if (crc32(buf, n - 4) != rd(buf + n - 4, 4)) return 3;
    count = rd(buf + 8, 4);
    p = rd(buf + 6, 2) + rd(buf + 12, 4);
    for (i = 0; i < count; i++) {
        const unsigned char *e = buf + p, *t = e + 23 + e[22];
        printf("%.*s|%.9e|%ld|%u|%u|%u|%.17g|%llu|%llu|%llu|%.17g|%.17g|%.17g\n", (int)e[22], (const char *)e + 23,
               (double)f32(e + 2), (long)(int32_t)rd(e + 6, 4), e[10], e[11], (unsigned)rd(e + 12, 2), f64(e + 14),
               (unsigned long long)rd64(t), (unsigned long long)rd64(t + 8), (unsigned long long)rd64(t + 24),
               f64(t + 48), f64(t + 56), f64(t + 64));
        p += rd(e, 2);
    }
    return p == n - 4 ? 0 : 4;
}
"""


def run_c(tmp_path: Path, source: str, *args: str, headers: dict[str, bytes] | None = None) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: the C checks of .ecal and the C header need a C compiler")
    for name, data in (headers or {}).items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "main.c").write_text(source)
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
    build = subprocess.run([gcc, *flags, "-o", str(tmp_path / "main"), str(tmp_path / "main.c")], capture_output=True)
    assert build.returncode == 0, build.stderr.decode()
    run = subprocess.run([str(tmp_path / "main"), *args], capture_output=True, timeout=30)
    assert run.returncode == 0, f"exit {run.returncode}"
    return run.stdout.decode()


@pytest.mark.needs_host  # compiles C with the host gcc
def test_a_c_parser_written_from_the_docstring_reads_the_golden_ecal(tmp_path):
    out = run_c(tmp_path, C_ECAL_PARSER, str(GOLDEN / "table.ecal")).splitlines()
    expected_flags = {"data": 0, "stage 2/conv: relu:0": 0, "größe_出力": 4, "zeros": 1, "input_1:0": 4 | 8}
    expected_flags["q31_carry"] = 2
    assert [line.split("|")[0] for line in out] == list(golden_table())
    for line, e in zip(out, golden_table().values()):
        _, scale32, zp, dtype, scheme, flags, amax, samples, count, nans, lo, hi, scale = line.split("|")
        assert f32(float(scale32)) == f32(e.scale) and float(scale) == e.scale and float(amax) == e.amax
        assert (int(zp), int(dtype), int(scheme), int(flags)) == (0, 1, 1, expected_flags[e.name])
        assert (int(samples), int(count), int(nans)) == (e.stats.samples, e.stats.count, e.stats.nans)
        assert [None if math.isnan(float(v)) else float(v) for v in (lo, hi)] == [e.stats.min, e.stats.max]


@settings(max_examples=150, deadline=None)
@given(tables())
def test_ecal_round_trip_is_exact(t):
    assert ecal.read_ecal(ecal.write_ecal(t)) == t


@settings(max_examples=150, deadline=None)
@given(tables())
def test_json_round_trip_is_exact(t):
    fmt = get_format("json")
    assert fmt.read(fmt.write(t)) == t


def small_ecal() -> bytes:
    stats = TensorStats(1, 4, 1, 0, 0, 0, -1.0, 2.0)
    entry = TensorCalibration.symmetric("x", 2.0, method="kl", params={"bins": 8}, stats=stats)
    return ecal.write_ecal(table_of(entry))


def test_ecal_truncated_at_any_byte_is_rejected():
    data = small_ecal()
    for cut in range(len(data)):
        with pytest.raises(StateError):
            ecal.read_ecal(data[:cut])


def test_ecal_with_any_single_bit_flipped_is_rejected():
    data = small_ecal()
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            with pytest.raises(StateError):
                ecal.read_ecal(bytes(damaged))


def _fix_crc(data: bytes) -> bytes:
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


DAMAGED_ECAL = {
    "magic": (b"ECAX" + raw_ecal([])[4:], "expected magic"),
    "short": (b"ECAL" + b"\0" * 10, "at least 20"),
    "version": (raw_ecal([], version=2), "version 2 is not supported"),
    "crc": (raw_ecal([])[:-1] + bytes([raw_ecal([])[-1] ^ 1]), "checksum mismatch"),
    "header size": (_fix_crc(raw_ecal([])[:6] + b"\x08\x00" + raw_ecal([])[8:]), "header size 8"),
    "metadata beyond end": (_fix_crc(raw_ecal([])[:12] + b"\xff\0\0\0" + raw_ecal([])[16:]), "metadata needs"),
    "metadata not JSON": (raw_ecal([], meta=b"{nope"), "metadata is not"),
    "metadata lacks key": (raw_ecal([], meta={"created": "x", "edgecal_version": "1"}), "metadata is not"),
    "metadata types": (raw_ecal([], meta={**META, "created": 5}), "expected non-empty strings"),
    "count too high": (raw_ecal([raw_entry()], count=2), "entry 1 needs"),
    "entry shorter than fields": (raw_ecal([raw_entry(length=50)]), "length 50 is less"),
    "entry beyond end": (raw_ecal([raw_entry(length=400)]), "entry 0 needs"),
    "json overruns": (raw_ecal([raw_entry(length=99)]), "overruns the entry"),
    "dtype code": (raw_ecal([raw_entry(dtype=9)]), "dtype code 9"),
    "scheme code": (raw_ecal([raw_entry(scheme=0)]), "scheme code 0"),
    "flag bits": (raw_ecal([raw_entry(flags=32)]), "flag bits 0x0020"),
    "f32 scale": (raw_ecal([raw_entry(scale32=0.03)]), "is not the exact scale"),
    "name not UTF-8": (raw_ecal([raw_entry(b"\xff")]), "entry 0 is malformed"),
    "info not JSON": (raw_ecal([raw_entry(info=b"[1")]), "entry 0 is malformed"),
    "info lacks method": (raw_ecal([raw_entry(info=b'{"params":{}}')]), "entry 0 is malformed"),
    "invalid entry": (raw_ecal([raw_entry(amax=-1.0)]), "entry 0 is malformed"),
    "duplicate names": (raw_ecal([raw_entry(), raw_entry()]), "appears twice"),
    "gap before crc": (raw_ecal([raw_entry()], gap=b"\0"), "expected no gap"),
}


def test_the_handmade_ecal_baseline_is_valid():
    t = ecal.read_ecal(raw_ecal([raw_entry(), raw_entry(b"u", counts=(1, 2, 3, 4, 5, 6), lo=-1.0, hi=1.0)]))
    assert t["t"] == TensorCalibration("t", 2.54, 0.02)
    assert t["u"].stats == TensorStats(1, 2, 3, 4, 5, 6, -1.0, 1.0)


@pytest.mark.parametrize("case", sorted(DAMAGED_ECAL))
def test_damaged_ecal_raises_state_error(case):
    data, message = DAMAGED_ECAL[case]
    with pytest.raises(StateError, match=message):
        ecal.read_ecal(data)


def test_ecal_writer_rejects_what_it_cannot_hold(monkeypatch, asymmetric):
    def rejects(entry, message):
        with pytest.raises(InputError, match=message):
            ecal.write_ecal(table_of(entry))

    rejects(TensorCalibration.symmetric("ü" * 128, 1.0), "256 UTF-8 bytes")
    rejects(asymmetric, "scheme asymmetric has no .ecal code")
    rejects(TensorCalibration.symmetric("t", 1.0, stats=TensorStats(min=NAN)), "min/max is NaN")
    rejects(TensorCalibration.symmetric("t", 1.0, params={"x": "y" * 70000}), "at most 65535")
    rejects(TensorCalibration.symmetric("t", 1.0, params={"x": NAN}), "must be JSON values")
    rejects(TensorCalibration.symmetric("t", 1.0, params={"x": {1, 2}}), "must be JSON values")
    rejects(TensorCalibration.symmetric("t", 1.0, stats=TensorStats(count=-1)), "counters are u64")
    rejects(TensorCalibration("t", 1.0, 1e-50), "scale 1e-50 is 0.0 in float32")
    rejects(TensorCalibration("t", 1.0, 1e300), "scale 1e.300 is inf in float32")
    monkeypatch.setattr(table_module, "FLAGS", (*FLAGS, "new_flag"))
    rejects(TensorCalibration.symmetric("t", 1.0, flags=("new_flag",)), "'new_flag' has no .ecal bit")


def test_every_table_flag_has_an_ecal_bit():
    assert set(ecal.FLAG_BITS) == set(FLAGS)


# -- TensorRT caches ---------------------------------------------------------------------
def test_real_tensorrt_cache_reads_as_documented():
    t = load_table(GOLDEN / "real_trt.cache")
    assert list(t) == ["data", "(Unnamed Layer* 64) [Shuffle]_output", "input_1:0", "366"]
    assert t["data"].scale == pytest.approx(0.0078452, rel=1e-5) and t["data"].amax == pytest.approx(0.99634, rel=1e-5)
    assert t["input_1:0"].scale == pytest.approx(0.0078759, rel=1e-5)
    assert struct.pack(">f", t["(Unnamed Layer* 64) [Shuffle]_output"].scale).hex() == "3c56713e"
    assert (t["366"].amax, t["366"].scale, t["366"].flags) == (1.0, 1 / 127, ("all_zero",))
    assert {e.method for e in t.values()} == {"trt-cache"}
    assert t["data"].params == {"trt_version": "8401", "algorithm": "EntropyCalibration2"}


def test_tensorrt_raw_image_input_decode():
    e = trt.read_trt(b"TRT-100300-EntropyCalibration2\r\n\r\nimage: 4000889d\r\n\n")["image"]
    assert e.scale == pytest.approx(2.008338, rel=1e-6) and e.amax == pytest.approx(255.06, rel=1e-4)
    assert e.params["trt_version"] == "100300"


def test_tensorrt_rewrite_reproduces_the_real_lines_except_the_zero():
    real = (GOLDEN / "real_trt.cache").read_text().splitlines()
    again = trt.write_trt(load_table(GOLDEN / "real_trt.cache"), trt_version="8401").decode().splitlines()
    assert again[:-1] == real[:-1] and real[-1] == "366: 0" and again[-1] == "366: 3c010204"


def test_tensorrt_golden_lines_are_the_hand_computed_bit_patterns():
    lines = (GOLDEN / "table.cache").read_text(encoding="utf-8").splitlines()
    # 0.02f = 0x3CA3D70A, 0.05f = 0x3D4CCCCD, (1/127)f = 0x3C010204, 1.0f = 0x3F800000
    assert lines == [
        "TRT-8601-EntropyCalibration2", "data: 3c008912", "stage 2/conv: relu:0: 3ca3d70a", "größe_出力: 3d4ccccd",
        "zeros: 3c010204", "input_1:0: 4000889d", "q31_carry: 3f800000",
    ]  # fmt: skip
    assert trt.scale_hex(from_trt_hex("800000")) == "800000"  # no leading zeros (2^-126, the smallest normal)
    with pytest.raises(InputError, match="expected a normal float32"):
        trt.scale_hex(from_trt_hex("1"))  # a subnormal scale is refused
    back = load_table(GOLDEN / "table.cache")
    assert {n: e.amax for n, e in back.items()} == {n: f32(e.amax / 127) * 127 for n, e in golden_table().items()}


@settings(max_examples=150, deadline=None)
@given(st.lists(NAMES, unique=True, max_size=6), st.data())
def test_tensorrt_round_trip_within_float32(names, data):
    amaxes = [data.draw(POSITIVE) for _ in names]
    t = table_of(*(TensorCalibration.symmetric(n, a) for n, a in zip(names, amaxes)))
    back = trt.read_trt(trt.write_trt(t))
    assert list(back) == names
    for name, amax in zip(names, amaxes):
        assert abs(back[name].amax - amax) <= amax * (2**-24 + 2**-52)
        assert back[name].amax == f32(amax / 127) * 127


@pytest.mark.parametrize(
    "text, message",
    [
        (b"", "line 1: found ''"),
        (b"TRT8601-EntropyCalibration2\n", "line 1"),
        (b"TRT-8601-EntropyCalibration2\na: 3c\nno separator\n", "line 3: found 'no separator'"),
        (b"TRT-8601-EntropyCalibration2\n: 3c010204\n", "line 2"),
        (b"TRT-8601-EntropyCalibration2\na: 3g\n", "line 2"),
        (b"TRT-8601-EntropyCalibration2\na: 123456789\n", "line 2"),
        (b"TRT-8601-EntropyCalibration2\na: bf800000\n", "line 2: bf800000 is float32 -1.0"),
        (b"TRT-8601-EntropyCalibration2\na: 7fc00000\n", "line 2: 7fc00000 is float32 nan"),
        (b"TRT-8601-EntropyCalibration2\na: 7f800000\n", "line 2: 7f800000 is float32 inf"),
        (b"TRT-8601-EntropyCalibration2\na: 3c\na: 3c\n", "line 3: tensor 'a' appears twice"),
        (b"TRT-8601-EntropyCalibration2\n\xff: 3c\n", "not UTF-8 text"),
    ],
)
def test_damaged_tensorrt_cache_raises_state_error(text, message):
    with pytest.raises(StateError, match=message):
        trt.read_trt(text)


def test_tensorrt_writer_rejects_bad_options_and_values(asymmetric):
    t = table_of(TensorCalibration.symmetric("a", 1.0))
    out = trt.write_trt(t, trt_version=100300, algorithm="MinMaxCalibration")
    assert out.startswith(b"TRT-100300-MinMaxCalibration\n")
    for options in ({"trt_version": "8.6"}, {"trt_version": "८६"}, {"algorithm": "Entropy-2"}, {"algorithm": ""}):
        with pytest.raises(InputError, match="expected trt_version of digits"):
            trt.write_trt(t, **options)
    with pytest.raises(InputError, match="'asym': scheme 'asymmetric'"):
        trt.write_trt(table_of(asymmetric))
    for amax in (1e-50, 1e300):
        with pytest.raises(InputError, match="tensor 'tiny_or_huge'"):
            trt.write_trt(table_of(TensorCalibration.symmetric("tiny_or_huge", amax)))


# -- ncnn -----------------------------------------------------------------------------------
def ncnn_reads(text: str) -> dict[str, list[float]]:
    """What ncnn2int8 reads from a table: strtok at ' ', a %255s key, %f values (float32)."""
    blobs = {}
    for line in text.splitlines():
        key, *values = [tok for tok in line.split(" ") if tok]
        blobs[key.split()[0][:255]] = [f32(float(v)) for v in values]
    return blobs


def test_ncnn_golden_values_are_127_over_amax():
    read = ncnn_reads((GOLDEN / "table.table").read_text(encoding="utf-8"))
    assert read == {  # "stage 2/conv: relu:0" has spaces: left out (the golden file uses skip_unsupported)
        "data": [f32(127 / from_trt_hex("3c008912"))],
        "größe_出力": [20.0],
        "zeros": [127.0],
        "input_1:0": [f32(127 / from_trt_hex("4000889d"))],
        "q31_carry": [1.0],
    }
    assert read["data"][0] == pytest.approx(1 / 0.0078452, rel=1e-5)


NCNN_NAMES = st.text(st.characters(categories=("L", "N")) | st.sampled_from("_:/.-[]"), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(NCNN_NAMES.filter(lambda n: "_param_" not in n), POSITIVE, min_size=1, max_size=6))
def test_ncnn_reads_back_float32_of_127_over_amax(amaxes):
    t = table_of(*(TensorCalibration.symmetric(n, a) for n, a in amaxes.items()))
    assert ncnn_reads(ncnn.write_ncnn(t).decode()) == {n: [f32(127 / a)] for n, a in amaxes.items()}


@pytest.mark.parametrize(
    "name, why",
    [("a b", "whitespace"), ("a\tb", "whitespace"), ("conv1_param_0", "_param_"), ("x" * 256, "255 bytes")],
)
def test_ncnn_names_it_cannot_read_back_raise_or_are_skipped(name, why, caplog):
    t = table_of(TensorCalibration.symmetric(name, 1.0), TensorCalibration.symmetric("ok", 2.54))
    with pytest.raises(InputError, match=f"{why}.*skip_unsupported=True"):
        ncnn.write_ncnn(t)
    with caplog.at_level(logging.WARNING, logger="edgecal"):
        assert ncnn.write_ncnn(t, skip_unsupported=True) == b"ok 50\n"
    assert "left out" in caplog.text and why in caplog.text


def test_ncnn_writer_rejects_empty_results_and_unwritable_values(asymmetric):
    with pytest.raises(InputError, match=r"no tensor of the table can be written .*\(1 in the table\)"):
        ncnn.write_ncnn(table_of(TensorCalibration.symmetric("a b", 1.0)), skip_unsupported=True)
    with pytest.raises(InputError, match="'asym': scheme 'asymmetric'"):
        ncnn.write_ncnn(table_of(asymmetric))
    for amax, rounded in ((1e-40, "inf"), (1e300, "0.0")):
        with pytest.raises(InputError, match=f"ncnn scale 127/amax .* is {rounded} in float32"):
            ncnn.write_ncnn(table_of(TensorCalibration.symmetric("t", amax)))


# -- ONNX Runtime FlatBuffers ------------------------------------------------------------
def fb_decode(buf: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs of a TrtTable, decoded with the flatbuffers package."""
    flatbuffers = pytest.importorskip("flatbuffers", reason="the ORT table cross-check needs the flatbuffers package")
    from flatbuffers.table import Table

    t = Table(bytearray(buf), flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))
    o = t.Offset(4)
    pairs = []
    for j in range(t.VectorLen(o)):
        kv = Table(t.Bytes, t.Indirect(t.Vector(o) + 4 * j))
        pairs.append((bytes(kv.String(kv.Offset(4) + kv.Pos)), bytes(kv.String(kv.Offset(6) + kv.Pos))))
    return pairs


def fb_encode(pairs, with_dict: bool = True) -> bytes:
    """A TrtTable built with the flatbuffers package, the way ONNX Runtime builds it; None leaves a field out."""
    flatbuffers = pytest.importorskip("flatbuffers", reason="the ORT table cross-check needs the flatbuffers package")
    b = flatbuffers.Builder(0)
    tables = []
    for key, value in pairs:
        k, v = (None if s is None else b.CreateString(s) for s in (key, value))
        b.StartObject(2)
        for slot, offset in ((0, k), (1, v)):
            if offset is not None:
                b.PrependUOffsetTRelativeSlot(slot, offset, 0)
        tables.append(b.EndObject())
    if with_dict:
        b.StartVector(4, len(tables), 4)
        for offset in reversed(tables):
            b.PrependUOffsetTRelative(offset)
        vector = b.EndVector()
    b.StartObject(1)
    if with_dict:
        b.PrependUOffsetTRelativeSlot(0, vector, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


def test_ort_golden_file_decodes_with_the_flatbuffers_package():
    pairs = fb_decode((GOLDEN / "table.flatbuffers").read_bytes())
    assert [k for k, _ in pairs] == [b"data", "größe_出力".encode(), b"input_1:0", b"q31_carry",
                                     b"stage 2/conv: relu:0", b"zeros"]  # fmt: skip
    values = dict(pairs)
    assert values[b"zeros"] == b"1.0" and values[b"stage 2/conv: relu:0"] == b"2.54"
    assert values["größe_出力".encode()] == b"6.35"
    assert float(values[b"data"]) == pytest.approx(0.99634, rel=1e-5)
    back = ort.read_ort((GOLDEN / "table.flatbuffers").read_bytes())
    assert {n: e.amax for n, e in back.items()} == {n: e.amax for n, e in golden_table().items()}
    assert {e.method for e in back.values()} == {"ort-table"}


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(NAMES, POSITIVE, max_size=6))
def test_ort_round_trip_is_exact_and_flatbuffers_agrees(amaxes):
    data = ort.write_ort(table_of(*(TensorCalibration.symmetric(n, a) for n, a in amaxes.items())))
    expected = sorted((n.encode(), repr(a).encode()) for n, a in amaxes.items())
    assert fb_decode(data) == expected
    assert {n: e.amax for n, e in ort.read_ort(data).items()} == amaxes


def test_ort_reader_reads_what_the_flatbuffers_builder_makes():
    data = fb_encode([(b"z", b"2.5"), ("größe".encode(), b"1e-05"), (b"a", b"3")])
    t = ort.read_ort(data)
    assert [(n, e.amax, e.method) for n, e in t.items()] == [("z", 2.5, "ort-table"), ("größe", 1e-05, "ort-table"),
                                                              ("a", 3.0, "ort-table")]  # fmt: skip
    assert len(ort.read_ort(fb_encode([], with_dict=False))) == 0


def test_ort_table_decodes_with_onnxruntimes_generated_classes():
    reason = "onnxruntime (with onnx, as in the bench extra) is not installed"
    trt_table = pytest.importorskip("onnxruntime.quantization.CalTableFlatBuffers.TrtTable", reason=reason)
    key_value = pytest.importorskip("onnxruntime.quantization.CalTableFlatBuffers.KeyValue", reason=reason)
    data = (GOLDEN / "table.flatbuffers").read_bytes()
    t = trt_table.TrtTable.GetRootAs(bytearray(data), 0)
    pairs = []
    for j in range(t.DictLength()):
        try:
            kv = t.Dict(j)
        except ModuleNotFoundError:  # older generated code imports a top-level "CalTableFlatBuffers" package
            kv = key_value.KeyValue()
            kv.Init(t._tab.Bytes, t._tab.Indirect(t._tab.Vector(t._tab.Offset(4)) + 4 * j))
        pairs.append((bytes(kv.Key()), bytes(kv.Value())))
    assert pairs == fb_decode(data)


def test_ort_reads_the_files_onnxruntime_writes(tmp_path, monkeypatch):
    reason = "onnxruntime (with onnx, as in the bench extra) is not installed"
    calibrate = pytest.importorskip("onnxruntime.quantization.calibrate", reason=reason)
    quant_utils = pytest.importorskip("onnxruntime.quantization.quant_utils", reason=reason)
    np = pytest.importorskip("numpy")
    cache = {
        "b": calibrate.TensorData(lowest=np.array(-5.0, np.float32), highest=np.array(2.0, np.float32)),
        "a": calibrate.TensorData(lowest=np.array(-1.0, np.float32), highest=np.array(2.5, np.float32)),  # 0-d arrays: ORT 1.23 cannot write float32 scalars
    }
    monkeypatch.chdir(tmp_path)
    quant_utils.write_calibration_table(cache)
    t = ort.read_ort((tmp_path / "calibration.flatbuffers").read_bytes())
    # ORT writes the dict in descending key order, and max(highest, lowest) = 2.0 for "b", not max |x| = 5.0
    assert [(n, e.amax) for n, e in t.items()] == [("b", 2.0), ("a", 2.5)]


def test_ort_truncation_and_bit_flips_never_escape_as_other_errors():
    t = table_of(TensorCalibration.symmetric("conv", 2.54), TensorCalibration.symmetric("x", 1.0))
    data = ort.write_ort(t)
    assert data.endswith(b"\x03\0\0\x001.0\0")  # the last string needs no padding, so every cut loses data
    for cut in range(len(data)):
        with pytest.raises(StateError):
            ort.read_ort(data[:cut])
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            try:
                assert isinstance(ort.read_ort(bytes(damaged)), CalibrationTable)
            except StateError:
                pass


def _no_terminator() -> bytes:
    data = bytearray(ort.write_ort(table_of(TensorCalibration.symmetric("k", 1.0))))
    assert data[48:54] == b"\x01\0\0\0k\0"  # strings start after 28 + 4 + 4 + 12 bytes
    data[53] = ord("x")
    return bytes(data)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: b"", "root offset at byte 0 lies outside the 0-byte buffer"),
        (lambda: struct.pack("<I", 1000), "dict table at byte 1000 lies outside"),
        (lambda: fb_encode([(b"a", None)]), r"dict\[0\] lacks its key or value"),
        (lambda: fb_encode([(None, b"1.0")]), r"dict\[0\] lacks its key or value"),
        (lambda: fb_encode([(b"a", b"1"), (b"a", b"2")]), "tensor 'a' appears twice"),
        (lambda: fb_encode([(b"\xff", b"1")]), r"dict\[0\].key at byte \d+ is not UTF-8"),
        (_no_terminator, "has no NUL terminator"),
        *[
            (lambda v=v: fb_encode([(b"a", v)]), "expected a one-line name and a decimal amax > 0")
            for v in (b"abc", b"-1", b"0", b"nan", b"inf", b"1e999", b"1_0", b" 1", b"")
        ],
        (lambda: fb_encode([(b"", b"1")]), "expected a one-line name"),
        (lambda: fb_encode([(b"a\nb", b"1")]), "expected a one-line name"),
    ],
)
def test_damaged_ort_table_raises_state_error(make, message):
    with pytest.raises(StateError, match=message):
        ort.read_ort(make())


def test_ort_writer_rejects_other_schemes(asymmetric):
    with pytest.raises(InputError, match="'asym': scheme 'asymmetric'; ORT tables hold symmetric int8 only"):
        ort.write_ort(table_of(asymmetric))


# -- C header --------------------------------------------------------------------------------
def q31(scale: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier, plainly: frexp, exact rounding half away from zero, carry."""
    mantissa, shift = math.frexp(scale)
    multiplier = math.floor(Fraction(mantissa) * 2**31 + Fraction(1, 2))
    if multiplier == 2**31:
        return 2**30, shift + 1
    return multiplier, shift


def test_quantize_multiplier_known_answers():
    assert cheader.quantize_multiplier(0.02) == (1374389535, -5)  # 0.64 * 2**31 = 1374389534.72, 0.02 = 0.64 * 2**-5
    assert cheader.quantize_multiplier(3.0) == (3 * 2**29, 2)  # 0.75 * 2**2
    assert cheader.quantize_multiplier(0.5 + 2**-32) == (2**30 + 1, 0)  # a tie: away from zero, not to even
    assert cheader.quantize_multiplier(1 - 2**-40) == (2**30, 1)  # rounds up to 2**31: halved, shift + 1


@settings(max_examples=300, deadline=None)
@given(POSITIVE)
def test_quantize_multiplier_matches_the_plain_definition(scale):
    multiplier, shift = cheader.quantize_multiplier(scale)
    assert (multiplier, shift) == q31(scale)
    assert 2**30 <= multiplier < 2**31
    assert abs(Fraction(multiplier) * Fraction(2) ** (shift - 31) - Fraction(scale)) <= Fraction(scale) * 2**-31


def test_macro_names_are_sanitized_and_disambiguated_in_order():
    names = ["a:b", "a_b", "A-B", "a_b_2", "größe", "9x"]
    assert cheader.macro_names(names) == ["A_B", "A_B_2", "A_B_3", "A_B_2_2", "GR__E", "9X"]


SECOND = [
    TensorCalibration.symmetric("a:b", 2.54),
    TensorCalibration("a_b", amax=1.0, scale=0.5 + 2**-32),
    TensorCalibration.symmetric('Q"\\??(', 3.0 * 127),
    TensorCalibration.symmetric("a_b_2", 1.0),
    TensorCalibration.symmetric("tab\there\x01", 0.001),
    TensorCalibration.symmetric("x/*y*/", 1.0),  # must not open or close the comment after its index macro
]

C_HEADER_PROGRAM = r"""
#include <stdio.h>
#include "table.h"
#include "second.h"

static void dump(const char *const *names, const float *scales, const int32_t *zero_points,
                 const int32_t *multipliers, const int *shifts, int n) {
    int i;
    for (i = 0; i < n; i++)
        printf("%s|%.9e|%ld|%ld|%d\n", names[i], (double)scales[i], (long)zero_points[i],
               (long)multipliers[i], shifts[i]);
}

int main(void) {
    printf("%d|%lu|%d\n", EDGECAL_TABLE_VERSION, (unsigned long)EDGECAL_TABLE_CRC32, EDGECAL_NUM_TENSORS);
    printf("%d %d %d %d %d %d\n", EDGECAL_T_DATA, EDGECAL_T_STAGE_2_CONV__RELU_0, EDGECAL_T_GR__E___, EDGECAL_T_ZEROS,
           EDGECAL_T_INPUT_1_0, EDGECAL_T_Q31_CARRY);
    dump(edgecal_names, edgecal_scales, edgecal_zero_points, edgecal_multipliers, edgecal_shifts, EDGECAL_NUM_TENSORS);
    printf("%d|%lu|%d\n", SECOND_TABLE_VERSION, (unsigned long)SECOND_TABLE_CRC32, SECOND_NUM_TENSORS);
    printf("%d %d %d %d %d %d\n", SECOND_T_A_B, SECOND_T_A_B_2, SECOND_T_Q_____, SECOND_T_A_B_2_2, SECOND_T_TAB_HERE_,
           SECOND_T_X__Y__);
    dump(second_names, second_scales, second_zero_points, second_multipliers, second_shifts, SECOND_NUM_TENSORS);
    return 0;
}
"""


@pytest.mark.needs_host  # compiles C with the host gcc
def test_c_header_compiles_and_holds_the_table(tmp_path):
    second = table_of(*SECOND)
    headers = {"table.h": (GOLDEN / "table.h").read_bytes(), "second.h": cheader.write_c(second, prefix="second")}
    lines = run_c(tmp_path, C_HEADER_PROGRAM, headers=headers).split("\n")
    golden_ecal = (GOLDEN / "table.ecal").read_bytes()
    assert lines[0] == f"1|{zlib.crc32(golden_ecal[:-4])}|6" and lines[1] == "0 1 2 3 4 5"
    assert lines[8] == f"1|{zlib.crc32(reference_ecal(second)[:-4])}|6" and lines[9] == "0 1 2 3 4 5"
    assert len(lines) == 17 and lines[16] == ""
    for line, e in zip(lines[2:8] + lines[10:16], [*golden_table().values(), *SECOND]):
        name, scale, zero_point, multiplier, shift = line.split("|")
        assert name == e.name and f32(float(scale)) == f32(e.scale) and int(zero_point) == 0
        assert (int(multiplier), int(shift)) == q31(e.scale)
    assert lines[10].split("|")[3:] == ["1374389535", "-5"] and lines[11].split("|")[3:] == ["1073741825", "0"]
    assert lines[7].split("|")[3:] == ["1073741824", "1"]  # q31_carry: 1 - 2**-40 carries to 2**30, shift 1


def test_c_header_writer_rejects_what_c_cannot_hold(asymmetric):
    t = table_of(TensorCalibration.symmetric("a", 1.0))
    for prefix in ("9x", "a-b", "", 5):
        with pytest.raises(InputError, match="expected a C identifier"):
            cheader.write_c(t, prefix=prefix)
    with pytest.raises(InputError, match="expected at least one tensor"):
        cheader.write_c(table_of())
    with pytest.raises(InputError, match="'asym': scheme 'asymmetric'; C headers"):
        cheader.write_c(table_of(asymmetric))
    with pytest.raises(InputError, match="name contains NUL"):
        cheader.write_c(table_of(TensorCalibration.symmetric("a\0b", 1.0)))
    with pytest.raises(InputError, match="scale 1e-50 is 0.0 in float32"):
        cheader.write_c(table_of(TensorCalibration("a", 1.0, 1e-50)))


def test_json_refuses_params_that_are_not_json(tmp_path):
    e = TensorCalibration.symmetric("t", 1.0, params={"x": math.nan})
    with pytest.raises(InputError, match="table cannot be written as JSON"):
        table_of(e).save(tmp_path / "t.json")
    assert list(tmp_path.iterdir()) == []
