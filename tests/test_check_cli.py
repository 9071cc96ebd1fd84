"""`edgecal calibrate --model`, `edgecal check` and the digits stage of `edgecal demo`, as a user runs them."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from edgecal import CalibrationTable
from edgecal.cli import main

pytest.importorskip("onnx", reason="onnx is not installed; pip install -e '.[test]'")

MODEL = str(resources.files("edgecal").joinpath("data/digits_cnn.onnx"))


@pytest.fixture(scope="module")
def digits(digits_files, tmp_path_factory):
    """Calibration batches in a folder, an evaluation file with labels, and a tflite-scheme kl table."""
    root = digits_files
    table = tmp_path_factory.mktemp("digits-table") / "t.json"
    assert main(["calibrate", "--model", MODEL, "--inputs", str(root / "calib"), "-o", str(table), "--scheme",
                 "tflite", "-q"]) == 0
    return root, table


def test_calibrate_from_a_model_covers_every_activation(digits):
    _, table = digits
    t = CalibrationTable.load(table)
    assert list(t) == ["image", "conv1", "relu1", "dwconv", "relu2", "residual", "pool1", "conv3", "relu3", "pool2",
                       "flat", "logits"]
    assert t["relu1"].zero_point == -128 and t["image"].stats.samples == 4
    lo, hi = t["conv1"].range  # a signed tensor gets its own range: zero point from its min and max
    assert lo < 0 < hi and -128 < t["conv1"].zero_point < 127
    assert t.model_hash.startswith("sha256:")


def test_check_reports_accuracy_agreement_and_sqnr_as_json(digits, capsys):
    root, table = digits
    capsys.readouterr()
    assert main(["check", "--model", MODEL, "--table", str(table), "--data", str(root / "eval.npz"), "--labels", "y",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 597 and report["rounding"] == "tflite"
    assert report["float_accuracy"] > 0.98 and report["int8_accuracy"] > 0.97 and report["top1_agreement"] > 0.98
    sqnr = {t["name"]: t["sqnr_db"] for t in report["tensors"]}
    assert set(sqnr) == {"image", "relu1", "relu2", "residual", "pool1", "relu3", "pool2", "flat", "logits"}
    assert report["worst"][0] == min(sqnr, key=sqnr.get)


def test_check_prints_a_readable_report(digits, capsys):
    root, table = digits
    capsys.readouterr()
    assert main(["check", "--model", MODEL, "--table", str(table), "--data", str(root / "eval.npz"), "--labels", "y",
                 "--rounding", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "top-1 accuracy: float 98.32%" in out and "rounding onnx" in out and "\nworst: " in out


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--labels", "label"], "no array 'label' for --labels; it holds image, y"),
        (["--table", "{missing}"], "the table has no entry for tensor 'image' (a model input)"),
        (["--data", "{wrong_shape}"], "model input 'image': shape (3, 64) does not match the model's Nx1x8x8"),
        (["--model", "{sigmoid}", "--runtime", "edgecal"], "op Sigmoid is not supported"),
        (["--rounding", "onnx", "--data", "{two}"], "expected one named after each model input (image)"),
    ],
)
def test_check_bad_input_is_one_line_and_exit_2(digits, tmp_path, capsys, argv, msg):
    root, table = digits
    from edgecal.table import TensorCalibration

    CalibrationTable([TensorCalibration.symmetric("logits", 1.0)]).save(tmp_path / "missing.json")
    np.savez(tmp_path / "wrong_shape.npz", image=np.zeros((3, 64), np.float32))
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 1, 8, 8)), b=np.zeros((1, 1, 8, 8)))
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(g), tmp_path / "sigmoid.onnx")
    paths = {"missing": tmp_path / "missing.json", "wrong_shape": tmp_path / "wrong_shape.npz",
             "sigmoid": tmp_path / "sigmoid.onnx", "two": tmp_path / "two.npz"}
    args = {"--model": MODEL, "--table": str(table), "--data": str(root / "eval.npz")}
    extra = []
    for key, value in zip(argv[::2], argv[1::2]):
        value = value.format(**paths)
        if key in args:
            args[key] = value
        else:
            extra += [key, value]
    capsys.readouterr()
    assert main(["check", *[x for kv in args.items() for x in kv], *extra]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("edgecal: error: ") and msg in err


def test_calibrate_model_argument_errors(digits, tmp_path, capsys):
    root, _ = digits
    assert main(["calibrate", "--model", MODEL, "-o", str(tmp_path / "t.json")]) == 2
    assert "--model reads its input batches from --inputs DIR" in capsys.readouterr().err
    assert main(["calibrate", "--inputs", str(root / "calib"), "-o", str(tmp_path / "t.json")]) == 2
    assert "expected activation files or folders, or --model" in capsys.readouterr().err
    np.save(tmp_path / "labels.npy", np.zeros(3))
    np.savez(tmp_path / "pair.npz", a=np.zeros((1, 1, 8, 8)), b=np.zeros((1, 1, 8, 8)))
    assert main(["calibrate", "--model", MODEL, "--inputs", str(tmp_path / "pair.npz"), "-o", str(tmp_path / "t.json")]) == 2
    assert "holds arrays ['a', 'b']" in capsys.readouterr().err and not (tmp_path / "t.json").exists()


def test_demo_prints_the_digits_comparison(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    section = out.split("digits CNN")[1]
    rows = {line.split()[0]: line.split() for line in section.splitlines() if line.split()[:1] in (["kl"], ["minmax"], ["percentile"])}
    assert set(rows) == {"kl", "minmax", "percentile"}
    float_acc, int8_acc = (float(v.rstrip("%")) for v in rows["kl"][1:3])
    assert float_acc - int8_acc <= 0.5
    assert "per-tensor SQNR of the int8 model against float" in section and "logits" in section
