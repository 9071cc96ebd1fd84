"""Add, Relu and Clip: float with numpy, int8 on the reference add and requantize kernels.

In int8, Add of two activations rescales both to the output's parameters (TFLite's
ADD); an Add of a constant is supported only as the bias of the Conv / Gemm / MatMul
before it. Relu and Clip fuse into the op before them as its activation clamp when
they are that tensor's only reader, and otherwise rescale from their input's to
their output's parameters (TFLite's int8 RELU kernel).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ... import reference as ref
from ...errors import InputError
from ..lowering import Step
from . import OpSpec, Shape, broadcast, register_op

if TYPE_CHECKING:
    from ..graph import Node
    from ..int8_run import Int8Model


def add_shape(node: Node, s: list[Shape], constants: Mapping[str, np.ndarray]) -> tuple[Shape, list[int]]:
    return broadcast(node, s[0], s[1]), []


def lower_add(model: Int8Model, nodes: list[Node], extra_bias: Any, out: str) -> Step:
    node = nodes[0]
    qo = model.qparams[out]
    act = model.act_range(nodes, qo)
    if any(i in model.graph.constants for i in node.inputs):
        raise InputError(f"{node.where()}: an Add of a constant is supported only as the bias of a "
                         "preceding Conv, Gemm or MatMul")
    a, b = (model.qparams[i] for i in node.inputs)
    rounding = model.rounding
    run = lambda x1, x2: ref.add(x1, x2, (a.scale, a.zero_point), (b.scale, b.zero_point),  # noqa: E731
                                 (qo.scale, qo.zero_point), act, rounding)
    return Step(nodes, node.inputs, out, run)


def clip_bounds(node: Node, values: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """(lo, hi) of a Clip node: inputs 1 and 2 (opset >= 11) or attributes min / max."""
    lo, hi = node.attrs.get("min", -math.inf), node.attrs.get("max", math.inf)
    if len(node.inputs) > 1 and node.inputs[1]:
        lo = float(values[node.inputs[1]])
    if len(node.inputs) > 2 and node.inputs[2]:
        hi = float(values[node.inputs[2]])
    return float(lo), float(hi)


def clip_malformed(node: Node, constants: Mapping[str, np.ndarray]) -> str | None:
    for name in node.inputs[1:]:
        if name in constants and (constants[name].size != 1 or constants[name].dtype.kind not in "fiu"):
            return f"bound {name!r} is {constants[name].dtype} {constants[name].shape}; expected a real scalar"
    return None


def clip_unsupported(node: Node, constants: Mapping[str, np.ndarray]) -> str | None:
    return "Clip bounds must be constants" if any(n and n not in constants for n in node.inputs[1:]) else None


def lower_rescale(model: Int8Model, nodes: list[Node], extra_bias: Any, out: str) -> Step:
    """A standalone activation: requantize from the input's parameters to the output's, clamped."""
    node = nodes[0]
    src = node.inputs[0]
    qi = model.qparams[src]
    qo = model.qparams[out] = model.entry(out, f"output of {node.where()}")
    act = model.act_range(nodes, qo)
    real = float(np.float32(qi.scale) / np.float32(qo.scale))  # TFLite: float32 division, then double
    rq = ref.Requant.from_real([real], model.rounding)
    run = lambda x: ref.requantize(x.astype(np.int64) - qi.zero_point, rq, qo.zero_point, act)  # noqa: E731
    return Step(nodes, (src,), out, run)


register_op(OpSpec("Add", (2, 2), lambda node, args, values: np.add(args[0], args[1]), lower_add, shape=add_shape,
                   fuse_activation=True))
register_op(OpSpec("Relu", (1, 1), lambda node, args, values: np.maximum(args[0], np.float32(0)), lower_rescale,
                   clamp=lambda node, constants: "relu"))
register_op(OpSpec("Clip", (1, 3), lambda node, args, values: np.clip(args[0], *clip_bounds(node, values)),
                   lower_rescale, malformed=clip_malformed, unsupported=clip_unsupported, clamp=clip_bounds))
