"""Gemm and MatMul: float with numpy, int8 on the reference fully connected kernel.

In int8 the weight (input 1) must be a constant; Gemm's ``alpha`` and ``transB`` are
folded into it and ``beta`` into the bias, a following Add of a constant becomes
(part of) the bias and a Relu / Clip the activation clamp. Only 2-D inputs run in int8.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ... import reference as ref
from ...errors import InputError
from ..lowering import Step, quantize_bias, quantize_weights
from . import OpSpec, Shape, broadcast, register_op

if TYPE_CHECKING:
    from ..graph import Node
    from ..int8_run import Int8Model


def gemm_unsupported(node: Node, constants: Mapping[str, np.ndarray]) -> str | None:
    return "Gemm with transA=1 is not supported" if node.attrs.get("transA", 0) else None


def gemm_shape(node: Node, s: list[Shape], constants: Mapping[str, np.ndarray]) -> tuple[Shape, list[int]]:
    x, trans = s[0], node.attrs.get("transB", 0)
    b = s[1][::-1] if trans else s[1]
    if len(x) != 2 or len(b) != 2 or x[1] != b[0]:
        raise InputError(f"{node.where()}: shapes do not match ({x} times {s[1]}, transB {trans})")
    return broadcast(node, (x[0], b[1]), *s[2:]), []


def matmul_shape(node: Node, s: list[Shape], constants: Mapping[str, np.ndarray]) -> tuple[Shape, list[int]]:
    a, b = s[0], s[1]
    if not a or not b:
        raise InputError(f"{node.where()}: shapes do not match ({a} and {b}; expected at least 1-D)")
    a2, b2 = (a if len(a) > 1 else (1, *a)), (b if len(b) > 1 else (*b, 1))
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        batch = None
    if batch is None or a2[-1] != b2[-2]:
        raise InputError(f"{node.where()}: shapes do not match ({a} times {b})")
    return tuple(batch) + (a2[-2],) * (len(a) > 1) + (b2[-1],) * (len(b) > 1), []


def gemm(node: Node, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    """Float ``alpha * a @ b' + beta * c`` (b' = b transposed when ``transB``)."""
    at = node.attrs
    bm = b.T if at.get("transB", 0) else b
    y = np.float32(at.get("alpha", 1.0)) * (a @ bm)
    return y if c is None else y + np.float32(at.get("beta", 1.0)) * c


def _weights_and_bias(model: Int8Model, node: Node, extra_bias: Any) -> tuple[np.ndarray, Any]:
    """The [out, in] float weight and the float bias (or None) of a Gemm / MatMul with its fused Add."""
    w = model.constant(node, 1, "weight")
    alpha = np.float32(node.attrs.get("alpha", 1.0))
    w_nk = (w if node.attrs.get("transB", 0) else w.T) * alpha if node.op == "Gemm" else w.T
    bias = model.optional_constant(node, 2, "bias") if node.op == "Gemm" else None
    if bias is not None:
        bias = bias * np.float32(node.attrs.get("beta", 1.0))
    if extra_bias is not None:
        bias = extra_bias if bias is None else bias + extra_bias
    return w_nk, bias


def lower(model: Int8Model, nodes: list[Node], extra_bias: Any, out: str) -> Step:
    node = nodes[0]
    qo = model.qparams[out]
    act = model.act_range(nodes, qo)
    qi = model.qparams[node.inputs[0]]
    w_nk, bias = _weights_and_bias(model, node, extra_bias)
    qw, sw = quantize_weights(np.ascontiguousarray(w_nk))
    qb = quantize_bias(bias, qi.scale, sw, node.where())
    rq = ref.op_multipliers("fc", qi.scale, sw, qo.scale, model.rounding)

    def run(x: np.ndarray) -> np.ndarray:
        if x.ndim != 2:
            raise InputError(f"{node.where()}: int8 fully connected needs a 2-D input, found shape {x.shape}")
        return ref.fully_connected(x, qw, qb, rq, in_zp=qi.zero_point, out_zp=qo.zero_point, act_range=act,
                                   rounding=rq.rounding)

    return Step(nodes, node.inputs[:1], out, run)


register_op(OpSpec("Gemm", (2, 3), lambda node, args, values: gemm(node, *args), lower,
                   unsupported=gemm_unsupported, shape=gemm_shape, fuse_bias=True, fuse_activation=True))
register_op(OpSpec("MatMul", (2, 2), lambda node, args, values: np.matmul(args[0], args[1]), lower,
                   shape=matmul_shape, fuse_bias=True, fuse_activation=True))
