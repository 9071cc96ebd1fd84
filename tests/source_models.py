"""One tiny float model written twice, as ONNX and as .tflite, for the model-source cross-checks.

x [N, 4] -> h = x @ W.T + b (Gemm transB / FULLY_CONNECTED) -> r = relu(h) -> y = r + c.
Tensors carry the same names in both files, so sources can be compared name by name,
and `reference` computes every tensor in numpy, outside the code under test. Importing
this module needs nothing optional; each builder imports its package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

W = (np.arange(12, dtype=np.float32).reshape(3, 4) / 10 - 0.5).astype(np.float32)
B = np.array([0.1, -0.2, 0.3], np.float32)
C = np.array([1.0, 2.0, 3.0], np.float32)
NAMES = ["x", "h", "r", "y"]


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    x = x.astype(np.float32)
    h = x @ W.T + B
    r = np.maximum(h, 0)
    return {"x": x, "h": h, "r": r, "y": r + C}


def onnx_model(path: Path, batch: int | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch or "N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch or "N", 3])
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1, name="fc"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "c"], ["y"], name="add")]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b"), numpy_helper.from_array(C, "c")]
    model = helper.make_model(helper.make_graph(nodes, "fc", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tflite_model(path: Path, batch: int = 2) -> Path:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    tensors, buffers, codes = [], [fb.BufferT()], []

    def tensor(name: str, shape: list[int], data: np.ndarray | None = None) -> int:
        t = fb.TensorT()
        t.shape, t.type, t.name, t.buffer = shape, fb.TensorType.FLOAT32, name.encode(), 0
        if data is not None:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data, np.float32).tobytes(), np.uint8)
            buffers.append(buf)
            t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    def op(code: int, inputs: list[int], outputs: list[int], options_type: int = 0, options=None):
        oc = fb.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        codes.append(oc)
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = len(codes) - 1, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        return o

    x, w, b = tensor("x", [batch, 4]), tensor("W", [3, 4], W), tensor("b", [3], B)
    h, r, c, y = tensor("h", [batch, 3]), tensor("r", [batch, 3]), tensor("c", [3], C), tensor("y", [batch, 3])
    ops = [op(fb.BuiltinOperator.FULLY_CONNECTED, [x, w, b], [h], fb.BuiltinOptions.FullyConnectedOptions,
              fb.FullyConnectedOptionsT()),
           op(fb.BuiltinOperator.RELU, [h], [r]),
           op(fb.BuiltinOperator.ADD, [r, c], [y], fb.BuiltinOptions.AddOptions, fb.AddOptionsT())]
    sub = fb.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators = tensors, [x], [y], ops
    model = fb.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [sub], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path
