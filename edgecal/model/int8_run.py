"""Lower a float `Graph` to int8 with a `CalibrationTable`, and run it on the reference kernels.

Lowering follows what the TFLite converter produces:

- activations take scale and zero point from the table (symmetric entries have
  zero point 0; ``tflite`` entries of never-negative tensors zero point -128) and
  live in [-128, 127];
- Conv / Gemm / MatMul weights are quantized symmetric per output channel to
  [-127, 127] (scale max|w| / 127, round half away from zero), biases to int32
  with scale ``s_in * s_w[c]``; a Conv with ``group`` equal to its input channels
  and one input channel per group runs as depthwise;
- an Add of a constant right after MatMul / Gemm / Conv becomes its bias, and a
  Relu or Clip right after Conv / Gemm / MatMul / Add becomes the fused activation
  clamp, when the fused tensor has no other reader; the table entry of the last
  tensor of such a chain gives the output parameters;
- a standalone Relu / Clip rescales from its input to its output parameters
  (TFLite's int8 RELU kernel); MaxPool, AveragePool, GlobalAveragePool, Flatten
  and Reshape keep their input's scale and zero point, as TFLite requires.

Tensors stay in ONNX layout (NCHW); the kernels see NHWC views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .. import reference as ref
from ..errors import InputError
from ..table import CalibrationTable
from .float_run import check_feeds, clip_bounds, flatten_to, reshape_to, window
from .graph import Graph, Node
from .shapes import plan

FUSABLE = {"Conv", "Gemm", "MatMul", "Add"}
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class QParams:
    """Scale (a float32 value) and zero point of an int8 tensor."""

    scale: float
    zero_point: int

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ref.dequantize(q, self.scale, self.zero_point)


@dataclass
class Step:
    """One int8 operation: the nodes it covers, its activation inputs and output, a runner."""

    nodes: list[Node]
    inputs: tuple[str, ...]
    output: str
    run: Callable[..., np.ndarray] = field(repr=False)


def quantize_weights(w: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 weights in [-127, 127] and their float32 scales (max |w| / 127)."""
    wf = np.asarray(w, dtype=np.float32)
    if not np.isfinite(wf).all():
        raise InputError("weights hold NaN or Inf; expected finite values")
    moved = np.moveaxis(wf, axis, 0).reshape(wf.shape[axis], -1)
    amax = np.abs(moved).max(axis=1) if moved.size else np.zeros(wf.shape[axis], np.float32)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.stack([ref.quantize(row, s) for row, s in zip(moved, scale)]).clip(-127, 127)
    return np.moveaxis(q.reshape(np.moveaxis(wf, axis, 0).shape), 0, axis), scale


def quantize_bias(b: np.ndarray | None, s_in: float, s_w: np.ndarray, where: str) -> np.ndarray | None:
    if b is None:
        return None
    bias_scale = (np.float32(s_in) * s_w).astype(np.float64)
    q = np.round(np.broadcast_to(np.asarray(b, np.float64).reshape(-1), s_w.shape) / bias_scale)
    if np.abs(q).max(initial=0) > INT32_MAX:
        raise InputError(f"{where}: bias does not fit int32 at scale s_in * s_w; expected a larger input scale")
    return q.astype(np.int32)


