"""``--json``: one document per command, checked against the tables and states the same run wrote,
read back with the Python API (never against figures the command printed elsewhere)."""

from __future__ import annotations

import json
import math
import os
from importlib import resources

import numpy as np
import pytest
from test_link_host import fake  # noqa: F401  (fixture)

from edgecal import Calibrator, __version__
from edgecal.cli import main
from edgecal.formats import load_table
from edgecal.table import CalibrationTable, TensorCalibration

MODEL = str(resources.files("edgecal").joinpath("data/digits_cnn.onnx"))


def run_json(capsys, argv: list[str], code: int = 0) -> dict:
    capsys.readouterr()
    assert main(argv) == code
    out = capsys.readouterr().out
    doc = json.loads(out)
    command = " ".join(argv[:2]) if argv[0] == "daemon" else argv[0]
    assert doc["edgecal"] == __version__ and doc["command"] == command and isinstance(doc["ok"], bool)
    assert list(doc)[:3] == ["edgecal", "command", "ok"]
    return doc


def same_as_table(doc_tensors: list[dict], table: CalibrationTable) -> None:
    """Every tensor object carries the table entry's fields under the same names."""
    assert [t["name"] for t in doc_tensors] == list(table)
    for t in doc_tensors:
        e = table[t["name"]]
        assert (t["amax"], t["scale"], t["zero_point"], t["dtype"], t["scheme"], t["method"]) == (
            e.amax, e.scale, e.zero_point, e.dtype, e.scheme, e.method)
        assert tuple(t["flags"]) == e.flags and t["params"] == dict(e.params)
        s = e.stats
        assert (t["stats"]["samples"], t["stats"]["count"], t["stats"]["zeros"], t["stats"]["nans"]) == (
            s.samples, s.count, s.zeros, s.nans)
        assert (t["stats"]["min"], t["stats"]["max"]) == (s.min, s.max)


def same_as_state(doc_tensors: list[dict], cal: Calibrator) -> None:
    assert [t["name"] for t in doc_tensors] == cal.names()
    for t in doc_tensors:
        s = cal.stats(t["name"])
        assert (t["samples"], t["count"], t["zeros"], t["nans"], t["posinf"], t["neginf"], t["min"], t["max"]) == (
            s.samples, s.count, s.zeros, s.nans, s.posinf, s.neginf, s.min, s.max)
        assert t["bins"] == cal.bins and t["range"] == cal.histogram(t["name"]).range


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(7)
    for i in range(3):
        np.savez(tmp_path / f"b{i}.npz", relu=np.maximum(rng.standard_normal(500), 0).astype(np.float32),
                 conv=(3 * rng.standard_normal(500)).astype(np.float32), nan=np.array([np.nan, 1.0], np.float32))
    return tmp_path


def test_calibrate_json_is_the_table_written(data, tmp_path, capsys):
    out, state = tmp_path / "t.json", tmp_path / "s.ecst"
    doc = run_json(capsys, ["calibrate", *(str(data / f"b{i}.npz") for i in range(3)), "-o", str(out), "--state",
                            str(state), "-m", "minmax", "--json"])
    table = load_table(out)
    assert doc["ok"] is True and doc["out"] == str(out) and doc["format"] == "json" and doc["method"] == "minmax"
    assert doc["files_used"] == 3 == len(Calibrator.load_state(state).consumed) and doc["files_skipped"] == 0
    assert doc["created"] == table.created and doc["schema"] == table.SCHEMA
    same_as_table(doc["tensors"], table)
    assert "nonfinite" in doc["tensors"][[t["name"] for t in doc["tensors"]].index("nan")]["flags"]


def test_show_json_of_a_table_and_of_a_state(data, tmp_path, capsys):
    out, state = tmp_path / "t.json", tmp_path / "s.ecst"
    assert main(["calibrate", str(data / "b0.npz"), "-o", str(out), "--state", str(state), "-q"]) == 0
    doc = run_json(capsys, ["show", str(out), "--json"])
    assert doc["kind"] == "table" and doc["path"] == str(out)
    same_as_table(doc["tensors"], load_table(out))
    doc = run_json(capsys, ["show", str(state), "--json"])
    cal = Calibrator.load_state(state)
    assert doc["kind"] == "state" and doc["bins"] == cal.bins and doc["consumed"] == len(cal.consumed) == 1
    same_as_state(doc["tensors"], cal)


