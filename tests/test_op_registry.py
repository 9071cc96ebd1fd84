"""The op registry: a new op is one module (tests/op_neg.py), and the runner, calibrate and check all use it."""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest

import naive
from edgecal import Calibrator, CalibrationTable, InputError, TensorCalibration
from edgecal.cli import main
from edgecal.errors import MalformedModelError
from edgecal.model.ops import OPS, OpSpec, get_op, register_op, unregister_op

onnx = pytest.importorskip("onnx", reason="onnx is not installed; pip install -e '.[test]'")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgecal.model import Int8Model, from_onnx, run_float  # noqa: E402

BUILT_IN = ["Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
            "Flatten", "Reshape"]


@pytest.fixture
def neg_op():
    """Neg registered by importing its module, as a user's op module would be; removed afterwards."""
    unregister_op("Neg")
    sys.modules.pop("op_neg", None)
    yield importlib.import_module("op_neg")
    unregister_op("Neg")


@pytest.fixture
def without_neg():
    """The registry as edgecal ships it, whatever imported op_neg before; restored afterwards."""
    spec = get_op("Neg") if "Neg" in OPS else None
    unregister_op("Neg")
    yield
    if spec is not None and "Neg" not in OPS:
        register_op(spec)


def neg_model(rng, op="Neg", **attrs):
    """x [N, 6] -> op -> "neg" -> Gemm(w, b) -> "y" [N, 5]."""
    w, b = rng.normal(0, 0.5, (6, 5)).astype(np.float32), rng.normal(0, 0.1, 5).astype(np.float32)
    nodes = [helper.make_node(op, ["x"], ["neg"], name="negate", **attrs),
             helper.make_node("Gemm", ["neg", "w", "b"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "neg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model, w, b


def test_the_built_in_ops_are_registered_in_order_each_with_an_int8_lowering(without_neg):
    assert list(OPS) == BUILT_IN
    assert all(get_op(op).lower is not None for op in BUILT_IN)


def test_without_its_module_the_new_op_is_refused(without_neg):
    model, _, _ = neg_model(np.random.default_rng(0))
    with pytest.raises(InputError, match=r"node 'negate' \(Neg\): op Neg is not supported; supported ops: Conv, "):
        from_onnx(model)


def test_a_new_op_runs_in_float(neg_op):
    rng = np.random.default_rng(1)
    model, w, b = neg_model(rng)
    x = rng.normal(0, 1, (16, 6)).astype(np.float32)
    values = run_float(from_onnx(model), {"x": x})
    np.testing.assert_array_equal(values["neg"], -x)
    np.testing.assert_allclose(values["y"], (-x) @ w + b, rtol=1e-5, atol=1e-6)


def test_a_new_op_lowers_to_int8_bit_exact_with_its_naive_twin(neg_op):
    rng = np.random.default_rng(2)
    model, _, _ = neg_model(rng)
    x = rng.normal(0, 1, (32, 6)).astype(np.float32)
    table = CalibrationTable([TensorCalibration.symmetric("x", 2.5), TensorCalibration.symmetric("neg", 1.7),
                              TensorCalibration.symmetric("y", 4.0)])
    int8 = Int8Model(from_onnx(model), table)
    ints = int8.run({"x": x})
    qi, qo = int8.qparams["x"], int8.qparams["neg"]
    want = naive.neg_int8(ints["x"], qi.zero_point, qi.scale, qo.scale, qo.zero_point)
    np.testing.assert_array_equal(ints["neg"], want)
    assert (want == 127).any() and (want == -128).any()  # the clamp was reached on both sides
    inside = np.abs(x) < 1.6
    assert np.abs(qo.dequantize(ints["neg"]) + x)[inside].max() <= qi.scale / 2 + qo.scale / 2 + 1e-6
    assert [s.nodes[0].op for s in int8.steps] == ["Neg", "Gemm"]


def test_a_new_op_goes_through_calibrate_and_check(neg_op, tmp_path, capsys):
    rng = np.random.default_rng(3)
    model, w, b = neg_model(rng)
    onnx.save(model, tmp_path / "neg.onnx")
    (tmp_path / "calib").mkdir()
    for i in range(2):
        np.save(tmp_path / "calib" / f"b{i}.npy", rng.normal(0, 1, (20, 6)).astype(np.float32))
    x = rng.normal(0, 1, (40, 6)).astype(np.float32)
    labels = np.argmax((-x) @ w + b, axis=1)
    np.savez(tmp_path / "eval.npz", x=x, y=labels)
    model_path, table = str(tmp_path / "neg.onnx"), str(tmp_path / "t.json")
    assert main(["calibrate", "--model", model_path, "--runtime", "edgecal", "--inputs", str(tmp_path / "calib"),
                 "-o", table, "-q"]) == 0
    assert set(CalibrationTable.load(table)) == {"x", "neg", "y"}
    capsys.readouterr()
    assert main(["check", "--model", model_path, "--runtime", "edgecal", "--table", table,
                 "--data", str(tmp_path / "eval.npz"), "--labels", "y", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["float_accuracy"] == 1.0
    neg = next(t for t in report["tensors"] if t["name"] == "neg")
    xq = next(t for t in report["tensors"] if t["name"] == "x")
    q_x = np.array([naive.quantize_value(v, xq["scale"], xq["zero_point"], "tflite") for v in x.ravel()])
    q_neg = naive.neg_int8(q_x, xq["zero_point"], xq["scale"], neg["scale"], neg["zero_point"])
    error = (-x.ravel().astype(np.float64)) - (q_neg.astype(np.float64) - neg["zero_point"]) * neg["scale"]
    assert neg["op"] == "Neg"
    assert neg["sqnr_db"] == pytest.approx(10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(error ** 2)),
                                           rel=1e-5)


def test_registering_an_op_twice_is_refused(neg_op):
    with pytest.raises(InputError, match="op Neg is already registered .*; expected each op type registered once"):
        register_op(neg_op.SPEC)


def test_an_unknown_op_type_lists_the_supported_ones():
    with pytest.raises(InputError, match="op Sigmoid is not supported; supported ops: Conv, Gemm, MatMul, Add"):
        get_op("Sigmoid")


def test_an_op_without_int8_lowering_runs_in_float_only():
    register_op(OpSpec("Abs", (1, 1), lambda node, args, values: np.abs(args[0])))
    try:
        rng = np.random.default_rng(4)
        graph = from_onnx(neg_model(rng, "Abs")[0])
        x = rng.normal(0, 1, (3, 6)).astype(np.float32)
        np.testing.assert_array_equal(run_float(graph, {"x": x})["neg"], np.abs(x))
        table = CalibrationTable([TensorCalibration.symmetric(n, 1.0) for n in ("x", "neg", "y")])
        with pytest.raises(InputError, match=r"node 'negate' \(Abs\): op Abs has no int8 lowering"):
            Int8Model(graph, table)
    finally:
        unregister_op("Abs")


def test_an_op_declares_its_own_attribute_types():
    register_op(OpSpec("Scale", (1, 1), lambda node, args, values: args[0] * node.attrs.get("gain", 1.0),
                       attrs={"gain": (float, None, None)}))
    try:
        rng = np.random.default_rng(5)
        graph = from_onnx(neg_model(rng, "Scale", gain=2.0)[0])
        x = rng.normal(0, 1, (3, 6)).astype(np.float32)
        np.testing.assert_array_equal(run_float(graph, {"x": x})["neg"], 2 * x)
        with pytest.raises(MalformedModelError, match=r"\(Scale\): attribute gain='loud'; expected float values"):
            from_onnx(neg_model(rng, "Scale", gain="loud")[0])
    finally:
        unregister_op("Scale")


def test_a_calibrator_sees_the_new_ops_output(neg_op):
    from edgecal.model import observe_model

    rng = np.random.default_rng(6)
    cal = Calibrator()
    x = rng.normal(0, 1, (8, 6)).astype(np.float32)
    observe_model(cal, from_onnx(neg_model(rng)[0]), {"x": x})
    table = cal.compute("minmax")
    assert table["neg"].amax == pytest.approx(float(np.abs(x).max()), rel=1e-6)
