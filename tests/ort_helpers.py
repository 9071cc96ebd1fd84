"""A small real ONNX model for the ONNX Runtime quantization tests, and ORT run outside the code under test.

x [N, 2, 6, 6] -> Conv 3x3 (4 channels, pad 1) -> c -> LeakyRelu -> a -> Flatten -> f -> Gemm -> y [N, 5].
LeakyRelu is outside edgecal's runner subset, so the model needs ONNX Runtime. Weights come
from a seeded RNG. Importing this module needs nothing optional; each helper imports its package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TENSORS = ["x", "c", "a", "f", "y"]


def build_model(path: Path, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {"W": rng.normal(0, 0.4, (4, 2, 3, 3)), "B": rng.normal(0, 0.1, 4),
               "G": rng.normal(0, 0.2, (5, 4 * 6 * 6)), "GB": rng.normal(0, 0.1, 5)}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("LeakyRelu", ["c"], ["a"], alpha=0.1, name="leaky"),
             helper.make_node("Flatten", ["a"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "G", "GB"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                              [numpy_helper.from_array(w.astype(np.float32), k) for k, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def batches(n: int, seed: int = 1, size: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, (size, 2, 6, 6)).astype(np.float32) for _ in range(n)]


def ort_values(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the float model for one batch, by ONNX Runtime with optimizations off and one thread."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    for name in TENSORS[1:-1]:
        model.graph.output.add().name = name
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = TENSORS[1:]
    return {"x": x, **dict(zip(names, session.run(names, {"x": x})))}


def run(path: Path, x: np.ndarray) -> np.ndarray:
    """The first output of any ONNX model file for input ``x``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def qdq_params(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """QuantizeLinear / weight DequantizeLinear parameters of a QDQ model: tensor -> (scale, zero point, attrs)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "QuantizeLinear":  # a graph output's producer writes <name>_QuantizeLinear_Input
            name = node.input[0].removesuffix("_QuantizeLinear_Input")
            out.setdefault(name, (inits[node.input[1]], inits[node.input[2]], attrs))
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:  # a weight stored quantized
            out.setdefault(node.input[0], (inits[node.input[1]], inits[node.input[2]], attrs))
    return out


def ort_rule(lo: float, hi: float, qmin: int, qmax: int) -> tuple[np.float32, int]:
    """ORT's asymmetric scale and zero point for the range (lo, hi), written out here from its documented rule."""
    rmin, rmax = min(np.float32(lo), np.float32(0)), max(np.float32(hi), np.float32(0))
    scale = (float(rmax) - float(rmin)) / (qmax - qmin)
    return np.float32(scale), int(np.round(qmin - float(rmin) / scale))
