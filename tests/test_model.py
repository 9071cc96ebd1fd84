"""The ONNX graph reader, the float runner (against ONNX Runtime), the int8 lowering and its errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgecal import Calibrator, CalibrationTable, InputError, TensorCalibration
from edgecal import reference as ref
from edgecal.methods import DEFAULT_METHOD

onnx = pytest.importorskip("onnx", reason="onnx is not installed; pip install -e '.[test]'")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgecal.model import Int8Model, MissingExtraError, check_model, from_onnx, load_graph, quantize_weights  # noqa: E402
from edgecal.model.float_run import run_float  # noqa: E402


def make_model(nodes, inits, x_shape, out="y", opset=13):
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def every_op_model(rng):
    f = lambda *s: rng.normal(0, 0.5, s).astype(np.float32)  # noqa: E731
    inits = {"w1": f(6, 3, 3, 3), "b1": f(6), "wd": f(6, 1, 3, 3), "lo": np.float32(0), "hi": np.float32(6),
             "wg": f(8, 6), "bg": f(8), "shape": np.array([0, -1], np.int64), "wm": f(8, 4), "bm": f(4)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", strides=[2, 1], pads=[1, 0, 1, 2], dilations=[1, 2]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="clip"),
        helper.make_node("Conv", ["r1", "wd"], ["c2"], name="dw", group=6, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu"),
        helper.make_node("Add", ["r1", "r2"], ["s"], name="add"),
        helper.make_node("MaxPool", ["s"], ["p1"], name="mp", kernel_shape=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("AveragePool", ["p1"], ["p2"], name="ap", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["p2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["fl"], name="flat"),
        helper.make_node("Gemm", ["fl", "wg", "bg"], ["gm"], name="gemm", transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Relu", ["gm"], ["r3"], name="relu3"),
        helper.make_node("Reshape", ["r3", "shape"], ["rs"], name="reshape"),
        helper.make_node("MatMul", ["rs", "wm"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "bm"], ["y"], name="bias"),
    ]
    return make_model(nodes, inits, ("N", 3, 9, 10))


def test_float_runner_matches_onnxruntime_on_every_supported_op():
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed; pip install -e '.[test]'")
    rng = np.random.default_rng(0)
    model = every_op_model(rng)
    x = rng.normal(0, 1, (4, 3, 9, 10)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    values = run_float(from_onnx(model), {"x": x})
    np.testing.assert_allclose(values["y"], want, rtol=1e-5, atol=1e-5)
    assert {"c1", "r1", "c2", "r2", "s", "p1", "p2", "g", "fl", "gm", "r3", "rs", "mm", "y"} <= set(values)


def table_for(model, x, method="minmax", scheme="symmetric"):
    graph = from_onnx(model)
    cal = Calibrator()
    values = run_float(graph, {"x": x})
    for name in graph.activations():
        cal.observe(name, values[name])
    return graph, cal.compute(method, scheme=scheme)


def test_int8_model_runs_every_op_and_tracks_float():
    rng = np.random.default_rng(1)
    model = every_op_model(rng)
    x = rng.normal(0, 1, (16, 3, 9, 10)).astype(np.float32)
    for scheme in ("symmetric", "tflite"):
        graph, table = table_for(model, x, scheme=scheme)
        report = check_model(graph, table, {"x": x})
        assert {t.name for t in report.tensors} == {"x", "r1", "r2", "s", "p1", "p2", "g", "fl", "r3", "rs", "y"}
        assert all(t.sqnr_db > 20 for t in report.tensors), [(t.name, t.sqnr_db) for t in report.tensors]
        assert table["r1"].scheme == ("tflite" if scheme == "tflite" else "symmetric")


def naive_weights(w, axis=0):
    """Per-channel symmetric: scale max|w|/127 in float32, q = round half away of w / scale."""
    moved = np.moveaxis(np.asarray(w, np.float32), axis, 0)
    scale = (np.abs(moved.reshape(len(moved), -1)).max(1) / np.float32(127)).astype(np.float32)
    scale[scale == 0] = 1
    v = moved / scale.reshape(-1, *([1] * (moved.ndim - 1)))
    q = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return np.moveaxis(q.astype(np.int8), 0, axis), scale


def test_weight_quantization_is_symmetric_per_channel():
    w = np.array([[0.5, -1.27, 0.0], [0.0, 0.0, 0.0], [2.54, 1.27, -0.01]], np.float32)
    q, s = quantize_weights(w)
    assert s.tolist() == [np.float32(1.27) / np.float32(127), 1.0, np.float32(2.54) / np.float32(127)]
    assert q.tolist() == [[50, -127, 0], [0, 0, 0], [127, 64, -1]] == naive_weights(w)[0].tolist()
    with pytest.raises(InputError, match="NaN or Inf"):
        quantize_weights(np.array([[np.nan]]))


def test_lowered_conv_relu_is_the_reference_kernel_with_quantized_weights():
    rng = np.random.default_rng(2)
    w, b = rng.normal(0, 0.3, (4, 2, 3, 3)).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
                        helper.make_node("Relu", ["c"], ["y"], name="relu")], {"w": w, "b": b}, ("N", 2, 7, 7))
    x = rng.normal(0, 1, (3, 2, 7, 7)).astype(np.float32)
    table = CalibrationTable([TensorCalibration.symmetric("x", 3.0), TensorCalibration.unsigned("y", 2.0)])
    got = Int8Model(from_onnx(model), table).run({"x": x})
    qw, sw = naive_weights(w)
    s_in = np.float32(3.0 / 127)
    qb = np.round(b.astype(np.float64) / (s_in * sw).astype(np.float64)).astype(np.int32)
    rq = ref.op_multipliers("conv", s_in, sw, 2.0 / 255)
    want = ref.conv2d(ref.quantize(x, s_in).transpose(0, 2, 3, 1), qw.transpose(0, 2, 3, 1), qb, rq, in_zp=0,
                      out_zp=-128, stride=2, padding=(1, 1, 1, 1), act_range=(-128, 127)).transpose(0, 3, 1, 2)
    assert "c" not in got and np.array_equal(got["y"], want)


def test_model_errors_name_what_is_wrong(tmp_path):
    model = make_model([helper.make_node("Sigmoid", ["x"], ["y"], name="squash")], {}, ("N", 4))
    with pytest.raises(InputError, match=r"node 'squash' \(Sigmoid\): op Sigmoid is not supported; supported ops: Conv"):
        from_onnx(model)
    pool = make_model([helper.make_node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[2, 2], count_include_pad=1)],
                      {}, ("N", 1, 4, 4))
    with pytest.raises(InputError, match="count_include_pad=1 is not supported"):
        from_onnx(pool)
    gemm = make_model([helper.make_node("Gemm", ["x", "w"], ["y"], name="g")], {"w": np.ones((4, 2), np.float32)},
                      ("N", 4))
    graph = from_onnx(gemm)
    with pytest.raises(InputError, match=r"model input 'x': shape \(2, 5\) does not match the model's Nx4"):
        run_float(graph, {"x": np.ones((2, 5), np.float32)})
    with pytest.raises(InputError, match="model input 'x' is missing"):
        run_float(graph, {"image": np.ones((2, 4))})
    with pytest.raises(InputError, match=r"the table has no entry for tensor 'y' \(output of node 'g' \(Gemm\)\)"):
        Int8Model(graph, CalibrationTable([TensorCalibration.symmetric("x", 1.0)]))
    with pytest.raises(InputError, match="unknown rounding"):
        Int8Model(graph, CalibrationTable([TensorCalibration.symmetric("x", 1.0)]), rounding="nearest")
    big_bias = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="g")],
                          {"w": np.ones((4, 2), np.float32), "b": np.full(2, 1e9, np.float32)}, ("N", 4))
    table = CalibrationTable([TensorCalibration.symmetric(n, 1.0) for n in ("x", "y")])
    with pytest.raises(InputError, match="node 'g' \\(Gemm\\): bias does not fit int32"):
        Int8Model(from_onnx(big_bias), table)
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a readable ONNX model"):
        load_graph(tmp_path / "bad.onnx")


def test_accumulator_overflow_in_a_model_is_an_error():
    k = 140_000  # 127 * 127 per tap: more taps than int32 holds
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                       {"w": np.ones((k, 1), np.float32)}, ("N", k))
    table = CalibrationTable([TensorCalibration.symmetric("x", 1.0), TensorCalibration.symmetric("y", 1e5)])
    with pytest.raises(ref.Int32OverflowError, match="fully connected: accumulator of output \\(0, 0\\) overflows"):
        Int8Model(from_onnx(model), table).run({"x": np.ones((1, k), np.float32)})


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[onnx\]'"):
        load_graph("whatever.onnx")


@pytest.mark.parametrize("scheme", ["symmetric", "tflite"])
def test_digits_int8_default_stays_within_a_point_of_float(scheme):
    """597 held-out images: one image is 0.17 points, so the bound leaves room for BLAS differences between machines."""
    from edgecal.model.digits import run_digits_demo

    demo = run_digits_demo(scheme=scheme)
    for method, report in demo.reports.items():
        assert report.float_accuracy > 0.97 and report.samples == 597
        assert len(report.tensors) == 9 and all(t.sqnr_db > 25 for t in report.tensors), method
    default = demo.reports[DEFAULT_METHOD]
    assert default.float_accuracy - default.int8_accuracy <= 0.01
    assert default.top1_agreement >= 0.99 and min(t.sqnr_db for t in default.tensors) > 30


def test_the_check_sees_a_bad_table():
    from edgecal.model.digits import load_digits_model, load_digits_split

    graph, split = load_digits_model(), load_digits_split()
    cal = Calibrator()
    values = run_float(graph, {"image": split["calib_x"]})
    for name in graph.activations():
        cal.observe(name, values[name])
    good = cal.compute("kl")
    bad = good.with_entries(e if e.name != "relu3" else TensorCalibration.symmetric("relu3", good["relu3"].amax / 20)
                            for e in good.values())
    feeds, labels = {"image": split["eval_x"]}, split["eval_y"]
    ok, crushed = check_model(graph, good, feeds, labels), check_model(graph, bad, feeds, labels)
    assert crushed.int8_accuracy < ok.int8_accuracy - 0.05
    assert crushed.worst(1)[0].name in ("relu3", "pool2", "flat", "logits")


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name="n", **attrs)


W4 = {"w": np.ones((2, 1, 3, 3), np.float32)}
READ_ERRORS = [
    ([node("Conv", ["x", "w3"])], {"w3": np.ones((2, 1, 3, 3, 3), np.float32)}, "only 2-D convolutions"),
    ([node("MaxPool", ["x"], kernel_shape=[2, 2], ceil_mode=1)], {}, "ceil_mode and dilated pools"),
    ([node("Gemm", ["x", "w"], transA=1)], {"w": np.ones((4, 2), np.float32)}, "transA=1"),
    ([node("Reshape", ["x", "x"])], {}, "Reshape needs a constant shape"),
]


@pytest.mark.parametrize("nodes, inits, msg", READ_ERRORS)
def test_unsupported_attributes_are_refused_when_read(nodes, inits, msg):
    with pytest.raises(InputError, match=msg):
        from_onnx(make_model(nodes, inits, ("N", 1, 4, 4)))


LOWER_ERRORS = [
    ([node("Conv", ["x", "x"])], {}, (1, 1, 4, 4), "weight 'x' must be a constant"),
    ([node("Add", ["x", "c"])], {"c": np.ones(4, np.float32)}, (1, 1, 4, 4), "an Add of a constant is supported only"),
]


@pytest.mark.parametrize("nodes, inits, shape, msg", LOWER_ERRORS)
def test_what_cannot_be_lowered_to_int8_is_refused(nodes, inits, shape, msg):
    table = CalibrationTable([TensorCalibration.symmetric(n, 1.0) for n in ("x", "y")])
    with pytest.raises(InputError, match=msg):
        Int8Model(from_onnx(make_model(nodes, inits, ("N", *shape[1:]))), table)


RUN_ERRORS = [  # model that reads fine, input that does not fit it at run time
    ([node("MatMul", ["x", "w"])], {"w": np.ones((4, 2), np.float32)}, np.ones((2, 3, 4)), "needs a 2-D input"),
    ([node("Conv", ["x", "w"])], W4, np.ones((1, 2, 4, 4)), r"input \(1, 2, 4, 4\) and weights \(2, 1, 3, 3\) \(group 1\) do not match"),
    ([node("MaxPool", ["x"], kernel_shape=[2, 2])], {}, np.ones((1, 4, 4)), "pools need a 4-D NCHW input"),
]


@pytest.mark.parametrize("nodes, inits, x, msg", RUN_ERRORS)
def test_inputs_that_do_not_fit_the_int8_model_are_refused(nodes, inits, x, msg):
    model = make_model(nodes, inits, (None,) * x.ndim)
    table = CalibrationTable([TensorCalibration.symmetric(n, 1.0) for n in ("x", "y")])
    with pytest.raises(InputError, match=msg):
        Int8Model(from_onnx(model), table).run({"x": x.astype(np.float32)})


def test_float_runner_and_check_refuse_bad_data():
    graph = from_onnx(make_model([node("Relu", ["x"])], {}, ("N", 3)))
    table = CalibrationTable([TensorCalibration.symmetric(n, 1.0) for n in ("x", "y")])
    with pytest.raises(InputError, match="dtype <U1; expected real numbers"):
        run_float(graph, {"x": np.array([["a", "b", "c"]])})
    with pytest.raises(InputError, match="labels must be 2 integers"):
        check_model(graph, table, {"x": np.ones((2, 3))}, np.array([0.5, 1.5]))
    flat = from_onnx(make_model([node("Reshape", ["x", "s"])], {"s": np.array([5], np.int64)}, ("N", 3)))
    with pytest.raises(InputError, match=r"cannot reshape \(2, 3\) to \(5,\)"):
        run_float(flat, {"x": np.ones((2, 3))})
    vec = from_onnx(make_model([node("Reshape", ["x", "s"])], {"s": np.array([-1], np.int64)}, ("N", 3)))
    with pytest.raises(InputError, match=r"has shape \(6,\); the check expects \[samples, classes\]"):
        check_model(vec, table, {"x": np.ones((2, 3))})
    add = from_onnx(make_model([node("MatMul", ["x", "w"])], {"w": np.ones((4, 2), np.float32)}, ("N", None)))
    with pytest.raises(InputError, match="node 'n' \\(MatMul\\): shapes do not match"):
        run_float(add, {"x": np.ones((2, 3))})


def test_planned_shapes_are_the_shapes_the_runner_computes():
    from edgecal.model.shapes import plan

    rng = np.random.default_rng(0)
    graph = from_onnx(every_op_model(rng))
    x = rng.normal(0, 1, (3, 3, 9, 10)).astype(np.float32)
    values = run_float(graph, {"x": x})
    shapes = plan(graph, {"x": x.shape}).shapes
    assert {n: values[n].shape for n in graph.activations()} == {n: shapes[n] for n in graph.activations()}
