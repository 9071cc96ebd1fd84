"""`edgecal quantize`, `edgecal check --runtime onnxruntime` and `edgecal calibrate --runtime`, as a user runs them."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgecal import CalibrationTable
from edgecal.calibrator import Calibrator
from edgecal.cli import main
from edgecal.table import TensorCalibration

from ort_helpers import TENSORS, batches, build_model, ort_values, qdq_params, run

pytest.importorskip("onnx", reason="onnx is not installed; pip install -e '.[onnxruntime]'")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed; pip install -e '.[onnxruntime]'")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The model, a folder of three input batches, labels, and the table `calibrate` writes from them."""
    root = tmp_path_factory.mktemp("cli_onnx")
    model = build_model(root / "m.onnx")
    (root / "inputs").mkdir()
    data = batches(3)
    for i, x in enumerate(data):
        np.save(root / "inputs" / f"b{i}.npy", x)
    values = [ort_values(model, x) for x in data]
    np.save(root / "labels.npy", np.concatenate([v["y"].argmax(1) for v in values]))
    table = root / "t.json"
    assert main(["calibrate", "--model", str(model), "--inputs", str(root / "inputs"), "-o", str(table),
                 "--scheme", "tflite", "-q"]) == 0
    return root, model, table, data, values


def test_calibrate_picks_onnx_runtime_for_ops_edgecal_cannot_run(setup, tmp_path, capsys):
    root, model, _, _, _ = setup
    out = tmp_path / "t.json"
    assert main(["calibrate", "--model", str(model), "--inputs", str(root / "inputs"), "-o", str(out), "-q"]) == 0
    assert "calibrated 5 tensors from 3 files with mse (runtime onnxruntime)" in capsys.readouterr().out
    assert main(["calibrate", "--model", str(model), "--inputs", str(root / "inputs"), "-o", str(out), "-q",
                 "--runtime", "edgecal"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "op LeakyRelu is not supported" in err


def test_calibrate_with_onnx_runtime_equals_the_python_api_on_the_same_activations(setup, tmp_path, capsys):
    root, model, _, data, values = setup
    out = tmp_path / "t.json"
    assert main(["calibrate", "--model", str(model), "--inputs", str(root / "inputs"), "-o", str(out), "-q",
                 "--runtime", "onnxruntime", "-m", "kl", "--scheme", "tflite", "--search", "0"]) == 0
    cal = Calibrator()
    for v in values:  # computed by ONNX Runtime in the test, outside edgecal
        for name in TENSORS:
            cal.observe(name, v[name])
    want = cal.compute("kl", scheme="tflite")
    got = CalibrationTable.load(out)
    assert list(got) == TENSORS
    assert {n: got[n].to_dict() for n in got} == {n: want[n].to_dict() for n in want}
    assert got.model_hash and got.model_hash.startswith("sha256:")


def test_calibrate_with_onnx_runtime_resumes_from_its_state(setup, tmp_path, capsys):
    root, model, _, _, _ = setup
    state, first, second = tmp_path / "s.ecst", tmp_path / "a.json", tmp_path / "b.json"
    args = ["calibrate", "--model", str(model), "--inputs", str(root / "inputs"), "--runtime", "onnxruntime", "-q",
            "--state", str(state)]
    assert main([*args, "-o", str(first)]) == 0
    assert main([*args, "-o", str(second)]) == 0
    assert "from 0 files, 3 already in" in capsys.readouterr().out
    a, b = CalibrationTable.load(first), CalibrationTable.load(second)
    assert {n: a[n].to_dict() for n in a} == {n: b[n].to_dict() for n in b}
    assert Calibrator.load_state(state).samples("y") == 3


def test_quantize_writes_a_model_onnx_runtime_runs(setup, tmp_path, capsys):
    root, model, table, data, values = setup
    out = tmp_path / "m.int8.onnx"
    assert main(["quantize", "--model", str(model), "--table", str(table), "--out", str(out), "--activations", "u8",
                 "--per-tensor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"quantized {model} with 5 ranges from {table} (u8 activations, "
                                                   "per-tensor weights): 5 QuantizeLinear nodes -> ")  # x, c, a, f, y
    params = qdq_params(out)
    t = CalibrationTable.load(table)
    assert int(params["a"][1]) == t["a"].zero_point + 128 and params["a"][1].dtype == np.uint8
    assert next(v for k, v in params.items() if k.startswith("W"))[0].shape == ()
    assert run(out, data[0]).shape == (16, 5)


def _bad_cases(root, model, table, tmp_path):
    (tmp_path / "text.onnx").write_text("not a model")
    partial = tmp_path / "partial.json"
    t = CalibrationTable.load(table)
    t.with_entries([e for e in t.values() if e.name not in ("a", "f", "y")]).save(partial)
    (tmp_path / "folder").mkdir()
    return {
        "model not ONNX": (["--model", str(tmp_path / "text.onnx")], "text.onnx: not a readable ONNX model"),
        "table missing tensors": (["--table", str(partial)], "the table has no entry for 3 of the 5 tensors"),
        "table unreadable": (["--table", str(tmp_path / "text.onnx")], str(tmp_path / "text.onnx")),
        "out unwritable": (["--out", "/proc/edgecal-test.onnx"], "cannot write /proc/edgecal-test.onnx"),
        "out missing folder": (["--out", str(tmp_path / "no" / "m.onnx")], "does not exist"),
        "out a folder": (["--out", str(tmp_path / "folder")], "is a folder; expected the path of the int8 model"),
        "out is the model": (["--out", str(model)], "is the float model itself"),
    }


@pytest.mark.parametrize("case", ["model not ONNX", "table missing tensors", "table unreadable", "out unwritable",
                                  "out missing folder", "out a folder", "out is the model"])
def test_quantize_bad_input_is_one_line_exit_2_and_no_file(setup, tmp_path, capsys, case):
    root, model, table, _, _ = setup
    argv, msg = _bad_cases(root, model, table, tmp_path)[case]
    args = {"--model": str(model), "--table": str(table), "--out": str(tmp_path / "out.onnx")}
    args.update(dict(zip(argv[::2], argv[1::2])))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    model_bytes = model.read_bytes()
    capsys.readouterr()
    assert main(["quantize", *[x for kv in args.items() for x in kv]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("edgecal: error: ") and msg in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before and model.read_bytes() == model_bytes


def test_quantize_can_leave_tensors_without_entry_in_float(setup, tmp_path, capsys):
    root, model, table, data, _ = setup
    partial = tmp_path / "partial.json"
    t = CalibrationTable.load(table)
    t.with_entries([e for e in t.values() if e.name != "a"]).save(partial)
    out = tmp_path / "m.int8.onnx"
    assert main(["quantize", "--model", str(model), "--table", str(partial), "--out", str(out),
                 "--leave-missing-float"]) == 0
    assert ", 2 nodes left in float (1 tensors not in the table) -> " in capsys.readouterr().out
    assert "a" not in qdq_params(out) and run(out, data[0]).shape == (16, 5)


def test_check_with_onnx_runtime_prints_one_json_object(setup, capsys):
    root, model, table, _, values = setup
    capsys.readouterr()
    assert main(["check", "--model", str(model), "--table", str(table), "--inputs", str(root / "inputs"),
                 "--labels", str(root / "labels.npy"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runtime"] == "onnxruntime" and report["samples"] == 48 and report["output"] == "y"
    assert report["float_accuracy"] == 1.0 and report["int8_accuracy"] == report["top1_agreement"]
    assert report["top1_agreement"] > 0.9 and report["output_sqnr_db"] > 20
    sqnr = {t["name"]: t["sqnr_db"] for t in report["tensors"]}
    assert set(sqnr) == set(TENSORS) and report["worst"][0] == min(sqnr, key=sqnr.get)
    assert report["activations"] == "s8" and report["weights"] == "per-channel"


def test_check_text_report_and_wrong_range(setup, tmp_path, capsys):
    root, model, table, _, _ = setup
    t = CalibrationTable.load(table)
    e = t["c"]
    shrunk = TensorCalibration("c", amax=e.amax / 50, scale=e.scale / 50, zero_point=e.zero_point, scheme=e.scheme)
    bad = tmp_path / "bad.json"
    t.with_entries([shrunk if x.name == "c" else x for x in t.values()]).save(bad)
    capsys.readouterr()
    assert main(["check", "--model", str(model), "--table", str(bad), "--inputs", str(root / "inputs"),
                 "--activations", "u8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"edgecal check: {model} with {bad}, 48 samples, runtime onnxruntime (u8 activations")
    assert "range costing the most on its own: c (own SQNR" in out and "\nworst: " in out


def test_check_data_file_and_argument_errors(setup, tmp_path, capsys):
    root, model, table, data, _ = setup
    np.savez(tmp_path / "d.npz", x=data[0], y=np.zeros(16, np.int64))
    base = ["check", "--model", str(model), "--table", str(table)]
    assert main([*base, "--data", str(tmp_path / "d.npz"), "--labels", "y", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 16
    cases = [
        ([], "expected the model inputs in exactly one of --data D.npz or --inputs DIR"),
        (["--inputs", str(root / "inputs"), "--runtime", "edgecal"], "--inputs DIR is read with --runtime onnxruntime"),
        (["--data", str(tmp_path / "d.npz"), "--labels", "z"], "no array 'z' for --labels; it holds x, y"),
        (["--inputs", str(root / "inputs"), "--labels", str(tmp_path / "d.npz")], "holds 2 arrays; expected one"),
        (["--inputs", str(tmp_path / "none")], "no such folder"),
    ]
    for argv, msg in cases:
        assert main([*base, *argv]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and msg in err, (argv, err)


def test_missing_extra_names_the_install_command(setup, tmp_path, capsys, monkeypatch):
    root, model, table, _, _ = setup
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["quantize", "--model", str(model), "--table", str(table), "--out", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime extra" in err and "pip install -e '.[onnxruntime]'" in err
    assert not (tmp_path / "o.onnx").exists()


def test_auto_runtime_without_onnx_runtime_says_what_to_pass(setup, tmp_path, capsys, monkeypatch):
    root, model, _, _, _ = setup
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["calibrate", "--model", str(model), "--inputs", str(root / "inputs"), "-o",
                 str(tmp_path / "t.json"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "op LeakyRelu is not supported" in err
    assert "pass --runtime onnxruntime after installing the extra with pip install -e '.[onnxruntime]'" in err


def test_check_refuses_a_tflite_model(setup, tmp_path, capsys):
    root, _, table, _, _ = setup
    (tmp_path / "m.tflite").write_bytes(b"")
    assert main(["check", "--model", str(tmp_path / "m.tflite"), "--table", str(table), "--data",
                 str(root / "inputs" / "b0.npy")]) == 2
    assert "m.tflite is for litert, expected an .onnx model" in capsys.readouterr().err


def test_calibrate_a_tflite_model_picks_litert(tmp_path, capsys):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed; pip install -e '.[litert]'")
    import source_models

    model = source_models.tflite_model(tmp_path / "m.tflite", batch=2)
    (tmp_path / "in").mkdir()
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    np.save(tmp_path / "in" / "b0.npy", x)
    assert main(["calibrate", "--model", str(model), "--inputs", str(tmp_path / "in"), "-o", str(tmp_path / "t.json"),
                 "-m", "minmax", "-q"]) == 0
    assert "calibrated 4 tensors from 1 files with minmax (runtime litert)" in capsys.readouterr().out
    table, ref = CalibrationTable.load(tmp_path / "t.json"), source_models.reference(x)
    assert list(table) == source_models.NAMES
    for name in source_models.NAMES:
        assert table[name].amax == pytest.approx(float(np.abs(ref[name]).max()), rel=1e-6), name
