"""The command line as a user runs it: results, resuming, and every bad-input path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgecal import Calibrator, CalibrationTable, __version__
from edgecal.calibrator import DEFAULT_BINS
from edgecal.methods import DEFAULT_METHOD
from edgecal.cli import files as cli_files
from edgecal.cli import main


def run(*argv: str) -> int:
    return main([str(a) for a in argv])


@pytest.fixture
def acts(tmp_path):
    """Three files of the same two tensors, plus their concatenation for reference."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "acts"
    folder.mkdir()
    parts = []
    for i in range(3):
        conv = np.maximum(rng.standard_normal((2, 4, 8, 8)), 0).astype(np.float32)
        fc = rng.laplace(size=(2, 64)).astype(np.float32)
        np.savez(folder / f"batch{i}.npz", conv=conv, fc=fc)
        parts.append((conv, fc))
    return folder, parts


def reference_table(parts, method=DEFAULT_METHOD):
    cal = Calibrator()
    for conv, fc in parts:
        cal.observe("conv", conv)
        cal.observe("fc", fc)
    return cal.compute(method)


def entries(table: CalibrationTable):
    return [(e.name, e.amax, e.scale, e.stats) for e in table.values()]


def test_calibrate_folder_streams_every_file_into_one_histogram(acts, tmp_path, capsys):
    folder, parts = acts
    out = tmp_path / "t.json"
    assert run("calibrate", folder, "--out", out) == 0
    table = CalibrationTable.load(out)
    assert entries(table) == entries(reference_table(parts))
    assert table["conv"].stats.samples == 3 and table["conv"].stats.count == 3 * 2 * 4 * 8 * 8
    assert f"calibrated 2 tensors from 3 files with {DEFAULT_METHOD}" in capsys.readouterr().out


def test_npy_inputs_are_named_by_stem_and_method_params_apply(tmp_path):
    x = np.random.default_rng(2).standard_normal(5000)
    np.save(tmp_path / "layer.out.npy", x)
    out = tmp_path / "t.json"
    assert run("calibrate", tmp_path / "layer.out.npy", "-o", out, "-m", "percentile", "-p", "percentile=99") == 0
    e = CalibrationTable.load(out)["layer.out"]
    assert e.method == "percentile" and e.params == {"percentile": 99}
    assert e.amax < np.abs(x).max()


def test_fortran_order_and_integer_files_are_read(tmp_path):
    x = np.asfortranarray(np.arange(-50, 70, dtype=np.int16).reshape(8, 15))
    np.save(tmp_path / "q.npy", x)
    assert run("calibrate", tmp_path / "q.npy", "-o", tmp_path / "t.json", "-m", "minmax") == 0
    e = CalibrationTable.load(tmp_path / "t.json")["q"]
    assert (e.amax, e.stats.min, e.stats.max, e.stats.zeros) == (69.0, -50.0, 69.0, 1)


def test_state_resumes_skips_consumed_files_and_matches_one_run(acts, tmp_path, capsys):
    folder, parts = acts
    state = tmp_path / "s.ecst"
    later = folder / "batch2.npz"
    held = tmp_path / "held.npz"
    later.rename(held)
    assert run("calibrate", folder, "-o", tmp_path / "a.json", "--state", state) == 0
    held.rename(later)
    capsys.readouterr()
    assert run("calibrate", folder, "-o", tmp_path / "b.json", "--state", state) == 0
    assert "from 1 files, 2 already in" in capsys.readouterr().out
    assert entries(CalibrationTable.load(tmp_path / "b.json")) == entries(reference_table(parts))
    assert len(Calibrator.load_state(state).consumed) == 3


def test_interrupt_keeps_consistent_state_and_no_table(acts, tmp_path, monkeypatch, capsys):
    folder, parts = acts
    state, out = tmp_path / "s.ecst", tmp_path / "t.json"
    real = cli_files._read_file
    calls = []

    def flaky(path, key, bins):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, key, bins)

    monkeypatch.setattr(cli_files, "_read_file", flaky)
    assert run("calibrate", folder, "-o", out, "--state", state) == 130
    assert not out.exists()
    assert "1 new files kept in" in capsys.readouterr().err
    saved = Calibrator.load_state(state)
    assert len(saved.consumed) == 1 and saved.samples("conv") == 1
    monkeypatch.setattr(cli_files, "_read_file", real)
    assert run("calibrate", folder, "-o", out, "--state", state) == 0
    assert entries(CalibrationTable.load(out)) == entries(reference_table(parts))


