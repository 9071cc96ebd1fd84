"""Every kind of hostile input to the CLI: exit 2, one `edgecal: error:` line, no output file, no hang."""

from __future__ import annotations

import io
import os
import re
import signal
import stat
import zipfile

import numpy as np
import pytest

from crafted_files import corrupt_deflate, histogram_bytes, npy_bytes, npz_bytes, patch_zip_headers, state_bytes
from edgecal import histogram
from edgecal.cli import main


def npy_of(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


HEAD = "{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}"


def make_files(d) -> None:
    """The hostile inputs, all in folder ``d``."""
    good = npy_of(np.arange(8, dtype=np.float32))
    plain = npz_bytes([("x.npy", good)])
    mismatch = bytearray(plain)
    mismatch[30:31] = b"y"
    files = {
        "good.npy": good,
        "mismatch.npz": bytes(mismatch),
        "deflate.npz": corrupt_deflate(np.random.default_rng(0).standard_normal(5000)),
        "encrypted.npz": patch_zip_headers(plain, flag_bits=1),
        "method.npz": patch_zip_headers(plain, method=99),
        "duplicate.npz": npz_bytes([("x.npy", good), ("x.npy", good)]),
        "huge.npz": npz_bytes([("x.npy", npy_bytes(HEAD.format("(4,)"), bytes(16), (2, 0), 1 << 30))],
                              zipfile.ZIP_DEFLATED),
        "long.npy": npy_bytes(HEAD.format("(4,)") + " " * 20000, bytes(16)),
        "negative.npy": npy_bytes(HEAD.format("(-4,)"), bytes(16)),
        "object.npy": npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", bytes(8)),
        "liar.npy": npy_bytes(HEAD.format("(1099511627776,)"), bytes(16)),
        "nested.json": b"[" * 200000,
        "digits.json": b'{"crc32": ' + b"9" * 5000 + b"}",
        "minmax.ecst": state_bytes(16, [("a", 1, histogram_bytes(16, 2, [0, 0, 1], [], 0, 1.0, 0.5))]),
        "claims.ecst": state_bytes(1 << 24, [], count=8),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    os.mkfifo(d / "pipe")
    os.mkfifo(d / "pipe.npy")
    (d / "folder.json").mkdir()
    (d / "plainfile").write_bytes(b"x")
    if os.geteuid() == 0:
        os.mknod(d / "device.json", 0o600 | stat.S_IFCHR, os.makedev(1, 7))  # a private /dev/full
    else:
        os.mkfifo(d / "device.json")


CASES = {
    "damaged zip member": (["calibrate", "mismatch.npz", "-o", "out.json"], r"not a readable .npz archive"),
    "corrupt deflate": (["calibrate", "good.npy", "deflate.npz", "-o", "out.json"], r"deflate.npz\[x.npy\]: damaged"),
    "encrypted member": (["calibrate", "encrypted.npz", "-o", "out.json"], r"encrypted member"),
    "unknown compression": (["calibrate", "method.npz", "-o", "out.json"], r"compression method 99"),
    "duplicate members": (["calibrate", "duplicate.npz", "-o", "out.json"], r"a second member of this name"),
    "huge header": (["calibrate", "huge.npz", "-o", "out.json"], r"header of 1073741824 bytes"),
    "long header": (["calibrate", "long.npy", "-o", "out.json"], r"long.npy: .npy header of \d+ bytes; expected at "
                                                                 r"most 10000"),
    "negative dims": (["calibrate", "negative.npy", "-o", "out.json"], r"non-negative integers"),
    "pickle": (["calibrate", "object.npy", "-o", "out.json"], r"dtype object is not real numbers"),
    "header claims a terabyte": (["calibrate", "liar.npy", "-o", "out.json"], r"truncated, found 16 bytes"),
    "fifo input": (["calibrate", "pipe.npy", "-o", "out.json"], r"pipe.npy: not a regular file or folder"),
    "nested json show": (["show", "nested.json"], r"nested too deeply"),
    "nested json export": (["export", "nested.json", "-o", "out.ecal"], r"nested too deeply"),
    "4300 digits": (["show", "digits.json"], r"not valid JSON"),
    "inconsistent state show": (["show", "minmax.ecst"], r"min > max"),
    "inconsistent state merge": (["merge", "minmax.ecst", "minmax.ecst", "-o", "out.ecst"], r"min > max"),
    "inconsistent state resume": (["calibrate", "good.npy", "--state", "minmax.ecst", "-o", "out.json"], r"min > max"),
    "state claiming gigabytes": (["show", "claims.ecst"], r"max_memory"),
    "fifo show": (["show", "pipe"], r"pipe: it is a FIFO; expected a regular file"),
    "fifo state": (["calibrate", "good.npy", "--state", "pipe", "-o", "out.json"], r"pipe: it is a FIFO"),
    "dev zero show": (["show", "/dev/zero"], r"/dev/zero: it is a character device"),
    "dev zero merge": (["merge", "/dev/zero", "-o", "out.ecst"], r"/dev/zero: it is a character device"),
    "out a folder": (["calibrate", "good.npy", "-o", "folder.json"], r"folder.json: it is a folder"),
    "out in a missing folder": (["calibrate", "good.npy", "-o", "nope/out.json"], r"folder .*nope does not exist"),
    "out under a file": (["calibrate", "good.npy", "-o", "plainfile/out.json"], r"Not a directory"),
    "out a device": (["calibrate", "good.npy", "-o", "device.json"], r"device.json: it is a (character device|FIFO)"),
    "merge out a folder": (["merge", "claims.ecst", "-o", "folder.json"], r"max_memory|it is a folder"),
    "export out a fifo": (["export", "digits.json", "-o", "pipe"], r"not valid JSON|it is a FIFO"),
}


@pytest.fixture
def no_hang():
    def stuck(signum, frame):
        raise TimeoutError("the command blocked")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _listing(d) -> dict:
    return {p.name: (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns) for p in d.iterdir()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_exits_2_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, no_hang, case):
    if case.startswith("dev zero") and not os.path.exists("/dev/zero"):
        pytest.skip("needs /dev/zero")
    make_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv, match = CASES[case]
    before = _listing(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgecal: error: "), captured.err
    assert re.search(match, lines[0]), lines[0]
    assert "Traceback" not in captured.err and "allow_pickle" not in captured.err and captured.out == ""
    assert _listing(tmp_path) == before


def _counting_updates(monkeypatch) -> list:
    calls: list = []
    real = histogram.StreamingHistogram.update

    def counted(self, x):
        calls.append(1)
        return real(self, x)

    monkeypatch.setattr(histogram.StreamingHistogram, "update", counted)
    return calls


@pytest.mark.parametrize("problem", ["bad last input", "out missing folder", "out a folder", "state missing folder"])
def test_calibrate_reports_a_bad_last_input_or_output_before_ingesting_anything(tmp_path, monkeypatch, capsys,
                                                                                 problem):
    for i in range(3):
        np.save(tmp_path / f"a{i}.npy", np.arange(100.0) + i)
    (tmp_path / "dir.json").mkdir()
    inputs = [str(tmp_path / f"a{i}.npy") for i in range(3)]
    out, extra = str(tmp_path / "t.json"), []
    if problem == "bad last input":
        (tmp_path / "z.npy").write_bytes(npy_bytes(HEAD.format("(-1,)"), bytes(4)))
        inputs.append(str(tmp_path / "z.npy"))
    elif problem == "out missing folder":
        out = str(tmp_path / "missing" / "t.json")
    elif problem == "out a folder":
        out = str(tmp_path / "dir.json")
    else:
        extra = ["--state", str(tmp_path / "missing" / "s.ecst")]
    calls = _counting_updates(monkeypatch)
    assert main(["calibrate", *inputs, "-o", out, *extra]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1
    assert calls == []


def test_a_state_written_before_inodes_were_part_of_the_identity_still_resumes(tmp_path, capsys):
    from edgecal import Calibrator

    np.save(tmp_path / "a.npy", np.arange(10.0))
    state, out = tmp_path / "s.ecst", tmp_path / "t.json"
    assert main(["calibrate", str(tmp_path / "a.npy"), "--state", str(state), "-o", str(out)]) == 0
    cal = Calibrator.load_state(state)
    st = os.stat(tmp_path / "a.npy")
    cal.consumed = {f"{(tmp_path / 'a.npy').resolve()}|{st.st_size}|{st.st_mtime_ns}"}  # the old key format
    cal.save_state(state)
    capsys.readouterr()
    assert main(["calibrate", str(tmp_path / "a.npy"), "--state", str(state), "-o", str(out)]) == 0
    assert "from 0 files, 1 already in" in capsys.readouterr().out
    assert Calibrator.load_state(state).stats("a.npy".removesuffix(".npy")).count == 10
