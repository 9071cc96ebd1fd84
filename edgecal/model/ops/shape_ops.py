"""Flatten and Reshape: the same values in another shape, in float and in int8 (which keeps the input's parameters).

Reshape needs a constant, 1-D integer shape; 0 copies the input's size (unless
``allowzero``) and one -1 is inferred, as the ONNX operator docs define.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ...errors import InputError
from ..lowering import Step
from . import OpSpec, Shape, register_op

if TYPE_CHECKING:
    from ..graph import Node
    from ..int8_run import Int8Model


def flatten_shape(node: Node, shape: Shape) -> tuple[int, int]:
    """The 2-D output shape of Flatten at its ``axis``; `InputError` for an axis outside the input."""
    axis = int(node.attrs.get("axis", 1))
    if not -len(shape) <= axis <= len(shape):
        raise InputError(f"{node.where()}: axis {axis} for an input of shape {shape}; "
                         f"expected -{len(shape)} to {len(shape)}")
    axis %= len(shape) + 1
    return math.prod(shape[:axis]), math.prod(shape[axis:])


def reshape_shape(node: Node, shape: Shape, target: np.ndarray) -> Shape:
    """The output shape of Reshape to ``target`` (0 copies the input's size unless allowzero, -1 is inferred)."""
    want = [int(s) for s in np.asarray(target).reshape(-1)]
    if not node.attrs.get("allowzero", 0):
        want = [shape[i] if s == 0 and i < len(shape) else s for i, s in enumerate(want)]
    total, known = math.prod(shape), math.prod(s for s in want if s != -1)
    free = want.count(-1)
    fits = total == known if free == 0 else known > 0 and total % known == 0
    ok = free <= 1 and min(want, default=0) >= -1 and fits
    if not ok:
        raise InputError(f"{node.where()}: cannot reshape {tuple(shape)} to {tuple(np.asarray(target).tolist())}")
    return tuple(total // known if s == -1 else s for s in want)


def reshape_malformed(node: Node, constants: Mapping[str, np.ndarray]) -> str | None:
    shape = constants.get(node.inputs[1])
    if shape is not None and (shape.ndim != 1 or shape.dtype.kind not in "iu"):
        return f"Reshape shape {node.inputs[1]!r} is {shape.dtype} {shape.shape}; expected a 1-D integer tensor"
    return None


def reshape_unsupported(node: Node, constants: Mapping[str, np.ndarray]) -> str | None:
    return "Reshape needs a constant shape" if node.inputs[1] not in constants else None


def lower_flatten(model: Int8Model, nodes: list[Node], extra_bias: Any, out: str) -> Step:
    node, src = nodes[0], nodes[0].inputs[0]
    model.qparams[out] = model.qparams[src]
    return Step(nodes, (src,), out, lambda x: x.reshape(flatten_shape(node, x.shape)))


def lower_reshape(model: Int8Model, nodes: list[Node], extra_bias: Any, out: str) -> Step:
    node, src = nodes[0], nodes[0].inputs[0]
    model.qparams[out] = model.qparams[src]
    target = np.asarray(model.graph.constants[node.inputs[1]])
    return Step(nodes, (src,), out, lambda x: x.reshape(reshape_shape(node, x.shape, target)))


register_op(OpSpec("Flatten", (1, 1), lambda node, args, values: args[0].reshape(flatten_shape(node, args[0].shape)),
                   lower_flatten, shape=lambda node, s, constants: (flatten_shape(node, s[0]), [])))
register_op(OpSpec("Reshape", (2, 2),
                   lambda node, args, values: args[0].reshape(reshape_shape(node, args[0].shape, args[1])),
                   lower_reshape, malformed=reshape_malformed, unsupported=reshape_unsupported,
                   shape=lambda node, s, constants: (reshape_shape(node, s[0], constants[node.inputs[1]]), [])))