def test_export_show_and_merge(acts, tmp_path, capsys):
    folder, parts = acts
    files = sorted(folder.iterdir())
    s1, s2, merged = tmp_path / "1.ecst", tmp_path / "2.ecst", tmp_path / "m.ecst"
    assert run("calibrate", files[0], "-o", tmp_path / "x.json", "--state", s1) == 0
    assert run("calibrate", *files[1:], "-o", tmp_path / "y.json", "--state", s2) == 0
    assert run("merge", s1, s2, "--out", merged) == 0
    assert run("calibrate", folder, "-o", tmp_path / "t.json", "--state", merged) == 0  # all 3 consumed
    assert entries(CalibrationTable.load(tmp_path / "t.json")) == entries(reference_table(parts))
    capsys.readouterr()
    assert run("show", merged) == 0
    shown = capsys.readouterr().out
    assert f"state of 2 tensors, {DEFAULT_BINS} bins, 3 inputs consumed" in shown and "conv" in shown
    assert run("show", tmp_path / "t.json") == 0
    shown = capsys.readouterr().out
    assert "table of 2 tensors" in shown and "fc" in shown and DEFAULT_METHOD in shown


@pytest.mark.parametrize("fmt", ["json", "ecal", "trt", "ncnn", "ort", "c"])
def test_every_format_can_be_written_from_the_cli(acts, tmp_path, fmt):
    folder, _ = acts
    out = tmp_path / "table.out"
    assert run("calibrate", folder, "-o", out, "--format", fmt) == 0
    assert out.stat().st_size > 0


def test_progress_is_silent_when_not_a_terminal(acts, tmp_path, capsys):
    folder, _ = acts
    assert run("calibrate", folder, "-o", tmp_path / "t.json") == 0
    assert "\r" not in capsys.readouterr().err


def test_progress_shows_on_a_terminal(acts, tmp_path, capsys, monkeypatch):
    folder, _ = acts
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert run("calibrate", folder, "-o", tmp_path / "t.json") == 0
    err = capsys.readouterr().err
    assert err.startswith("\r\x1b[Kedgecal: 1/3 files, ") and err.endswith("\r\x1b[K")  # throttled, then cleared
    assert run("calibrate", folder, "-o", tmp_path / "t.json", "--quiet") == 0
    assert "files" not in capsys.readouterr().err


# -- bad input: exit 2, one line, nothing written ---------------------------------------------
def bad_inputs(tmp_path: Path) -> dict[str, tuple[list, str]]:
    (tmp_path / "text.npy").write_text("hello")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.save(tmp_path / "complex.npy", np.array([1 + 1j]))
    np.save(tmp_path / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    np.save(tmp_path / "nan.npy", np.full(5, np.nan, np.float32))
    np.save(tmp_path / "ok.npy", np.ones(4, np.float32))
    whole = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(whole[:-3])
    with zipfile.ZipFile(tmp_path / "nonpy.npz", "w") as zf:
        zf.writestr("readme.txt", "no arrays")
    (tmp_path / "table.txt").write_text("x")
    (tmp_path / "bad.ecst").write_bytes(b"ECST" + bytes(40))
    (tmp_path / "cut.ecst").write_bytes(Calibrator().to_bytes()[:-1])
    (tmp_path / "emptydir").mkdir()
    ok, out = tmp_path / "ok.npy", tmp_path / "out.json"
    return {
        "missing": (["calibrate", tmp_path / "nope.npy", "-o", out], "nope.npy: no such file or folder"),
        "not an array": (["calibrate", tmp_path / "text.npy", "-o", out], "text.npy: not a NumPy array file"),
        "not a zip": (["calibrate", tmp_path / "junk.npz", "-o", out], "junk.npz: not a readable .npz archive"),
        "zip without arrays": (["calibrate", tmp_path / "nonpy.npz", "-o", out], "holds no arrays"),
        "complex": (["calibrate", tmp_path / "complex.npy", "-o", out], "dtype complex128 is not real numbers"),
        "object": (["calibrate", tmp_path / "object.npy", "-o", out], "dtype object is not real numbers"),
        "empty": (["calibrate", tmp_path / "empty.npy", "-o", out], r"tensor 'empty' is empty \(shape \(0, 4\)\)"),
        "all nan": (["calibrate", tmp_path / "nan.npy", "-o", out], r"tensor 'nan': no finite values \(5 NaN"),
        "truncated": (["calibrate", tmp_path / "short.npy", "-o", out], "short.npy: truncated, found 13 bytes of data, expected 16"),
        "unsupported suffix": (["calibrate", tmp_path / "table.txt", "-o", out], r"unsupported input \.txt"),
        "empty folder": (["calibrate", tmp_path / "emptydir", "-o", out], "folder holds no .npy or .npz files"),
        "unknown method": (["calibrate", ok, "-o", out, "-m", "magic"], "unknown method 'magic'; known methods: auto, codebook, kl, kl-mxnet, kl-ncnn, kl-onnxruntime, kl-refine, minmax, mse, percentile"),
        "unknown param": (["calibrate", ok, "-o", out, "-p", "nbins=3"], "has no parameter 'nbins'"),
        "bad param": (["calibrate", ok, "-o", out, "-p", "nbins"], "is not KEY=VALUE"),
        "unknown suffix": (["calibrate", ok, "-o", tmp_path / "t.xyz"], "cannot tell the table format"),
        "unknown option": (["calibrate", ok, "-o", out, "-O", "foo=1"], "format 'json' has no option 'foo'"),
        "foreign state": (["calibrate", ok, "-o", out, "--state", tmp_path / "bad.ecst"], "bad.ecst: state schema 0 is not supported"),
        "truncated state": (["calibrate", ok, "-o", out, "--state", tmp_path / "cut.ecst"], "cut.ecst: state is truncated"),
        "bins vs state": (["calibrate", ok, "-o", out, "--state", tmp_path / "s2.ecst", "--bins", "64"], None),
        "show garbage": (["show", tmp_path / "table.txt"], "cannot tell the table format"),
        "export unreadable format": (["export", tmp_path / "ok.h", "--format", "json", "-o", out], "cannot read table"),
    }


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys):
    cases = bad_inputs(tmp_path)
    # a state with the default bins exists for the --bins mismatch case
    assert run("calibrate", tmp_path / "ok.npy", "-o", tmp_path / "first.json", "--state", tmp_path / "s2.ecst") == 0
    capsys.readouterr()
    cases["bins vs state"] = (cases["bins vs state"][0], f"--bins 64 differs from the {DEFAULT_BINS} bins")
    for label, (argv, msg) in cases.items():
        before = set(os.listdir(tmp_path))
        assert run(*argv) == 2, label
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgecal: error: "), (label, err)
        assert re.search(msg, lines[0]), (label, lines[0])
        assert set(os.listdir(tmp_path)) == before, label  # no output, no temp file


