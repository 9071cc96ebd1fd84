"""Tiny int8 ONNX models (QLinearMatMul, QLinearConv, QuantizeLinear, MaxPool) built
with `onnx.helper`, run by ONNX Runtime's CPU provider on one thread.

Tests import this through `pytest.importorskip("onnxruntime")` first.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ELEM = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.float32): TensorProto.FLOAT,
        np.dtype(np.int32): TensorProto.INT32}


def _model(nodes, inputs, outputs, inits) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m.SerializeToString()


def _io(name, dtype, shape):
    return helper.make_tensor_value_info(name, ELEM[np.dtype(dtype)], list(shape))


def qlinear_matmul(a_shape, b, s_a, z_a, s_b, s_y, z_y) -> bytes:
    """y = QLinearMatMul(a, b): b int8 [K, N], per-tensor or per-column (1-D of N) scales, zero points 0."""
    s_b = np.asarray(s_b, np.float32)
    inits = {"a_s": np.float32(s_a), "a_z": np.int8(z_a), "b": b, "b_s": s_b, "b_z": np.zeros(s_b.shape, np.int8),
             "y_s": np.float32(s_y), "y_z": np.int8(z_y)}
    node = helper.make_node("QLinearMatMul", ["a", "a_s", "a_z", "b", "b_s", "b_z", "y_s", "y_z"], ["y"])
    return _model([node], [_io("a", np.int8, a_shape)], [_io("y", np.int8, (a_shape[0], b.shape[1]))], inits)


def qlinear_conv(x_shape, w, bias, s_x, z_x, s_w, s_y, z_y, y_shape, strides, pads, dilations, group) -> bytes:
    """NCHW QLinearConv with per-channel int8 weights [OC, IC/g, KH, KW] and int32 bias."""
    s_w = np.asarray(s_w, np.float32)
    inits = {"x_s": np.float32(s_x), "x_z": np.int8(z_x), "w": w, "w_s": s_w, "w_z": np.zeros(s_w.shape, np.int8),
             "y_s": np.float32(s_y), "y_z": np.int8(z_y), "B": bias.astype(np.int32)}
    node = helper.make_node("QLinearConv", ["x", "x_s", "x_z", "w", "w_s", "w_z", "y_s", "y_z", "B"], ["y"],
                            strides=list(strides), pads=list(pads), dilations=list(dilations), group=group)
    return _model([node], [_io("x", np.int8, x_shape)], [_io("y", np.int8, y_shape)], inits)


def quantize_linear(shape, scale, zp) -> bytes:
    inits = {"s": np.float32(scale), "z": np.int8(zp)}
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    return _model([node], [_io("x", np.float32, shape)], [_io("y", np.int8, shape)], inits)


def max_pool(x_shape, kernel, strides, pads, y_shape) -> bytes:
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(kernel), strides=list(strides), pads=list(pads))
    return _model([node], [_io("x", np.int8, x_shape)], [_io("y", np.int8, y_shape)], {})


def run(model: bytes, *inputs: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: x for i, x in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feeds)[0]
