"""The command line against an outside tester's findings: typed options, unsafe text, naming, export of states."""

from __future__ import annotations

import numpy as np
import pytest

from edgecal import CalibrationTable
from edgecal.cli import main


def run(*argv: object) -> int:
    return main([str(a) for a in argv])


@pytest.fixture
def npy(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(3).standard_normal(4000).astype(np.float32))
    return tmp_path / "x.npy"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edgecal: error: "), err
    return err


@pytest.mark.parametrize("argv, message", [
    (["-O", "skip_unsupported=maybe", "-o", "t.table"],
     "format 'ncnn' option 'skip_unsupported': found 'maybe'; expected true or false (or 1/0, yes/no)"),
    (["-m", "percentile", "-p", "percentile=true", "-o", "t.json"],
     "method 'percentile' parameter 'percentile': found 'true'; expected a finite number"),
    (["-m", "percentile", "-p", "percentile=NaN", "-o", "t.json"],
     "method 'percentile' parameter 'percentile': found 'NaN'; expected a finite number"),
    (["-m", "kl", "-p", "num_levels=256.0", "-o", "t.json"],
     "method 'kl' parameter 'num_levels': found '256.0'; expected an integer"),
    (["-m", "mse", "-p", "clip_weight=1e400", "-o", "t.json"],
     "method 'mse' parameter 'clip_weight': found '1e400'; expected a finite number"),
])
def test_mistyped_options_and_parameters_are_one_line_and_write_nothing(tmp_path, npy, capsys, argv, message):
    argv = [str(tmp_path / a) if a.startswith("t.") else a for a in argv]
    assert run("calibrate", npy, *argv) == 2
    assert message in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_parameters_keep_their_kind(tmp_path, npy):
    assert run("calibrate", npy, "-o", tmp_path / "t.json", "-m", "kl", "-p", "num_levels=256") == 0
    params = CalibrationTable.load(tmp_path / "t.json")["x"].params
    assert params["num_levels"] == 256 and type(params["num_levels"]) is int
    assert run("calibrate", npy, "-o", tmp_path / "p.json", "-m", "percentile", "-p", "percentile=99") == 0
    params = CalibrationTable.load(tmp_path / "p.json")["x"].params
    assert params == {"percentile": 99.0} and type(params["percentile"]) is float


def test_skip_unsupported_false_spellings_do_not_skip(tmp_path, capsys):
    np.save(tmp_path / "a b.npy", np.arange(1.0, 9.0))
    assert run("calibrate", tmp_path / "a b.npy", "-o", tmp_path / "t.table", "-m", "minmax", "-O", "skip_unsupported=no") == 2
    assert "its name contains whitespace" in one_error_line(capsys)
    assert run("calibrate", tmp_path / "a b.npy", "-o", tmp_path / "t.table", "-m", "minmax", "-O", "skip_unsupported=yes") == 2
    assert "no tensor of the table can be written" in capsys.readouterr().err  # skipped, so none is left


FORGED = "x\x1b[2J\nedgecal: error: forged"
ESCAPED = "x\\x1b[2J\\nedgecal: error: forged"


def no_raw_control(text: str) -> None:
    assert "\x1b" not in text and "\r" not in text
    assert not any(line.startswith("edgecal: error: forged") for line in text.splitlines())


def test_a_forged_tensor_name_shows_escaped(tmp_path, capsys):
    # tables and states refuse a newline in a name; a carriage return still returns to the line start
    name = "x\x1b[2J\redgecal: error: forged"
    np.savez(tmp_path / "a.npz", **{name: np.arange(1.0, 100.0)})
    state, table = tmp_path / "s.ecst", tmp_path / "t.json"
    assert run("calibrate", tmp_path / "a.npz", "-o", table, "--state", state, "-q", "-m", "minmax") == 0
    capsys.readouterr()
    for shown in (state, table):
        assert run("show", shown) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\r" not in out
        assert "x\\x1b[2J\\redgecal: error: forged" in out


def test_log_lines_and_errors_escape_what_they_quote(tmp_path, capsys, monkeypatch):
    import logging

    from edgecal.cli import files
    from edgecal.errors import InputError

    def noisy(args):
        logging.getLogger("edgecal").warning("tensor %s: all zero", FORGED)
        raise InputError(f"{FORGED}: bad")

    monkeypatch.setattr(files, "cmd_show", noisy)
    assert run("show", tmp_path / "anything") == 2
    err = capsys.readouterr().err
    no_raw_control(err)
    assert err.splitlines() == [f"edgecal: warning: tensor {ESCAPED}: all zero", f"edgecal: error: {ESCAPED}: bad"]
