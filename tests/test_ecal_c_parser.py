"""The device-side .ecal reader (firmware_interface/src/ecal_table.c): its known-answer vectors
(written with edgecal's own writer) cannot drift from the format, edgecal's reader agrees with
every verdict in them, and the C reader passes them and a fuzz run under ASan + UBSan."""

from __future__ import annotations

import importlib.util
import random
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from edgecal.errors import InputError, StateError
from edgecal.formats.ecal import FLOAT32_MAX, read_ecal, write_ecal
from edgecal.link.build import ROOT, SANITIZE, WARNINGS, compiler
from edgecal.table import CalibrationTable, TensorCalibration
from link_helpers import freestanding_object

SCRIPT = ROOT / "vectors" / "make_ecal_vectors.py"
VECTORS = ROOT / "vectors" / "ecal_tables.txt"
needs_cc = pytest.mark.skipif(compiler() is None, reason="needs gcc (Debian package gcc) to build firmware_interface")


def load_script():
    spec = importlib.util.spec_from_file_location("make_ecal_vectors", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_lines() -> list[list[str]]:
    return [line.split() for line in VECTORS.read_text().splitlines() if line.startswith("table ")]


def cc(out: Path, *sources: str, sanitize: bool = True) -> Path:
    flags = [*WARNINGS, *(SANITIZE if sanitize else ["-O2"]), f"-I{ROOT / 'include'}"]
    done = subprocess.run([compiler(), *flags, *(str(ROOT / s) for s in sources), "-o", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return out


def test_committed_vectors_are_what_the_script_writes_now():
    assert VECTORS.read_text() == load_script().render()


def test_vectors_cover_the_required_cases():
    verdicts = {fields[1]: fields[2] for fields in table_lines()}
    assert verdicts["appended_entry_fields"] == verdicts["appended_header_fields"] == "ok"
    assert {"short", "magic", "version", "crc", "header", "entry", "name", "code", "value", "gap"} <= set(verdicts.values())
    assert verdicts["name_length_0"] == "name" and verdicts["entry_length_overruns"] == "entry"
    assert verdicts["truncated_last_byte"] == verdicts["crc_flipped"] == "crc" and verdicts["bad_magic"] == "magic"


def test_edgecal_reader_agrees_with_every_vector():
    script = load_script()
    sources = {**script.tables(), "appended_entry_fields": script.tables()["mixed"],
               "appended_header_fields": script.tables()["mixed"],
               "appended_header_and_entry_fields": script.tables()["one"]}  # fmt: skip
    for _, name, result, _, count, hexdata in table_lines():
        data = bytes.fromhex("" if hexdata == "-" else hexdata)
        if result == "ok":
            table = read_ecal(data)
            assert table == sources[name] and len(table) == int(count), name
            continue
        try:
            table = read_ecal(data)
        except StateError:
            continue
        # The Python reader does not re-check the float32 limit of amax; the writer refuses it.
        assert name == "amax_too_large_for_f32", f"edgecal read the damaged table {name}"
        with pytest.raises(InputError, match="normal float32"):
            write_ecal(table)


@needs_cc
def test_c_reader_passes_the_vectors_under_sanitizers(tmp_path):
    exe = cc(tmp_path / "test_ecal_table", "src/ecal_table.c", "tests/test_ecal_table.c")
    done = subprocess.run([str(exe), str(VECTORS)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    tables, checks, failed = (int(w) for w in done.stdout.split()[0:6:2])
    assert tables == len(table_lines()) and checks > 900 and failed == 0, done.stdout


def rounding_cases() -> list[float]:
    """Exact scales whose float32 rounding is delicate, and seeded random ones."""
    rng = random.Random(5)
    ties = [1 + 2**-24, 1 + 3 * 2**-24, 2 - 2**-25, 2 - 2**-24 - 2**-25, 3 * 2**-150 + 2**-126]
    edges = [2.0**-126, FLOAT32_MAX, 1 / 3, 0.1, 2.54 / 127, 1e-30, 1e30]
    spread = [rng.uniform(0.5, 1.0) * 2.0 ** rng.randint(-120, 120) for _ in range(40)]
    return ties + edges + spread


@needs_cc
def test_c_reader_checks_the_float32_scale_is_the_exact_scale_rounded(tmp_path):
    exe = cc(tmp_path / "test_ecal_table", "src/ecal_table.c", "tests/test_ecal_table.c")
    lines = []
    for i, scale in enumerate(rounding_cases()):
        good = write_ecal(CalibrationTable([TensorCalibration("t", 1.0, scale)], created="x", edgecal_version="1"))
        at = 16 + struct.unpack_from("<I", good, 12)[0] + 2  # the float32 scale of the one entry
        bits = struct.unpack_from("<I", good, at)[0]
        lines.append(f"table good{i} ok - 1 {good.hex()}")
        for j, wrong in enumerate((bits - 1, bits + 1)):
            body = good[:at] + struct.pack("<I", wrong) + good[at + 4 : -4]
            lines.append(f"table bad{i}_{j} value 0 0 {(body + struct.pack('<I', zlib.crc32(body))).hex()}")
    (tmp_path / "rounding.txt").write_text("\n".join(lines) + "\n")
    done = subprocess.run([str(exe), str(tmp_path / "rounding.txt")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith(f"{len(lines)} tables"), done.stdout


@needs_cc
def test_c_reader_test_fails_on_a_wrong_expected_value(tmp_path):
    exe = cc(tmp_path / "test_ecal_table", "src/ecal_table.c", "tests/test_ecal_table.c")
    lines = VECTORS.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("entry mixed 1 "))
    fields = lines[at].split()
    fields[5] = "-127"  # the zero point of relu/out is -128
    lines[at] = " ".join(fields)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("\n".join(lines) + "\n")
    done = subprocess.run([str(exe), str(wrong)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "FAIL mixed: zero point" in done.stdout and " 1 failed" in done.stdout


@needs_cc
def test_c_reader_fuzz_harness_under_sanitizers(tmp_path):
    exe = cc(tmp_path / "fuzz_table", "src/ecal_table.c", "tests/fuzz_table.c")
    done = subprocess.run([str(exe), "100000", "7", str(VECTORS)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    inputs, accepted = (int(w) for w in done.stdout.split()[0:3:2])
    assert inputs == 100000 and 0 < accepted < inputs and "no failure" in done.stdout, done.stdout


@needs_cc
def test_c_reader_is_warning_free_heap_free_and_uses_only_memcpy(tmp_path):
    obj, undefined = freestanding_object("ecal_table.c", tmp_path)
    assert undefined == {"memcpy"}, undefined
    use = tmp_path / "use.c"
    use.write_text('#include "ecal_table.h"\nint main(void) { ect_table t; return ect_open(&t, 0, 0) == ECT_E_SHORT ? 0 : 1; }\n')
    done = subprocess.run([compiler(), *WARNINGS, f"-I{ROOT / 'include'}", str(use), str(obj), "-o", str(tmp_path / "u")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert subprocess.run([str(tmp_path / "u")]).returncode == 0
