"""`table_ranges`, `quantize_onnx` and `check_onnx`: edgecal's ranges in ONNX Runtime's own quantizer."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from edgecal import CalibrationTable
from edgecal.errors import InputError
from edgecal.model.graph import MissingExtraError
from edgecal.model.ort_quant import table_ranges
from edgecal.table import TensorCalibration

from ort_helpers import TENSORS, batches, build_model, ort_rule, ort_values, qdq_params, run

pytest.importorskip("onnx", reason="onnx is not installed; pip install -e '.[onnxruntime]'")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed; pip install -e '.[onnxruntime]'")
from edgecal.model import check_onnx, quantize_onnx  # noqa: E402


def test_table_ranges_are_the_real_values_of_qmin_and_qmax():
    t = CalibrationTable([
        TensorCalibration.symmetric("s", 1.27),
        TensorCalibration.unsigned("u", 2.55),
        TensorCalibration("g", amax=3.3, scale=0.02, zero_point=37, scheme="tflite"),
        TensorCalibration("h", amax=2.0, scale=0.5, zero_point=127, scheme="tflite"),
    ])
    got = table_ranges(t)
    want = {"s": (-1.27, 1.27), "u": (0.0, 2.55), "g": (-3.3, 1.8), "h": (-127.5, 0.0)}
    assert list(got) == list(want)
    for name, (lo, hi) in want.items():
        assert got[name] == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12)), name


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("ortq")
    path = build_model(root / "m.onnx")
    data = batches(3)
    values = [ort_values(path, x) for x in data]
    return path, data, values


def _amax(values, name):
    return float(max(np.abs(v[name]).max() for v in values))


def _tflite_table(values):
    """x and y symmetric, c with a general zero point, a and f asymmetric: ranges from the data, by hand."""
    entries = [TensorCalibration.symmetric("x", _amax(values, "x")), TensorCalibration.symmetric("y", _amax(values, "y"))]
    for name, zp in (("c", 40), ("a", -90), ("f", -90)):
        hi = float(max(v[name].max() for v in values))
        scale = hi / (127 - zp)
        entries.append(TensorCalibration(name, amax=hi, scale=scale, zero_point=zp, scheme="tflite"))
    return CalibrationTable(entries)


@pytest.mark.parametrize("activations, qmin, qmax", [("s8", -128, 127), ("u8", 0, 255)])
def test_quantize_params_follow_the_table_and_the_model_runs(model, tmp_path, activations, qmin, qmax):
    path, data, values = model
    table = _tflite_table(values)
    out = tmp_path / "m.int8.onnx"
    summary = quantize_onnx(path, out, table, activations=activations)
    assert summary.ranges == 5 and summary.left_float == [] and out.is_file()
    params = qdq_params(out)
    for name in ("c", "a"):  # tflite entries: scale and zero point kept exactly (zero point shifted for uint8)
        e = table[name]
        scale, zp, _ = params[name]
        assert float(scale) == pytest.approx(e.scale, rel=1e-6), name
        assert int(zp) == e.zero_point + (qmin + 128), name
        assert zp.dtype == (np.int8 if activations == "s8" else np.uint8)
    for name in ("x", "y"):  # symmetric entries: ORT's rule on their (lo, hi)
        e = table[name]
        want_scale, want_zp = ort_rule(-127 * e.scale, 127 * e.scale, qmin, qmax)
        scale, zp, _ = params[name]
        assert float(scale) == pytest.approx(float(want_scale), rel=1e-6) and int(zp) == want_zp, name
    y = run(out, data[0])
    want = values[0]["y"]
    assert y.shape == want.shape and np.all(np.isfinite(y))
    assert 10 * math.log10(np.sum(want ** 2) / np.sum((want - y) ** 2)) > 20


@pytest.mark.parametrize("per_channel, shape", [(True, (4,)), (False, ())])
def test_weights_are_quantized_per_channel_or_per_tensor(model, tmp_path, per_channel, shape):
    path, _, values = model
    out = tmp_path / "m.int8.onnx"
    quantize_onnx(path, out, _tflite_table(values), per_channel=per_channel)
    params = qdq_params(out)
    weight = next(k for k in params if k.startswith("W"))
    scale, zp, attrs = params[weight]
    assert scale.shape == shape and np.all(zp == 0)
    if per_channel:  # one symmetric scale per output channel: max |w| of the channel / 127
        import onnx
        from onnx import numpy_helper

        w = next(numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.name == "W")
        np.testing.assert_allclose(scale, np.abs(w).reshape(4, -1).max(axis=1) / 127, rtol=1e-6)
        assert attrs.get("axis", 1) == 0


def test_a_table_without_some_tensors_is_refused_and_nothing_is_written(model, tmp_path):
    path, _, values = model
    partial = CalibrationTable([e for e in _tflite_table(values).values() if e.name not in ("a", "f")])
    out = tmp_path / "m.int8.onnx"
    with pytest.raises(InputError, match=r"no entry for 2 of the 5 tensors ONNX Runtime quantizes in this model \(a, f\)"):
        quantize_onnx(path, out, partial)
    assert list(tmp_path.iterdir()) == []


def test_missing_float_leaves_the_nodes_of_missing_tensors_in_float(model, tmp_path):
    path, data, values = model
    partial = CalibrationTable([e for e in _tflite_table(values).values() if e.name != "a"])
    out = tmp_path / "m.int8.onnx"
    summary = quantize_onnx(path, out, partial, missing="float")
    assert summary.left_float == ["a"] and sorted(summary.excluded_nodes) == ["flat", "leaky"]
    params = qdq_params(out)
    assert "a" not in params and "c" in params and "x" in params
    assert np.allclose(run(out, data[0]), values[0]["y"], atol=0.5)


def test_bad_arguments_and_files(model, tmp_path):
    path, _, values = model
    table = _tflite_table(values)
    with pytest.raises(InputError, match="activations 'u16' is not known; expected one of: s8, u8"):
        quantize_onnx(path, tmp_path / "o.onnx", table, activations="u16")
    with pytest.raises(InputError, match="missing 'skip' is not known; expected one of: error, float"):
        quantize_onnx(path, tmp_path / "o.onnx", table, missing="skip")
    (tmp_path / "not.onnx").write_text("hello")  # protobuf reads these bytes as an empty model
    with pytest.raises(InputError, match="not an ONNX model \\(found no graph nodes\\)"):
        quantize_onnx(tmp_path / "not.onnx", tmp_path / "o.onnx", table)
    (tmp_path / "bad.onnx").write_bytes(b"\x0a\xff\xff\xff")  # a truncated field
    with pytest.raises(InputError, match="not a readable ONNX model"):
        quantize_onnx(tmp_path / "bad.onnx", tmp_path / "o.onnx", table)
    with pytest.raises(InputError, match="no such file"):
        quantize_onnx(tmp_path / "absent.onnx", tmp_path / "o.onnx", table)
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputError, match="it is a folder"):
        quantize_onnx(path, tmp_path / "dir", table)
    with pytest.raises(InputError, match="folder .*nowhere does not exist"):
        quantize_onnx(path, tmp_path / "nowhere" / "o.onnx", table)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "dir", "not.onnx"] and not any((tmp_path / "dir").iterdir())


def test_missing_extra_names_the_install_command(model, tmp_path, monkeypatch):
    path, _, values = model
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError) as err:
        quantize_onnx(path, tmp_path / "o.onnx", _tflite_table(values))
    assert "onnxruntime extra" in str(err.value) and "pip install -e '.[onnxruntime]'" in str(err.value)
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[onnxruntime\]'"):
        check_onnx(path, path, [])


def _sqnr(f, q):
    f, q = np.asarray(f, np.float64), np.asarray(q, np.float64)
    return 10 * math.log10(np.sum(f * f) / np.sum((f - q) ** 2))


def test_check_reports_agreement_accuracy_and_tensor_sqnr(model, tmp_path):
    path, data, values = model
    out = tmp_path / "m.int8.onnx"
    quantize_onnx(path, out, _tflite_table(values))
    labels = np.concatenate([v["y"].argmax(1) for v in values])
    labels[:8] = (labels[:8] + 1) % 5  # float accuracy 40/48 by construction
    report = check_onnx(path, out, [{"x": x} for x in data], labels=labels)
    assert report.samples == 48 and report.output == "y" and report.runtime == "onnxruntime"
    assert report.float_accuracy == pytest.approx(40 / 48)
    int8_top = np.concatenate([run(out, x).argmax(1) for x in data])
    assert report.int8_accuracy == pytest.approx(float(np.mean(int8_top == labels)))
    assert report.top1_agreement == pytest.approx(float(np.mean(int8_top == np.concatenate(
        [v["y"].argmax(1) for v in values]))))
    y_int8 = np.concatenate([run(out, x) for x in data])
    assert report.output_sqnr_db == pytest.approx(_sqnr(np.concatenate([v["y"] for v in values]), y_int8), abs=1e-6)
    assert {t.name for t in report.tensors} == set(TENSORS)
    assert [t.sqnr_db for t in report.tensors] == sorted(t.sqnr_db for t in report.tensors)
    # the input's quantize-dequantize, written out here: round half to even, clamp, scale back
    scale, zp, _ = qdq_params(out)["x"]
    xs = np.concatenate(data).astype(np.float64)
    dq = (np.clip(np.round(xs / float(scale)) + int(zp), -128, 127) - int(zp)) * float(scale)
    x_report = next(t for t in report.tensors if t.name == "x")
    assert x_report.op == "input" and x_report.sqnr_db == pytest.approx(_sqnr(xs, dq), abs=1e-3)
    assert x_report.scale == pytest.approx(float(scale)) and x_report.own_sqnr_db == pytest.approx(x_report.sqnr_db)
    scale, zp, _ = qdq_params(out)["a"]  # own SQNR: the float tensor alone through its scale and zero point
    a = np.concatenate([v["a"] for v in values]).astype(np.float64)
    a_dq = (np.clip(np.round(a / float(scale)) + int(zp), -128, 127) - int(zp)) * float(scale)
    a_report = next(t for t in report.tensors if t.name == "a")
    assert a_report.own_sqnr_db == pytest.approx(_sqnr(a, a_dq), abs=1e-3) and a_report.zero_point == int(zp)


def _shrunk(table, name, factor=50.0):
    e = table[name]
    return table.with_entries([x if x.name != name else TensorCalibration(
        name, amax=e.amax / factor, scale=e.scale / factor, zero_point=e.zero_point, scheme=e.scheme)
        for x in table.values()])


def _checked(path, tmp_path, data, table, name):
    out = tmp_path / f"{name}.onnx"
    quantize_onnx(path, out, table)
    return check_onnx(path, out, [{"x": x} for x in data])


def test_a_tensor_with_a_wrong_tiny_range_drops_agreement_and_shows_as_worst(model, tmp_path):
    path, data, values = model
    good = _checked(path, tmp_path, data, _tflite_table(values), "good")
    assert good.top1_agreement > 0.9 and good.output_sqnr_db > 25 and all(t.sqnr_db > 25 for t in good.tensors)
    bad_out = _checked(path, tmp_path, data, _shrunk(_tflite_table(values), "y"), "bad_y")
    assert bad_out.tensors[0].name == "y" and bad_out.tensors[0].sqnr_db < 5 and bad_out.culprit().name == "y"
    assert bad_out.top1_agreement < good.top1_agreement - 0.2 and bad_out.output_sqnr_db < 5
    # inside the graph the error flows downstream: every later tensor drops with it, and the
    # own SQNR (each float tensor quantized alone with its parameters) names the one to blame
    bad_c = _checked(path, tmp_path, data, _shrunk(_tflite_table(values), "c"), "bad_c")
    sqnr = {t.name: t.sqnr_db for t in bad_c.tensors}
    assert bad_c.culprit().name == "c" and all(sqnr[n] < 5 for n in ("c", "a", "f", "y")) and sqnr["x"] > 25
    assert bad_c.tensors[-1].name == "x" and bad_c.top1_agreement < good.top1_agreement - 0.2
    own = {t.name: t.own_sqnr_db for t in bad_c.tensors}
    assert own["c"] < 5 and min(v for n, v in own.items() if n != "c") > 25


def test_check_refuses_labels_of_the_wrong_count(model, tmp_path):
    path, data, values = model
    out = tmp_path / "m.int8.onnx"
    quantize_onnx(path, out, _tflite_table(values))
    with pytest.raises(InputError, match="labels must be 16 integers"):
        check_onnx(path, out, [{"x": data[0]}], labels=np.zeros(3, int))
    with pytest.raises(InputError, match="no batches to check"):
        check_onnx(path, out, [])
    with pytest.raises(InputError, match="has no output 'z'"):
        check_onnx(path, out, [{"x": data[0]}], outputs=["z"])
    with pytest.raises(InputError, match="batch 0: ONNX Runtime refused the batch"):
        check_onnx(path, out, [{"x": data[0][:, :1]}])


def test_what_onnx_runtime_refuses_becomes_one_input_error(model, tmp_path):
    import onnx
    from onnx import helper

    path, data, values = model
    table = _tflite_table(values)
    with pytest.raises(InputError, match="ONNX Runtime cannot quantize the model .Must provide both 'scale' and"):
        quantize_onnx(path, tmp_path / "o.onnx", table, extra_options={"TensorQuantOverrides": {"x": [{"scale": 1.0}]}})
    m = onnx.load(str(path))
    m.opset_import.append(helper.make_opsetid("ai.onnx", 17))  # the default domain twice
    onnx.save(m, str(tmp_path / "two.onnx"))
    with pytest.raises(InputError, match="ONNX Runtime cannot quantize the model .Failed to find proper ai.onnx"):
        quantize_onnx(tmp_path / "two.onnx", tmp_path / "o.onnx", table)
    assert not (tmp_path / "o.onnx").exists()


def test_check_refuses_unreadable_models_and_labels_without_classes(model, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    path, data, values = model
    (tmp_path / "bad.onnx").write_bytes(b"\x0a\xff\xff\xff")
    with pytest.raises(InputError, match="bad.onnx: not a readable ONNX model"):
        check_onnx(path, tmp_path / "bad.onnx", [{"x": data[0]}])
    g = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(tmp_path / "odd.onnx"))
    with pytest.raises(InputError, match="odd.onnx: ONNX Runtime cannot load the model"):
        check_onnx(tmp_path / "odd.onnx", tmp_path / "odd.onnx", [{"x": data[0]}])
    g = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    # IR version 8: the oldest ONNX Runtime edgecal supports on Python 3.10 (1.23) reads up to IR 11
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(tmp_path / "sum.onnx"))
    with pytest.raises(InputError, match="labels given, but no output has class scores over a last axis; outputs: y"):
        check_onnx(tmp_path / "sum.onnx", tmp_path / "sum.onnx", [{"x": data[0]}], labels=np.zeros(1, int))
    with pytest.raises(InputError, match=r"batch 0, output 'y': int8 shape \(\) differs from float shape \(16, 5\)"):
        check_onnx(path, tmp_path / "sum.onnx", [{"x": data[0]}])


def test_a_symmetric_table_keeps_the_relu_it_cannot_clamp(tmp_path):
    """ORT drops a Relu whose output it quantizes asymmetrically; a symmetric range [-a, a] cannot stand in for it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgecal import Calibrator
    from edgecal.model.ort_quant import quantize_onnx

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 2, 3, 3)).astype(np.float32), "W")
    g = numpy_helper.from_array(rng.normal(0, 0.2, (3, 4 * 6 * 6)).astype(np.float32), "G")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "G"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "relunet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w, g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])  # ir_version set below
    model.ir_version = 8
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    x = rng.normal(0, 1, (32, 2, 6, 6)).astype(np.float32)
    cal = Calibrator()
    values = {"x": x, "c": None, "r": None, "f": None, "y": None}
    conv = np.stack([np.sum([np.pad(x[:, ci], ((0, 0), (1, 1), (1, 1)))[:, dy:dy + 6, dx:dx + 6]
                             * numpy_helper.to_array(w)[co, ci, dy, dx] for ci in range(2) for dy in range(3)
                             for dx in range(3)], axis=0) for co in range(4)], axis=1)
    values["c"], values["r"] = conv, np.maximum(conv, 0)
    values["f"] = values["r"].reshape(32, -1)
    values["y"] = values["f"] @ numpy_helper.to_array(g).T
    cal.observe_many(values)
    table = cal.compute("minmax", scheme="symmetric")
    out = tmp_path / "relu.int8.onnx"
    quantize_onnx(path, out, table)
    q = onnx.load(str(out))
    assert "Relu" in [n.op_type for n in q.graph.node]
    zps = [numpy_helper.to_array(i) for i in q.graph.initializer if i.name.endswith("_zero_point")]
    assert zps and all(int(np.max(np.abs(z))) == 0 for z in zps)  # symmetric: zero point 0 everywhere
    got = run(out, x)
    ref = values["y"]
    assert 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2)) > 25