def test_show_json_against_a_disagreeing_table_is_not_ok_and_exits_2(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    CalibrationTable([TensorCalibration.symmetric("x", 1.0), TensorCalibration.symmetric("y", 2.0)]).save(a)
    CalibrationTable([TensorCalibration.symmetric("x", 1.0), TensorCalibration.symmetric("y", 3.0)]).save(b)
    doc = run_json(capsys, ["show", str(a), "--against", str(a), "--json"])
    assert doc["ok"] is True and doc["disagreements"] == []
    capsys.readouterr()
    assert main(["show", str(a), "--against", str(b), "--json"]) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["ok"] is False and [d["name"] for d in doc["disagreements"]] == ["y"]
    assert err.startswith("edgecal: error: ") and err.count("\n") == 1 and "1 tensors disagree" in err


def test_merge_json_is_the_merged_state(data, tmp_path, capsys):
    states = []
    for i in range(3):
        states.append(str(tmp_path / f"s{i}.ecst"))
        assert main(["calibrate", str(data / f"b{i}.npz"), "-o", str(tmp_path / "t.json"), "--state", states[-1],
                     "-q", "-m", "minmax"]) == 0
    doc = run_json(capsys, ["merge", *states, "-o", str(tmp_path / "m.ecst"), "--json"])
    merged = Calibrator.load_state(tmp_path / "m.ecst")
    assert doc["states"] == states and doc["consumed"] == 3 == len(merged.consumed)
    same_as_state(doc["tensors"], merged)
    assert [t["samples"] for t in doc["tensors"]] == [3, 3, 3]


def test_errors_under_json_are_one_stderr_line_and_no_document(tmp_path, capsys):
    capsys.readouterr()
    assert main(["show", str(tmp_path / "missing.json"), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("edgecal: error: ") and err.count("\n") == 1


def test_stream_json_is_the_table_and_the_link_figures(fake, tmp_path, capsys):  # noqa: F811
    dev = fake(count=12)
    out = tmp_path / "t.json"
    doc = run_json(capsys, ["stream", "--port", dev.url, "-o", str(out), "-q", "-m", "minmax", "--json"])
    table = load_table(out)
    link = table.provenance["link"]
    assert doc["port"] == dev.url and doc["reason"] == link["ended"] == "finished"
    assert doc["samples"] == link["samples"] == 12 and doc["firmware"] == link["firmware"] == "fake 1.0"
    assert doc["provenance"]["link"] == link and doc["pushed"] is None
    same_as_table(doc["tensors"], table)
    assert [t["stats"]["samples"] for t in doc["tensors"]] == [12, 12, 12]


def test_stream_list_json_is_the_device_table(fake, capsys):  # noqa: F811
    dev = fake(lengths=(4, 8, 2))
    doc = run_json(capsys, ["stream", "--port", dev.url, "--list", "--json"])
    assert doc["firmware"] == "fake 1.0" and doc["boot_id"] == dev.boot_id
    assert [(t["id"], t["name"], t["shape"], t["bytes"]) for t in doc["tensors"]] == [
        (i, f"t{i}", [n], 4 * n) for i, n in enumerate(dev.lengths)]


def _daemon_config(tmp_path, table_name: str = "table.json") -> str:
    (tmp_path / "spool").mkdir(exist_ok=True)
    cfg = tmp_path / "d.toml"
    cfg.write_text(f'[state]\npath = "{tmp_path / "state.ecst"}"\n[output]\npath = "{tmp_path / table_name}"\n'
                   f'[[source]]\nkind = "spool"\npath = "{tmp_path / "spool"}"\n')
    return str(cfg)


def test_daemon_status_json_reads_the_checkpoint_and_the_table(tmp_path, capsys):
    cfg = _daemon_config(tmp_path)
    doc = run_json(capsys, ["daemon", "status", "--config", cfg, "--json"])
    assert doc["ok"] is True
    assert doc["checkpoint"]["exists"] is False and doc["checkpoint"]["state"] is None
    assert doc["output"]["exists"] is False and doc["output"]["table"] is None
    cal = Calibrator(256)
    cal.observe("a", np.arange(-5, 6, dtype=np.float32))
    cal.consumed.add("file-1")
    cal.save_state(tmp_path / "state.ecst")
    table = cal.compute("minmax").replace_meta(provenance={"daemon": {"samples": 1}})
    table.save(tmp_path / "table.json")
    doc = run_json(capsys, ["daemon", "status", "--config", cfg, "--json"])
    ck, outp = doc["checkpoint"], doc["output"]
    assert ck["exists"] and ck["bytes"] == os.path.getsize(tmp_path / "state.ecst")
    assert ck["loaded_from"] == str(tmp_path / "state.ecst") and ck["state"]["consumed"] == 1
    same_as_state(ck["state"]["tensors"], Calibrator.load_state(tmp_path / "state.ecst"))
    assert 0 <= ck["age_seconds"] < 600 and outp["format"] == "json" and outp["readable"] is True
    assert outp["table"]["provenance"] == {"daemon": {"samples": 1}}
    same_as_table(outp["table"]["tensors"], load_table(tmp_path / "table.json"))


def test_daemon_status_reports_a_damaged_checkpoint_and_resumes_from_the_previous(tmp_path, capsys):
    cfg = _daemon_config(tmp_path, "table.table")  # ncnn: written, never read back
    cal = Calibrator(256)
    cal.observe("a", np.ones(4, np.float32))
    cal.save_state(tmp_path / "state.ecst.prev")
    (tmp_path / "state.ecst").write_bytes(b"ECST but cut short")
    (tmp_path / "table.table").write_text("a 127\n")
    capsys.readouterr()
    assert main(["daemon", "status", "--config", cfg, "--json"]) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["ok"] is False and doc["checkpoint"]["loaded_from"] == str(tmp_path / "state.ecst.prev")
    assert len(doc["checkpoint"]["errors"]) == 1 and str(tmp_path / "state.ecst") in doc["checkpoint"]["errors"][0]
    same_as_state(doc["checkpoint"]["state"]["tensors"], cal)
    assert doc["output"]["exists"] is True and doc["output"]["readable"] is False and doc["output"]["table"] is None
    assert err.startswith("edgecal: error: ") and err.count("\n") == 1 and "state.ecst" in err


def test_daemon_json_without_status_is_refused(tmp_path, capsys):
    assert main(["daemon", "--config", _daemon_config(tmp_path), "--json"]) == 2
    assert "--json applies to `edgecal daemon status`" in capsys.readouterr().err


def _finite_or_named(x):
    return x if isinstance(x, (int, float)) else float(x)


def test_check_json_carries_the_table_scales(tmp_path, capsys):
    pytest.importorskip("onnx", reason="onnx is not installed; pip install -e '.[test]'")
    from edgecal.model.digits import load_digits_split

    split = load_digits_split()
    np.save(tmp_path / "calib.npy", split["calib_x"][:100])
    np.savez(tmp_path / "eval.npz", image=split["eval_x"][:80], y=split["eval_y"][:80])
    out = tmp_path / "t.json"
    assert main(["calibrate", "--model", MODEL, "--inputs", str(tmp_path / "calib.npy"), "--search", "0",
                 "--scheme", "tflite", "-o", str(out), "-q"]) == 0
    doc = run_json(capsys, ["check", "--model", MODEL, "--table", str(out), "--data", str(tmp_path / "eval.npz"),
                            "--labels", "y", "--runtime", "edgecal", "--json"])
    table = load_table(out)
    assert doc["runtime"] == "edgecal" and doc["table"] == str(out) and doc["samples"] == 80
    assert doc["tensors"] and all(t["name"] in table for t in doc["tensors"])
    own = [t for t in doc["tensors"] if t["op"] not in ("MaxPool", "AveragePool", "Reshape")]  # these keep their
    assert len(own) >= 5  # input's scale, as TFLite's kernels do; every other tensor is quantized with its entry
    for t in own:
        assert math.isclose(t["scale"], table[t["name"]].scale, rel_tol=1e-6)  # float32 in the int8 model
        assert t["zero_point"] == table[t["name"]].zero_point
    assert all(not math.isnan(_finite_or_named(t["sqnr_db"])) for t in doc["tensors"])


def test_check_json_with_onnx_runtime_has_the_common_head_and_the_table_tensors(tmp_path, capsys):
    pytest.importorskip("onnx", reason="onnx is not installed; pip install -e '.[test]'")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed; pip install -e '.[test]'")
    from edgecal.model.digits import load_digits_split

    split = load_digits_split()
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "b.npy", split["eval_x"][:64])
    out = tmp_path / "t.json"
    assert main(["calibrate", "--model", MODEL, "--inputs", str(tmp_path / "in"), "--search", "0", "-o", str(out),
                 "-q"]) == 0
    doc = run_json(capsys, ["check", "--model", MODEL, "--table", str(out), "--inputs", str(tmp_path / "in"),
                            "--json"])
    assert doc["ok"] is True and doc["runtime"] == "onnxruntime" and doc["samples"] == 64
    assert doc["model"] == MODEL and doc["table"] == str(out)
    assert doc["tensors"] and {t["name"] for t in doc["tensors"]} <= set(load_table(out))


def test_stream_push_json_names_what_the_device_acknowledged(exe, tmp_path, capsys):
    """The C example device stores the pushed table: the document's size and CRC-32 are that file's."""
    from link_helpers import Device

    pushed, out = tmp_path / "pushed.ecal", tmp_path / "t.ecal"
    dev = Device(exe, ["--table-out", str(pushed)], tmp_path / "truth.txt")
    try:
        doc = run_json(capsys, ["stream", "--port", dev.url, "-o", str(out), "--samples", "8", "-q", "-m", "minmax",
                                "--push", "--json"])
    finally:
        dev.close()
    held = pushed.read_bytes()
    assert held == out.read_bytes()
    assert doc["pushed"] == {"bytes": len(held), "crc32": int.from_bytes(held[-4:], "little")}
    same_as_table(doc["tensors"], load_table(out))


def test_daemon_status_reports_a_damaged_table(tmp_path, capsys):
    cfg = _daemon_config(tmp_path)
    Calibrator(256).save_state(tmp_path / "state.ecst")
    (tmp_path / "table.json").write_text('{"schema": 1, "tensors": [')
    capsys.readouterr()
    assert main(["daemon", "status", "--config", cfg, "--json"]) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["ok"] is False and doc["checkpoint"]["errors"] == [] and doc["output"]["table"] is None
    assert "table.json" in doc["output"]["error"] and err.count("\n") == 1 and "table.json" in err


def test_daemon_status_text_names_the_files_and_the_state(tmp_path, capsys):
    cfg = _daemon_config(tmp_path)
    cal = Calibrator(256)
    cal.observe("conv1", np.linspace(-2, 3, 50, dtype=np.float32))
    cal.save_state(tmp_path / "state.ecst")
    cal.compute("minmax").replace_meta(provenance={"daemon": {"samples": 7}}).save(tmp_path / "table.json")
    capsys.readouterr()
    assert main(["daemon", "status", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {tmp_path / 'state.ecst'}: written " in out and "previous not written yet" in out
    assert f"resumes from {tmp_path / 'state.ecst'}: 1 tensors, 256 bins, 0 inputs consumed" in out
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("conv1"))
    s = Calibrator.load_state(tmp_path / "state.ecst").stats("conv1")
    assert row[1:4] == [str(s.samples), str(s.count), str(s.nonfinite)] and float(row[4]) == s.min
    assert "1 tensors, created " in out and ", from 7 samples" in out
