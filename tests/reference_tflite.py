"""Tiny int8 .tflite models built in pure Python, and the TFLM interpreter that runs them.

Models are written with the TFLite schema's object API shipped in ``ai-edge-litert``
(no TensorFlow). Each has one operator; tensors are quantized per TFLite's spec
(weights symmetric per channel on the output axis, bias int32 with scale
float32(s_in * s_w[c])). Importing this module needs ``ai_edge_litert`` and
``tflite_micro``; tests import it through `pytest.importorskip` first.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb
from tflite_micro.python.tflite_micro import runtime as tflm

TYPES = {np.dtype(np.int8): fb.TensorType.INT8, np.dtype(np.int32): fb.TensorType.INT32,
         np.dtype(np.float32): fb.TensorType.FLOAT32}
ACT = {None: fb.ActivationFunctionType.NONE, "relu": fb.ActivationFunctionType.RELU,
       "relu6": fb.ActivationFunctionType.RELU6}
PAD = {"SAME": fb.Padding.SAME, "VALID": fb.Padding.VALID}


class Graph:
    """One subgraph under construction: tensors, buffers, one operator."""

    def __init__(self) -> None:
        self.tensors: list = []
        self.buffers = [fb.BufferT()]  # buffer 0: the empty sentinel

    def tensor(self, shape, dtype, scale=None, zp=None, data=None, axis=0) -> int:
        t = fb.TensorT()
        t.shape, t.type, t.name = list(shape), TYPES[np.dtype(dtype)], f"t{len(self.tensors)}".encode()
        t.buffer = 0
        if data is not None:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = fb.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(scale)]
            q.zeroPoint = [int(z) for z in np.atleast_1d(zp)]
            q.quantizedDimension = axis
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def model(self, code: int, version: int, inputs, outputs, options_type=0, options=None, op_inputs=None) -> bytes:
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, list(op_inputs or inputs), list(outputs)
        op.builtinOptionsType, op.builtinOptions = options_type, options
        sub = fb.SubGraphT()
        sub.tensors, sub.inputs, sub.outputs, sub.operators = self.tensors, list(inputs), list(outputs), [op]
        opcode = fb.OperatorCodeT()
        opcode.builtinCode, opcode.deprecatedBuiltinCode, opcode.version = code, min(code, 127), version
        m = fb.ModelT()
        m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, [opcode], [sub], self.buffers
        m.description = b"edgecal test"
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _opts(cls, **fields):
    o = cls()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def bias_scales(s_in, s_w):
    return (np.float32(s_in) * np.asarray(s_w, np.float32)).astype(np.float32)


def conv_model(x_shape, w, bias, s_in, zp_in, s_w, s_out, zp_out, stride=(1, 1), padding="SAME", dilation=(1, 1),
               act=None) -> bytes:
    g = Graph()
    oc = w.shape[0]
    i = g.tensor(x_shape, np.int8, s_in, zp_in)
    f = g.tensor(w.shape, np.int8, s_w, [0] * oc, w, axis=0)
    bb = g.tensor([oc], np.int32, bias_scales(s_in, s_w), [0] * oc, bias)
    o = g.tensor(out_shape(x_shape, w.shape[1:3], stride, padding, dilation, oc), np.int8, s_out, zp_out)
    opts = _opts(fb.Conv2DOptionsT, padding=PAD[padding], strideH=stride[0], strideW=stride[1],
                 dilationHFactor=dilation[0], dilationWFactor=dilation[1], fusedActivationFunction=ACT[act])
    return g.model(fb.BuiltinOperator.CONV_2D, 3, [i], [o], fb.BuiltinOptions.Conv2DOptions, opts, [i, f, bb])


def depthwise_model(x_shape, w, bias, s_in, zp_in, s_w, s_out, zp_out, stride=(1, 1), padding="SAME",
                    dilation=(1, 1), act=None) -> bytes:
    g = Graph()
    oc = w.shape[3]
    i = g.tensor(x_shape, np.int8, s_in, zp_in)
    f = g.tensor(w.shape, np.int8, s_w, [0] * oc, w, axis=3)
    bb = g.tensor([oc], np.int32, bias_scales(s_in, s_w), [0] * oc, bias)
    o = g.tensor(out_shape(x_shape, w.shape[1:3], stride, padding, dilation, oc), np.int8, s_out, zp_out)
    opts = _opts(fb.DepthwiseConv2DOptionsT, padding=PAD[padding], strideH=stride[0], strideW=stride[1],
                 depthMultiplier=oc // x_shape[3], dilationHFactor=dilation[0], dilationWFactor=dilation[1],
                 fusedActivationFunction=ACT[act])
    return g.model(fb.BuiltinOperator.DEPTHWISE_CONV_2D, 3, [i], [o], fb.BuiltinOptions.DepthwiseConv2DOptions,
                   opts, [i, f, bb])


def fc_model(x_shape, w, bias, s_in, zp_in, s_w, s_out, zp_out, act=None) -> bytes:
    g = Graph()
    n = w.shape[0]
    s_w = np.atleast_1d(np.asarray(s_w, np.float32))
    i = g.tensor(x_shape, np.int8, s_in, zp_in)
    f = g.tensor(w.shape, np.int8, s_w, [0] * s_w.size, w, axis=0)
    bb = g.tensor([n], np.int32, bias_scales(s_in, s_w), [0] * s_w.size, bias)
    o = g.tensor([x_shape[0], n], np.int8, s_out, zp_out)
    opts = _opts(fb.FullyConnectedOptionsT, fusedActivationFunction=ACT[act])
    version = 12 if s_w.size > 1 else 4
    return g.model(fb.BuiltinOperator.FULLY_CONNECTED, version, [i], [o], fb.BuiltinOptions.FullyConnectedOptions,
                   opts, [i, f, bb])


def add_model(shape, p1, p2, po, act=None) -> bytes:
    g = Graph()
    a, b = g.tensor(shape, np.int8, *p1), g.tensor(shape, np.int8, *p2)
    o = g.tensor(shape, np.int8, *po)
    opts = _opts(fb.AddOptionsT, fusedActivationFunction=ACT[act])
    return g.model(fb.BuiltinOperator.ADD, 2, [a, b], [o], fb.BuiltinOptions.AddOptions, opts)


def pool_model(x_shape, average, kernel, stride, padding, scale, zp, act=None) -> bytes:
    g = Graph()
    i = g.tensor(x_shape, np.int8, scale, zp)
    oshape = out_shape(x_shape, kernel, stride, padding, (1, 1), x_shape[3])
    o = g.tensor(oshape, np.int8, scale, zp)
    opts = _opts(fb.Pool2DOptionsT, padding=PAD[padding], strideH=stride[0], strideW=stride[1],
                 filterHeight=kernel[0], filterWidth=kernel[1], fusedActivationFunction=ACT[act])
    code = fb.BuiltinOperator.AVERAGE_POOL_2D if average else fb.BuiltinOperator.MAX_POOL_2D
    return g.model(code, 2, [i], [o], fb.BuiltinOptions.Pool2DOptions, opts)


def quantize_model(shape, scale, zp) -> bytes:
    g = Graph()
    i = g.tensor(shape, np.float32)
    o = g.tensor(shape, np.int8, scale, zp)
    return g.model(fb.BuiltinOperator.QUANTIZE, 2, [i], [o])


def out_shape(x_shape, kernel, stride, padding, dilation, channels):
    dims = []
    for size, k, s, d in zip(x_shape[1:3], kernel, stride, dilation):
        eff = (k - 1) * d + 1
        dims.append((size + s - 1) // s if padding == "SAME" else (size - eff + s) // s)
    return [x_shape[0], *dims, channels]


def run_tflm(model: bytes, *inputs: np.ndarray) -> np.ndarray:
    """Invoke the TFLM interpreter once (reference kernels) and return output 0."""
    arena = 4 * sum(x.nbytes for x in inputs) + 8 * len(model) + (4 << 20)
    interp = tflm.Interpreter.from_bytes(model, arena_size=arena)
    for k, x in enumerate(inputs):
        interp.set_input(x, k)
    interp.invoke()
    return np.array(interp.get_output(0))
