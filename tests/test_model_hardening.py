"""Untrusted ONNX models: external data stays inside the model's folder, malformed graphs give one line,
and memory is bounded by the configured budget, never by what the model asks for."""

from __future__ import annotations

import os
import re
import tracemalloc

import numpy as np
import pytest

from edgecal import Calibrator, CalibrationTable, EdgecalError, InputError, TensorCalibration
from edgecal.cli import main

onnx = pytest.importorskip("onnx", reason="onnx is not installed; pip install -e '.[test]'")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgecal.model import MemoryBudget, from_onnx, load_graph, observe_model, run_float  # noqa: E402

X_SHAPE = (2, 1, 4, 4)


def model_bytes(nodes, inits=(), outputs=("y",), x_shape=("N", 1, 4, 4)):
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


def init(name, values):
    return numpy_helper.from_array(np.asarray(values), name)


def raw_tensor(name, dims, data_type=TensorProto.FLOAT, raw=None):
    t = TensorProto(name=name, data_type=data_type, dims=list(dims))
    if raw is not None:
        t.raw_data = raw
    return t


def external(name, dims, location, offset=None, length=None):
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims), data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            t.external_data.add(key=key, value=str(value))
    return t


def relu(inp="x", out="y", **attrs):
    return helper.make_node("Relu", [inp], [out], name="r", **attrs)


def conv(inputs=("x", "w"), outputs=("y",), **attrs):
    return helper.make_node("Conv", list(inputs), list(outputs), name="c", **attrs)


W = init("w", np.ones((2, 1, 3, 3), np.float32))
MALFORMED = {  # kind: (nodes, initializers, outputs, expected words of the one-line error)
    "dangling input": ([relu("ghost")], [], ["y"], "input 'ghost' is not a graph input"),
    "node without output": ([helper.make_node("Relu", ["x"], [], name="r")], [], ["x"], "expected exactly one"),
    "initializer without data": ([conv()], [raw_tensor("w", (2, 1, 3, 3))], ["y"], "0 values in float_data"),
    "initializer with short data": ([conv()], [raw_tensor("w", (2, 1, 3, 3), raw=b"\0" * 8)], ["y"],
                                    "8 bytes of raw data"),
    "external data beyond the file": ([conv()], [external("w", (2, 1, 3, 3), "w.bin", offset=64, length=72)], ["y"],
                                      "lies beyond its 72 bytes"),
    "MaxPool without kernel_shape": ([helper.make_node("MaxPool", ["x"], ["y"], name="p")], [], ["y"],
                                     "no kernel_shape"),
    "non-scalar Clip min": ([helper.make_node("Clip", ["x", "lo"], ["y"], name="cl")],
                            [init("lo", np.zeros(3, np.float32))], ["y"], "is float32 (3,); expected a real scalar"),
    "output no node computes": ([relu()], [], ["z"], "graph outputs ['z'] are not computed"),
    "Conv without weights": ([conv(("x",))], [], ["y"], "expected 2 to 3"),
    "float strides": ([conv(strides=[1.5, 1.5])], [W], ["y"], "expected int values"),
    "group 0": ([conv(group=0)], [W], ["y"], "expected values >= 1"),
    "unknown auto_pad": ([conv(auto_pad="WRAP")], [W], ["y"], "auto_pad='WRAP'"),
    "tensor produced twice": ([relu(), relu("y", "x")], [], ["y"], "output 'x' is already"),
    "negative dimension": ([conv()], [raw_tensor("w", (2, -1, 3, 3), raw=b"")], ["y"], "negative dimension"),
    "float Reshape shape": ([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                            [init("s", np.array([2.0, 16.0], np.float32))], ["y"], "expected a 1-D integer tensor"),
    "Flatten axis out of range": ([helper.make_node("Flatten", ["x"], ["y"], name="f", axis=7)], [], ["y"],
                                  "axis 7 for an input of shape"),
}
MALFORMED["Constant without output"] = ([helper.make_node("Constant", [], [], name="k", value=init("v", [1.0])), relu()],
                                       [], ["y"], "(Constant): outputs []; expected exactly one")
UNDEFINED_ATTR = helper.make_node("Relu", ["x"], ["y"], name="r")
UNDEFINED_ATTR.attribute.add(name="alpha")  # no type, no value
MALFORMED["attribute of undefined type"] = ([UNDEFINED_ATTR], [], ["y"], "(Relu): attribute alpha=None; expected float values")
FOUND_AT_RUN = {"Flatten axis out of range"}  # needs the input's rank
# valid ONNX edgecal's runner does not run: --runtime auto hands these to ONNX Runtime instead
UNSUPPORTED = {
    "string initializer": ([helper.make_node("Add", ["x", "s"], ["y"], name="a")],
                           [helper.make_tensor("s", TensorProto.STRING, [1], [b"a"])], ["y"], "data type 8"),
    "bfloat16 weights": ([conv()], [raw_tensor("w", (1,), TensorProto.BFLOAT16, b"\0\0")], ["y"], "data type 16"),
    "MaxPool with indices": ([helper.make_node("MaxPool", ["x"], ["y", "i"], name="p", kernel_shape=[2, 2])], [],
                             ["y"], "expected exactly one named output"),
    "pads of two values": ([conv(pads=[1, 1])], [W], ["y"], "only 2-D windows"),
    "computed Clip bound": ([helper.make_node("Clip", ["x", "x"], ["y"], name="cl")], [], ["y"],
                            "Clip bounds must be constants"),
    "segmented tensor": ([conv()], [TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1],
                                                segment=TensorProto.Segment(begin=0, end=1))], ["y"],
                         "segmented tensors are not supported"),
}


