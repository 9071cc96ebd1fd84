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
    assert run("calibrate", tmp_path / "a b.npy", "-o", tmp_path / "t.table", "-m", "minmax",
               "-O", "skip_unsupported=no") == 2
    assert "its name contains whitespace" in one_error_line(capsys)
    assert run("calibrate", tmp_path / "a b.npy", "-o", tmp_path / "t.table", "-m", "minmax",
               "-O", "skip_unsupported=yes") == 2
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


@pytest.fixture
def state(tmp_path):
    """A state of two tensors and the kl table calibrate wrote from it."""
    rng = np.random.default_rng(7)
    np.savez(tmp_path / "b.npz", conv=np.maximum(rng.standard_normal(5000), 0), fc=rng.laplace(size=5000))
    s, t = tmp_path / "s.ecst", tmp_path / "kl.ecal"
    assert run("calibrate", tmp_path / "b.npz", "-o", t, "--state", s, "-q", "-m", "kl", "-p", "num_levels=100") == 0
    return s, t


def same_entries(a, b):
    return [(e.name, e.amax, e.scale, e.params, e.stats) for e in a.values()] == \
        [(e.name, e.amax, e.scale, e.params, e.stats) for e in b.values()]


def test_export_computes_a_table_from_a_state(state, tmp_path, capsys):
    s, t = state
    out = tmp_path / "from_state.ecal"
    assert run("export", s, "-o", out, "-m", "kl", "-p", "num_levels=100") == 0
    assert same_entries(CalibrationTable.load(out), CalibrationTable.load(t))
    assert "wrote 2 tensors" in capsys.readouterr().out
    assert run("export", s, "-o", tmp_path / "tfl.json", "-m", "minmax", "--scheme", "tflite") == 0
    assert {e.scheme for e in CalibrationTable.load(tmp_path / "tfl.json").values()} == {"tflite"}


@pytest.mark.parametrize("argv, message", [
    (["STATE", "-m", "kl", "-p", "num_levels=x"], "method 'kl' parameter 'num_levels': found 'x'; expected an integer"),
    (["STATE", "-m", "nope"], "unknown method 'nope'"),
    (["STATE", "--scheme", "weird"], "unknown scheme 'weird'"),
    (["STATE", "--input-format", "trt"], "is a state; --input-format applies to tables"),
    (["TABLE", "-m", "kl"], "is a table, its thresholds already chosen; -m applies to a state"),
    (["TABLE", "--scheme", "tflite"], "--scheme applies to a state"),
])
def test_export_refuses_what_does_not_apply_and_writes_nothing(state, tmp_path, capsys, argv, message):
    s, t = state
    argv = [s if a == "STATE" else t if a == "TABLE" else a for a in argv]
    assert run("export", *argv, "-o", tmp_path / "out.json") == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out.json").exists()


def damaged_copy(cache, tmp_path, line: int, new_hex: str):
    lines = cache.read_text().splitlines()
    name, _, _ = lines[line].rpartition(": ")
    lines[line] = f"{name}: {new_hex}"
    bad = tmp_path / "bad.cache"
    bad.write_text("\n".join(lines) + "\n")
    return bad


def test_show_against_a_good_table_or_state_reports_agreement(state, tmp_path, capsys):
    s, t = state
    cache = tmp_path / "m.cache"
    assert run("export", t, "-o", cache) == 0
    assert run("show", cache, "--against", t) == 0
    assert f"{cache} agrees with {t}: 2 tensors" in capsys.readouterr().out
    assert run("show", cache, "--against", s, "-m", "kl", "-p", "num_levels=100") == 0
    assert "agrees with" in capsys.readouterr().out
    assert run("show", cache, "--against", s, "-m", "minmax") == 2  # another method: other thresholds
    assert "2 tensors disagree" in capsys.readouterr().err


def test_show_against_finds_a_damaged_tensorrt_cache(state, tmp_path, capsys):
    s, t = state
    cache = tmp_path / "m.cache"
    assert run("export", t, "-o", cache) == 0
    good_hex = cache.read_text().splitlines()[1].rpartition(": ")[2]
    damaged = f"{int(good_hex, 16) ^ 0x10:x}"  # one flipped bit: still a valid cache, another table
    bad = damaged_copy(cache, tmp_path, 1, damaged)
    capsys.readouterr()
    assert run("show", bad) == 0  # nothing in the cache itself can tell
    capsys.readouterr()
    assert run("show", bad, "--against", t) == 2
    captured = capsys.readouterr()
    disagree = [line for line in captured.out.splitlines() if line.startswith("disagrees:")]
    assert len(disagree) == 1 and disagree[0].startswith(f"disagrees: 'conv': cache scale {damaged} (amax ")
    assert f"reference {good_hex} " in disagree[0]
    assert captured.err == f"edgecal: error: {bad}: 1 tensors disagree with {t}; expected the float32 scales of " \
        "all 2 to match\n"


def test_numbered_samples_in_tensor_folders_are_named_by_folder(tmp_path):
    rng = np.random.default_rng(5)
    conv, fc = [rng.standard_normal(300) for _ in range(2)], [100 * rng.standard_normal(300) for _ in range(2)]
    for name, samples in (("conv1", conv), ("fc1", fc)):
        (tmp_path / "acts" / name).mkdir(parents=True)
        for i, x in enumerate(samples):
            np.save(tmp_path / "acts" / name / f"{i:04d}.npy", x)
    assert run("calibrate", tmp_path / "acts", "-o", tmp_path / "t.json", "-m", "minmax", "-q") == 0
    table = CalibrationTable.load(tmp_path / "t.json")
    assert list(table) == ["conv1", "fc1"]
    assert table["conv1"].amax == max(np.abs(x).max() for x in conv)  # nothing of fc1 mixed in
    assert table["fc1"].amax == max(np.abs(x).max() for x in fc) and table["fc1"].stats.samples == 2


def test_tensor_files_in_sample_folders_are_named_by_stem(tmp_path):
    for b in range(2):
        (tmp_path / f"batch{b}").mkdir()
        np.save(tmp_path / f"batch{b}" / "conv1.npy", np.arange(1.0, 5.0) * (b + 1))
    assert run("calibrate", tmp_path, "-o", tmp_path / "t.json", "-m", "minmax", "-q") == 0
    table = CalibrationTable.load(tmp_path / "t.json")
    assert list(table) == ["conv1"] and table["conv1"].amax == 8.0 and table["conv1"].stats.samples == 2


def test_show_refuses_method_flags_without_a_reference(state, capsys):
    s, t = state
    assert run("show", t, "-m", "kl") == 2
    assert "expected --against" in one_error_line(capsys)
    assert run("show", s, "--against", t) == 2
    assert "is a state; --against compares a table" in one_error_line(capsys)


def test_error_lines_keep_repr_escapes_single(tmp_path, capsys):
    from edgecal.cli.common import terminal_safe

    assert terminal_safe("found 'bad\\x00name'") == "found 'bad\\x00name'"  # not doubled
    assert terminal_safe("a\x1b[2J\r\u202eb") == "a\\x1b[2J\\r\\u202eb"