class Int8Model:
    """A float graph lowered to int8 with ``table`` and run with ``rounding`` ("tflite", "tflite-single", "onnx").

    Raises
    ------
    InputError
        If the table lacks a tensor the int8 model needs (it is named), a weight is
        not constant, or an op cannot be lowered.
    """

    def __init__(self, graph: Graph, table: CalibrationTable, rounding: str = "tflite") -> None:
        ref.requant.check_rounding(rounding)
        self.graph, self.table, self.rounding = graph, table, rounding
        self.qparams: dict[str, QParams] = {}
        self.steps: list[Step] = []
        for name, _ in graph.inputs:
            self.qparams[name] = self._entry(name, "a model input")
        self._lower()

    # -- lowering ----------------------------------------------------------------------------------
    def _entry(self, tensor: str, what: str) -> QParams:
        if tensor not in self.table:
            known = ", ".join(list(self.table)[:8]) + (", ..." if len(self.table) > 8 else "")
            raise InputError(f"the table has no entry for tensor {tensor!r} ({what}), which the int8 model needs; "
                             f"the table has: {known or 'nothing'}")
        e = self.table[tensor]
        return QParams(float(np.float32(e.scale)), int(e.zero_point))

    def _const(self, node: Node, k: int, what: str) -> np.ndarray | None:
        if len(node.inputs) <= k or not node.inputs[k]:
            return None
        if node.inputs[k] not in self.graph.constants:
            raise InputError(f"{node.where()}: {what} {node.inputs[k]!r} must be a constant for int8 lowering")
        return np.asarray(self.graph.constants[node.inputs[k]], dtype=np.float32)

    def _sole_reader(self, tensor: str, ops: tuple[str, ...]) -> Node | None:
        readers = self.graph.consumers(tensor)
        if len(readers) == 1 and readers[0].op in ops and tensor not in self.graph.outputs:
            return readers[0]
        return None

    def _chain(self, node: Node) -> tuple[list[Node], Any, str]:
        """Nodes fused into ``node`` (bias Add, then Relu / Clip), the extra bias and the final output."""
        nodes, bias, out = [node], None, node.outputs[0]
        nxt = self._sole_reader(out, ("Add",)) if node.op != "Add" else None
        if nxt is not None:
            other = [i for i in nxt.inputs if i != out]
            if len(other) == 1 and other[0] in self.graph.constants:
                nodes, bias, out = nodes + [nxt], np.asarray(self.graph.constants[other[0]], np.float32), nxt.outputs[0]
        act = self._sole_reader(out, ("Relu", "Clip"))
        if act is not None:
            nodes, out = nodes + [act], act.outputs[0]
        return nodes, bias, out

    def _act(self, nodes: list[Node], out: QParams) -> tuple[int, int]:
        last = nodes[-1]
        if last.op == "Relu":
            return ref.activation_range("relu", out.scale, out.zero_point)
        if last.op == "Clip":
            return ref.activation_range(clip_bounds(last, self.graph.constants), out.scale, out.zero_point)
        return -128, 127

    def _lower(self) -> None:
        fused: set[str] = set()
        for node in self.graph.nodes:
            if node.name in fused:
                continue
            if node.op in FUSABLE:
                nodes, bias, out = self._chain(node)
                fused.update(n.name for n in nodes[1:])
                self.qparams[out] = self._entry(out, f"output of {node.where()}")
                self.steps.append(self._lower_fusable(nodes, bias, out))
            else:
                self.steps.append(self._lower_other(node))

    def _lower_fusable(self, nodes: list[Node], extra_bias: Any, out: str) -> Step:
        node = nodes[0]
        qo = self.qparams[out]
        act = self._act(nodes, qo)
        if node.op == "Add":
            if any(i in self.graph.constants for i in node.inputs):
                raise InputError(f"{node.where()}: an Add of a constant is supported only as the bias of a "
                                 "preceding Conv, Gemm or MatMul")
            a, b = (self.qparams[i] for i in node.inputs)
            rounding = self.rounding
            run = lambda x1, x2: ref.add(x1, x2, (a.scale, a.zero_point), (b.scale, b.zero_point),  # noqa: E731
                                         (qo.scale, qo.zero_point), act, rounding)
            return Step(nodes, node.inputs, out, run)
        qi = self.qparams[node.inputs[0]]
        if node.op == "Conv":
            return Step(nodes, node.inputs[:1], out, self._conv(node, qi, qo, act, extra_bias))
        w = self._const(node, 1, "weight")
        alpha = np.float32(node.attrs.get("alpha", 1.0))
        w_nk = (w if node.attrs.get("transB", 0) else w.T) * alpha if node.op == "Gemm" else w.T
        bias = self._const(node, 2, "bias") if node.op == "Gemm" else None
        if bias is not None:
            bias = bias * np.float32(node.attrs.get("beta", 1.0))
        if extra_bias is not None:
            bias = extra_bias if bias is None else bias + extra_bias
        qw, sw = quantize_weights(np.ascontiguousarray(w_nk))
        qb = quantize_bias(bias, qi.scale, sw, node.where())
        rq = ref.op_multipliers("fc", qi.scale, sw, qo.scale, self.rounding)

        def run(x: np.ndarray) -> np.ndarray:
            if x.ndim != 2:
                raise InputError(f"{node.where()}: int8 fully connected needs a 2-D input, found shape {x.shape}")
            return ref.fully_connected(x, qw, qb, rq, in_zp=qi.zero_point, out_zp=qo.zero_point, act_range=act,
                                       rounding=rq.rounding)

        return Step(nodes, node.inputs[:1], out, run)

    def _conv(self, node: Node, qi: QParams, qo: QParams, act: tuple[int, int], extra_bias: Any) -> Callable:
        w = self._const(node, 1, "weight")
        bias = self._const(node, 2, "bias")
        if extra_bias is not None:
            bias = extra_bias.reshape(-1) if bias is None else bias + extra_bias.reshape(-1)
        group = int(node.attrs.get("group", 1))
        qw, sw = quantize_weights(w)
        qb = quantize_bias(bias, qi.scale, sw, node.where())
        rq = ref.op_multipliers("conv", qi.scale, sw, qo.scale, self.rounding)
        win = window(node, w.shape[2:])
        depthwise = group > 1 and w.shape[1] == 1
        kw_ = np.ascontiguousarray(qw.transpose(1, 2, 3, 0) if depthwise else qw.transpose(0, 2, 3, 1))
        fn = ref.depthwise_conv2d if depthwise else ref.conv2d

        def run(x: np.ndarray) -> np.ndarray:
            if x.ndim != 4 or x.shape[1] != w.shape[1] * group:
                raise InputError(f"{node.where()}: input shape {x.shape} does not match weights {w.shape}")
            y = fn(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), kw_, qb, rq, in_zp=qi.zero_point,
                   out_zp=qo.zero_point, stride=win.stride, padding=win.padding, dilation=win.dilation, act_range=act)
            return np.ascontiguousarray(y.transpose(0, 3, 1, 2))

        return run

    def _lower_other(self, node: Node) -> Step:
        src = node.inputs[0]
        qi = self.qparams[src]
        out = node.outputs[0]
        if node.op in ("Relu", "Clip"):
            qo = self.qparams[out] = self._entry(out, f"output of {node.where()}")
            act = self._act([node], qo)
            real = float(np.float32(qi.scale) / np.float32(qo.scale))  # TFLite: float32 division, then double
            rq = ref.Requant.from_real([real], self.rounding)
            run = lambda x: ref.requantize(x.astype(np.int64) - qi.zero_point, rq, qo.zero_point, act)  # noqa: E731
            return Step([node], (src,), out, run)
        self.qparams[out] = qi
        if node.op in ("MaxPool", "AveragePool", "GlobalAveragePool"):
            return Step([node], (src,), out, self._pool(node))
        if node.op == "Flatten":
            return Step([node], (src,), out, lambda x: x.reshape(flatten_to(node, x)))
        shape = np.asarray(self.graph.constants[node.inputs[1]])
        return Step([node], (src,), out, lambda x: x.reshape(reshape_to(node, x, shape)))

    def _pool(self, node: Node) -> Callable:
        average = node.op != "MaxPool"

        def run(x: np.ndarray) -> np.ndarray:
            if x.ndim != 4:
                raise InputError(f"{node.where()}: int8 pools need a 4-D NCHW input, found shape {x.shape}")
            win = window(node, x.shape[2:] if node.op == "GlobalAveragePool" else tuple(node.attrs["kernel_shape"]))
            fn = ref.avg_pool2d if average else ref.max_pool2d
            y = fn(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), win.kernel, win.stride, win.padding)
            return np.ascontiguousarray(y.transpose(0, 3, 1, 2))

        return run

    # -- running ---------------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """int8 value of every tensor the lowered model computes (inputs quantized from ``feeds``).

        Shapes are checked against the graph's memory budget first (as for the float run, which needs more).
        """
        floats = check_feeds(self.graph, feeds)
        plan(self.graph, {k: v.shape for k, v in floats.items()})
        values = {n: ref.quantize(x, self.qparams[n].scale, self.qparams[n].zero_point, self.rounding)
                  for n, x in floats.items()}
        for step in self.steps:
            values[step.output] = step.run(*(values[i] for i in step.inputs))
        return values

    def dequantized(self, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Real (float32) value of each int8 tensor of a `run` result."""
        return {k: self.qparams[k].dequantize(v) for k, v in values.items()}