def one_line_failure(capsys, argv, out):
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("edgecal: error: ") and "Traceback" not in captured.err, lines
    assert not os.path.exists(out)
    return lines[0]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "x.npy", np.ones(X_SHAPE, np.float32))
    np.savez(tmp_path / "data.npz", x=np.ones(X_SHAPE, np.float32), y=np.zeros(2, np.int64))
    table = CalibrationTable([TensorCalibration.symmetric(n, 1.0) for n in ("x", "y")])
    table.save(tmp_path / "t.json")
    (tmp_path / "w.bin").write_bytes(np.ones(18, np.float32).tobytes())
    return tmp_path


@pytest.mark.parametrize("kind", sorted(MALFORMED) + sorted(UNSUPPORTED))
def test_malformed_models_fail_with_one_line(kind, workdir, capsys):
    nodes, inits, outputs, words = MALFORMED.get(kind) or UNSUPPORTED[kind]
    model = workdir / "m.onnx"
    model.write_bytes(model_bytes(nodes, inits, outputs))
    if kind not in FOUND_AT_RUN:
        with pytest.raises(InputError if kind in UNSUPPORTED else EdgecalError, match=re.escape(words)):
            load_graph(model)
    out = workdir / "table.json"
    for runtime in ("edgecal",) if kind in UNSUPPORTED else ("auto", "edgecal"):
        one_line_failure(capsys, ["calibrate", "--model", str(model), "--runtime", runtime, "--inputs",
                                  str(workdir / "in"), "-o", str(out), "-q"], out)
    line = one_line_failure(capsys, ["check", "--model", str(model), "--table", str(workdir / "t.json"), "--data",
                                     str(workdir / "data.npz"), "--runtime", "edgecal"], out)
    assert words in line


# -- external data ---------------------------------------------------------------------------------
WEIGHTS = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3) / 7


def external_model(folder, location, offset=None, length=None):
    folder.mkdir(exist_ok=True)
    path = folder / "m.onnx"
    path.write_bytes(model_bytes([conv()], [external("w", WEIGHTS.shape, location, offset, length)]))
    return path


