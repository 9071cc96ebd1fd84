"""Lower a float `Graph` to int8 with a `CalibrationTable`, and run it on the reference kernels.

Each node is lowered by its op's entry in `edgecal.model.ops`; the lowering follows
what the TFLite converter produces:

- activations take scale and zero point from the table (symmetric entries have
  zero point 0; ``tflite`` entries of never-negative tensors zero point -128) and
  live in [-128, 127];
- Conv / Gemm / MatMul weights are quantized symmetric per output channel to
  [-127, 127] (scale max|w| / 127, round half away from zero), biases to int32
  with scale ``s_in * s_w[c]`` (`edgecal.model.lowering`); a Conv with ``group`` equal
  to its input channels and one input channel per group runs as depthwise;
- an Add of a constant right after an op that fuses a bias (Conv / Gemm / MatMul)
  becomes its bias, and an activation with a clamp (Relu / Clip) right after an op
  that fuses one (Conv / Gemm / MatMul / Add) becomes the fused activation clamp,
  when the fused tensor has no other reader; the table entry of the last tensor of
  such a chain gives the output parameters;
- a standalone Relu / Clip rescales from its input to its output parameters
  (TFLite's int8 RELU kernel); MaxPool, AveragePool, GlobalAveragePool, Flatten
  and Reshape keep their input's scale and zero point, as TFLite requires.

Tensors stay in ONNX layout (NCHW); the kernels see NHWC views.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from .. import reference as ref
from ..errors import InputError
from ..table import CalibrationTable
from .float_run import check_feeds
from .graph import Graph, Node
from .lowering import INT32_MAX, QParams, Step, quantize_bias, quantize_weights
from .ops import OpSpec, get_op
from .shapes import plan

__all__ = ["INT32_MAX", "Int8Model", "QParams", "Step", "quantize_bias", "quantize_weights"]


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
            self.qparams[name] = self.entry(name, "a model input")
        self._lower()

    # -- what op lowerings use -----------------------------------------------------------------------
    def entry(self, tensor: str, what: str) -> QParams:
        """The parameters of ``tensor`` from the table; `InputError` naming it (``what``) when absent."""
        if tensor not in self.table:
            known = ", ".join(list(self.table)[:8]) + (", ..." if len(self.table) > 8 else "")
            raise InputError(f"the table has no entry for tensor {tensor!r} ({what}), which the int8 model needs; "
                             f"the table has: {known or 'nothing'}")
        e = self.table[tensor]
        return QParams(float(np.float32(e.scale)), int(e.zero_point))

    def optional_constant(self, node: Node, k: int, what: str) -> np.ndarray | None:
        """Input ``k`` of ``node`` as float32, None when absent; `InputError` when it is not a constant."""
        if len(node.inputs) <= k or not node.inputs[k]:
            return None
        return self.constant(node, k, what)

    def constant(self, node: Node, k: int, what: str) -> np.ndarray:
        """Input ``k`` of ``node`` (one its arity requires) as float32; `InputError` when it is not a constant."""
        if node.inputs[k] not in self.graph.constants:
            raise InputError(f"{node.where()}: {what} {node.inputs[k]!r} must be a constant for int8 lowering")
        return np.asarray(self.graph.constants[node.inputs[k]], dtype=np.float32)

    def act_range(self, nodes: list[Node], out: QParams) -> tuple[int, int]:
        """The int8 clamp of a chain: its last node's clamp at ``out``'s parameters, or the full range."""
        clamp = get_op(nodes[-1].op).clamp
        if clamp is None:
            return -128, 127
        return ref.activation_range(clamp(nodes[-1], self.graph.constants), out.scale, out.zero_point)

    # -- lowering ----------------------------------------------------------------------------------
    def _sole_reader(self, tensor: str, fits: Callable[[OpSpec], bool]) -> Node | None:
        readers = self.graph.consumers(tensor)
        if len(readers) == 1 and fits(get_op(readers[0].op)) and tensor not in self.graph.outputs:
            return readers[0]
        return None

    def _chain(self, node: Node) -> tuple[list[Node], Any, str]:
        """Nodes fused into ``node`` (bias Add, then an activation), the extra bias and the final output."""
        nodes, bias, out = [node], None, node.outputs[0]
        nxt = self._sole_reader(out, lambda spec: spec.op == "Add") if get_op(node.op).fuse_bias else None
        if nxt is not None:
            other = [i for i in nxt.inputs if i != out]
            if len(other) == 1 and other[0] in self.graph.constants:
                nodes, bias, out = nodes + [nxt], np.asarray(self.graph.constants[other[0]], np.float32), nxt.outputs[0]
        act = self._sole_reader(out, lambda spec: spec.clamp is not None)
        if act is not None:
            nodes, out = nodes + [act], act.outputs[0]
        return nodes, bias, out

    def _lower(self) -> None:
        fused: set[str] = set()
        for node in self.graph.nodes:
            if node.name in fused:
                continue
            spec = get_op(node.op)
            if spec.lower is None:
                raise InputError(f"{node.where()}: op {node.op} has no int8 lowering; expected an op with one")
            if spec.fuse_activation:
                nodes, bias, out = self._chain(node)
                fused.update(n.name for n in nodes[1:])
                self.qparams[out] = self.entry(out, f"output of {node.where()}")
            else:
                nodes, bias, out = [node], None, node.outputs[0]
            self.steps.append(spec.lower(self, nodes, bias, out))

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
