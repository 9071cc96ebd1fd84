"""`edgecal calibrate --model` and the daemon's model sources fold each input file once between them.

Both record the same key per file (`edgecal.identity.file_identity`), so a state begun by one
and continued by the other holds every file once, and its table is the table of one run.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from edgecal import CalibrationTable, Calibrator
from edgecal.cli import main
from edgecal.daemon.service import Daemon
from edgecal.identity import file_identity, legacy_identity

pytest.importorskip("onnx", reason="onnx is not installed; pip install -e '.[onnx]'")

DIGITS = str(resources.files("edgecal").joinpath("data/digits_cnn.onnx"))
SIZES = (3, 1, 4)  # images per input file
# (calibrate --runtime, daemon source kind): edgecal's runner always, ONNX Runtime when installed
RUNTIMES = [("edgecal", "runner"),
            pytest.param("onnxruntime", "onnxruntime", marks=pytest.mark.skipif(
                importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed"))]

CONFIG = """
[state]
path = "{state}"

[output]
path = "{table}"
method = "kl"

[[source]]
kind = "{kind}"
model = "{model}"
inputs = "{inputs}"
"""


def add_file(folder: Path, k: int) -> None:
    """Input file ``batch<k>.npy``: the next SIZES[k] images of the digits set."""
    data = np.load(resources.files("edgecal").joinpath("data/digits_split.npz"))["calib_x"]
    start = sum(SIZES[:k])
    folder.mkdir(exist_ok=True)
    np.save(folder / f"batch{k}.npy", data[start:start + SIZES[k]])


def calibrate(runtime: str, folder: Path, state: Path, out: Path) -> None:
    assert main(["calibrate", "--model", DIGITS, "--inputs", str(folder), "--runtime", runtime, "--state", str(state),
                 "-o", str(out), "-m", "kl", "--search", "0"]) == 0


def daemon(kind: str, folder: Path, state: Path, table: Path) -> CalibrationTable:
    """Run the daemon until its one model source has run every file; its final table."""
    cfg = table.with_suffix(".toml")
    cfg.write_text(CONFIG.format(state=state, table=table, kind=kind, model=DIGITS, inputs=folder))
    assert Daemon(cfg).run() == 0
    return CalibrationTable.load(table)


def entries(table: CalibrationTable) -> dict:
    return {e.name: (e.amax, e.scale, e.stats.count, e.stats.samples) for e in table.values()}


def one_run(runtime: str, folder: Path, tmp: Path) -> tuple[Calibrator, CalibrationTable]:
    """State and table of a single `calibrate` over the whole folder."""
    calibrate(runtime, folder, tmp / "one.ecst", tmp / "one.json")
    return Calibrator.load_state(tmp / "one.ecst"), CalibrationTable.load(tmp / "one.json")


@pytest.mark.parametrize("runtime,kind", RUNTIMES)
def test_a_state_from_calibrate_is_continued_by_the_daemon_without_folding_a_file_twice(tmp_path, runtime, kind,
                                                                                       capsys):
    folder, state = tmp_path / "in", tmp_path / "s.ecst"
    for k in (0, 1):
        add_file(folder, k)
    calibrate(runtime, folder, state, tmp_path / "first.json")
    add_file(folder, 2)
    table = daemon(kind, folder, state, tmp_path / "daemon.json")
    assert table.provenance["daemon"]["samples"] == 1 and table.provenance["daemon"]["skipped_consumed"] == 2
    got = Calibrator.load_state(state)
    assert got.samples("logits") == 3 and got.samples("image") == 3  # one observation per file
    assert got.consumed == {file_identity(f) for f in sorted(folder.iterdir())}
    want_state, want_table = one_run(runtime, folder, tmp_path)
    assert got.to_bytes() == want_state.to_bytes()
    assert entries(table) == entries(want_table)


@pytest.mark.parametrize("runtime,kind", RUNTIMES)
def test_a_state_from_the_daemon_is_continued_by_calibrate_without_folding_a_file_twice(tmp_path, runtime, kind,
                                                                                       capsys):
    folder, state = tmp_path / "in", tmp_path / "s.ecst"
    add_file(folder, 0)
    daemon(kind, folder, state, tmp_path / "daemon.json")
    for k in (1, 2):
        add_file(folder, k)
    capsys.readouterr()
    calibrate(runtime, folder, state, tmp_path / "second.json")
    assert "from 2 files, 1 already in" in capsys.readouterr().out
    got = Calibrator.load_state(state)
    assert got.samples("logits") == 3 and got.consumed == {file_identity(f) for f in sorted(folder.iterdir())}
    want_state, want_table = one_run(runtime, folder, tmp_path)
    assert got.to_bytes() == want_state.to_bytes()
    assert entries(CalibrationTable.load(tmp_path / "second.json")) == entries(want_table)


def test_the_daemon_recognises_the_older_keys_of_states_written_before_inodes_were_in_them(tmp_path):
    folder, state = tmp_path / "in", tmp_path / "s.ecst"
    for k in (0, 1):
        add_file(folder, k)
    calibrate("edgecal", folder, state, tmp_path / "first.json")
    old = Calibrator.load_state(state)
    old.consumed = {legacy_identity(f) for f in sorted(folder.iterdir())}  # as an older edgecal wrote them
    old.save_state(state)
    add_file(folder, 2)
    table = daemon("runner", folder, state, tmp_path / "daemon.json")
    assert table.provenance["daemon"]["samples"] == 1 and table.provenance["daemon"]["skipped_consumed"] == 2
    assert Calibrator.load_state(state).samples("logits") == 3