@pytest.fixture
def secret(tmp_path, monkeypatch):
    """A file the service could read, in the working directory (as cwd '/' under systemd), outside the model's folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "secret.bin").write_bytes(np.full(18, 42.0, np.float32).tobytes())
    monkeypatch.chdir(cwd)
    return cwd / "secret.bin"


def test_external_data_is_read_from_the_models_folder_not_the_working_directory(tmp_path, secret):
    models = tmp_path / "models"
    models.mkdir()
    (models / "secret.bin").write_bytes(b"\0" * 8 + WEIGHTS.tobytes())  # same name as the file in the cwd
    graph = load_graph(external_model(models, "secret.bin", offset=8, length=72))
    assert np.array_equal(graph.constants["w"], WEIGHTS)
    (models / "secret.bin").unlink()
    with pytest.raises(EdgecalError, match="cannot open external data 'secret.bin'"):
        load_graph(models / "m.onnx")


def test_external_data_through_a_subfolder_and_an_inner_symlink_is_read(tmp_path):
    models = tmp_path / "models"
    (models / "data").mkdir(parents=True)
    (models / "data" / "w.bin").write_bytes(WEIGHTS.tobytes())
    (models / "link.bin").symlink_to(models / "data" / "w.bin")
    assert np.array_equal(load_graph(external_model(models, "data/w.bin")).constants["w"], WEIGHTS)
    assert np.array_equal(load_graph(external_model(models, "link.bin")).constants["w"], WEIGHTS)


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink", "dotdot inside"])
def test_external_data_outside_the_models_folder_is_refused(tmp_path, secret, where, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "sub").mkdir()
    location = {"absolute": str(secret), "dotdot": "../cwd/secret.bin", "symlink": "out.bin",
                "dotdot inside": "sub/../out.bin"}[where]
    (models / "out.bin").symlink_to(secret)
    model = external_model(models, location)
    from edgecal.model import UnsafeModelError

    with pytest.raises(UnsafeModelError, match="expected a file inside"):
        load_graph(model)
    out = tmp_path / "t.json"
    np.save(tmp_path / "x.npy", np.ones(X_SHAPE, np.float32))
    line = one_line_failure(capsys, ["calibrate", "--model", str(model), "--inputs", str(tmp_path / "x.npy"),
                                     "-o", str(out), "-q"], out)
    assert "external data" in line


@pytest.mark.parametrize("offset, length, msg", [
    (0, 80, "offset 0 length 80 lies beyond its 72 bytes"),
    (80, None, "offset 80 length -8 lies beyond"),
    (8, None, "holds 64 bytes for shape [2, 1, 3, 3]; expected 72"),
    (-1, None, "offset -1 / length None; expected values >= 0"),
    ("x", None, "expected integers"),
])
def test_external_data_ranges_must_lie_in_the_file_and_fit_the_tensor(tmp_path, offset, length, msg):
    models = tmp_path / "models"
    models.mkdir()
    (models / "w.bin").write_bytes(WEIGHTS.tobytes())
    from edgecal.model import MalformedModelError

    with pytest.raises(MalformedModelError, match=re.escape(msg)):
        load_graph(external_model(models, "w.bin", offset, length))


def test_external_data_of_a_model_held_in_memory_is_refused(tmp_path):
    from edgecal.model import UnsafeModelError

    model = onnx.load_model_from_string(model_bytes([conv()], [external("w", WEIGHTS.shape, "w.bin")]))
    with pytest.raises(UnsafeModelError, match="was not read from a file"):
        from_onnx(model)


def test_external_data_that_is_not_a_regular_file_is_refused(tmp_path):
    models = tmp_path / "models"
    (models / "w.bin").mkdir(parents=True)
    with pytest.raises(EdgecalError, match="'w.bin' is not a regular file"):
        load_graph(external_model(models, "w.bin"))


# -- memory budget ---------------------------------------------------------------------------------
def relu_chain(n, width):
    nodes = [relu("x" if k == 0 else f"r{k - 1}", f"r{k}") for k in range(n)]
    nodes = [helper.make_node("Relu", nd.input, nd.output, name=f"relu{k}") for k, nd in enumerate(nodes)]
    return from_onnx(onnx.load_model_from_string(model_bytes(nodes, outputs=[f"r{n - 1}"], x_shape=("N", width))))


def test_a_tiny_conv_asking_for_gigabytes_is_refused_before_running(tmp_path, capsys):
    model = tmp_path / "pads.onnx"
    model.write_bytes(model_bytes([conv(pads=[100_000] * 4)], [init("w", np.ones((1, 1, 1, 1), np.float32))],
                                  x_shape=(1, 1, 1, 1)))
    assert model.stat().st_size < 200
    graph = load_graph(model)
    with pytest.raises(InputError, match=r"node 'c' \(Conv\): output 'y' of shape \(1, 1, 200001, 200001\) needs "
                                         r"160001600004 bytes; expected at most 1073741824 per tensor"):
        run_float(graph, {"x": np.ones((1, 1, 1, 1), np.float32)})
    np.save(tmp_path / "x.npy", np.ones((1, 1, 1, 1), np.float32))
    out = tmp_path / "t.json"
    line = one_line_failure(capsys, ["calibrate", "--model", str(model), "--runtime", "edgecal", "--inputs",
                                     str(tmp_path / "x.npy"), "-o", str(out), "-q"], out)
    assert "memory budget" in line


def test_padding_alone_counts_against_the_budget():
    graph = relu_chain(1, 4)
    pads = from_onnx(onnx.load_model_from_string(model_bytes(
        [helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2], pads=[1, 1, 1, 1], strides=[1000, 1000])],
        x_shape=(1, 1, 1000, 1000))))
    assert graph.budget == MemoryBudget()
    pads.budget = MemoryBudget(tensor_bytes=4_000_000, total_bytes=10**9)  # the input fits, padded it does not
    with pytest.raises(InputError, match=r"a working array of 1004004 values needs 4016016 bytes"):
        run_float(pads, {"x": np.zeros((1, 1, 1000, 1000), np.float32)})


def test_a_long_chain_is_observed_as_it_runs_within_a_budget_that_cannot_hold_every_tensor():
    graph = relu_chain(50, 25_000)  # 100 kB per tensor, 5.1 MB for all 51
    graph.budget = MemoryBudget(tensor_bytes=1 << 20, total_bytes=1 << 20)
    x = np.linspace(-1, 2, 25_000, dtype=np.float32)[None]
    with pytest.raises(InputError, match=r"node 'relu9' \(Relu\): the tensors alive while it runs need 1100000 bytes; "
                                         r"expected at most 1048576 in all"):
        run_float(graph, {"x": x})
    cal = Calibrator()
    observe_model(cal, graph, {"x": x})
    table = cal.compute("minmax")
    assert list(table) == ["x"] + [f"r{k}" for k in range(50)]
    assert table["x"].amax == 2.0 and all(table[f"r{k}"].amax == 2.0 for k in range(50))
    assert set(run_float(graph, {"x": x}, keep=["r3"])) == {"r3", "r49"}


def test_intermediates_are_freed_after_their_last_reader():
    graph = relu_chain(40, 250_000)  # 1 MB per tensor
    x = np.ones((1, 250_000), np.float32)
    peaks = {}
    for keep in (None, ()):
        tracemalloc.start()
        run_float(graph, {"x": x}, keep=keep)
        peaks[keep] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[None] > 40e6 and peaks[()] < 5e6, peaks


def test_constants_beyond_the_budget_and_bad_budgets_are_refused(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(model_bytes([conv()], [W]))
    assert load_graph(model, MemoryBudget(tensor_bytes=72)).constants["w"].shape == (2, 1, 3, 3)
    with pytest.raises(InputError, match=r"tensor 'w': shape \[2, 1, 3, 3\] of float needs 72 bytes; expected at most 71"):
        load_graph(model, MemoryBudget(tensor_bytes=71))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="memory budget tensor_bytes="):
            MemoryBudget(tensor_bytes=bad)


def test_the_int8_run_and_the_check_respect_the_budget():
    from edgecal.model import Int8Model, check_model

    graph = relu_chain(3, 1000)
    table = CalibrationTable([TensorCalibration.symmetric(n, 1.0) for n in ("x", "r0", "r1", "r2")])
    x = np.ones((1, 1000), np.float32)
    assert check_model(graph, table, {"x": x}).samples == 1
    graph.budget = MemoryBudget(tensor_bytes=3999, total_bytes=10**6)
    with pytest.raises(InputError, match=r"model input 'x' of shape \(1, 1000\) needs 4000 bytes"):
        run_float(graph, {"x": x})
    for call in (lambda: Int8Model(graph, table).run({"x": x}), lambda: check_model(graph, table, {"x": x})):
        with pytest.raises(InputError, match=r"model input 'x' of shape \(1, 1000\) needs 4000 bytes; expected at most "
                                             r"3999 per tensor"):
            call()


@pytest.mark.parametrize("node, inits, msg", [
    (helper.make_node("Gemm", ["x", "w"], ["y"], name="g"), [init("w", np.ones((5, 2), np.float32))],
     r"node 'g' \(Gemm\): shapes do not match \(\(2, 4\) times \(5, 2\), transB 0\)"),
    (helper.make_node("Add", ["x", "b"], ["y"], name="a"), [init("b", np.ones(3, np.float32))],
     r"node 'a' \(Add\): shapes do not match \(\(2, 4\) and \(3,\) do not broadcast\)"),
    (helper.make_node("Reshape", ["x", "s"], ["y"], name="r"), [init("s", np.array([-1, -1], np.int64))],
     r"node 'r' \(Reshape\): cannot reshape \(2, 4\) to \(-1, -1\)"),
])
def test_shapes_that_do_not_fit_are_refused_before_running(node, inits, msg):
    graph = from_onnx(onnx.load_model_from_string(model_bytes([node], inits, x_shape=("N", 4))))
    with pytest.raises(InputError, match=msg):
        run_float(graph, {"x": np.ones((2, 4), np.float32)})


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16, np.uint16,
                                   np.int32, np.int64, np.uint32, np.uint64, np.bool_])
def test_constants_decode_as_onnx_decodes_them(dtype):
    from edgecal.model.initializers import tensor_array

    values = (np.arange(-3, 9).reshape(3, 4) % 2 if dtype is np.bool_ else np.arange(-3, 9).reshape(3, 4) * 3 + 1)
    arr = values.astype(dtype)
    raw = numpy_helper.from_array(arr, "t")
    typed = helper.make_tensor("t", helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape, arr.reshape(-1).tolist())
    for t in (raw, typed):
        got = tensor_array(t, None, 1 << 20)
        assert got.dtype == arr.dtype and np.array_equal(got, numpy_helper.to_array(t)) and np.array_equal(got, arr)