def test_unreadable_file_is_reported(tmp_path, capsys, monkeypatch):
    p = tmp_path / "x.npy"
    np.save(p, np.ones(3))
    real_open = os.open

    def denied(path, flags, *args, **kwargs):
        if os.fspath(path) == str(p):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)  # root could read a chmod 0 file
    assert run("calibrate", p, "-o", tmp_path / "t.json") == 2
    assert f"cannot read array file {p}: Permission denied" in capsys.readouterr().err


def test_merge_of_states_with_different_bins_fails(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.ones(3))
    assert run("calibrate", tmp_path / "a.npy", "-o", tmp_path / "t.json", "--state", tmp_path / "a.ecst", "--bins", "64") == 0
    assert run("calibrate", tmp_path / "a.npy", "-o", tmp_path / "t.json", "--state", tmp_path / "b.ecst", "--bins", "128") == 0
    assert run("merge", tmp_path / "a.ecst", tmp_path / "b.ecst", "-o", tmp_path / "m.ecst") == 2
    assert "64 and 128 bins" in capsys.readouterr().err
    assert not (tmp_path / "m.ecst").exists()


# -- as installed ---------------------------------------------------------------------------------
@pytest.mark.needs_host  # spawns sys.executable
def test_console_script_and_module_entry_points():
    exe = Path(sys.executable).with_name("edgecal")
    for cmd in ([str(exe), "--version"], [sys.executable, "-m", "edgecal", "--version"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == f"edgecal {__version__}"


@pytest.mark.needs_host  # spawns sys.executable
def test_demo_writes_every_format_and_reports_each_method(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "edgecal", "demo", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("conv1_relu", "fc1", "attn_scores", "logits"):
        assert name in done.stdout
    for header in ("amax kl", "amax minmax", "amax percentile", "SQNR kl", "SQNR minmax", f"amax {DEFAULT_METHOD}",
                   f"clipped {DEFAULT_METHOD}"):  # the clipping column is the default method's (the table written)
        assert header in done.stdout
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(["table.json", "table.ecal", "table.cache", "table.table", "table.flatbuffers", "table.h"])
    table = CalibrationTable.load(out / "table.json")
    assert CalibrationTable.load(out / "table.ecal") == table
    assert set(table) == {"conv1_relu", "fc1", "attn_scores", "logits"}


@pytest.mark.needs_host  # spawns sys.executable
def test_output_piped_into_a_reader_that_stops_is_not_an_error(tmp_path):
    cmd = f"'{sys.executable}' -m edgecal demo --out '{tmp_path / 'd'}' | head -n 1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("edgecal demo:") and "Traceback" not in done.stderr
