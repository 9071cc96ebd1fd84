"""`Graph`: a float ONNX model read with the ``onnx`` package (the ``onnx`` extra).

Only the op subset the runners execute is accepted: Conv (2-D), Gemm, MatMul, Add,
Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape. Any other
op, or a supported op with an attribute the runners do not implement (3-D conv,
``ceil_mode``, ``count_include_pad``, dilated pools, ``transA``), is refused when the
model is read, with the op and the node named.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgecalError, InputError

OPS = ("Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten",
       "Reshape")


class MissingExtraError(EdgecalError, ImportError):
    """An optional package edgecal needs for this feature is not installed."""


def import_onnx() -> Any:
    """The ``onnx`` module, or `MissingExtraError` naming the extra to install."""
    try:
        import onnx
    except ImportError as err:
        raise MissingExtraError(
            "reading ONNX models needs the onnx package; install it with: pip install -e '.[onnx]'"
        ) from err
    return onnx


@dataclass(frozen=True)
class Node:
    """One graph node: op type, name, input and output tensor names, attributes."""

    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    def where(self) -> str:
        return f"node {self.name!r} ({self.op})"


@dataclass
class Graph:
    """Nodes in execution order, constant tensors, graph inputs (name, shape) and outputs."""

    nodes: list[Node]
    constants: dict[str, np.ndarray]
    inputs: list[tuple[str, tuple[int | None, ...]]]
    outputs: list[str]
    model_hash: str = ""

    def consumers(self, tensor: str) -> list[Node]:
        """Nodes that read ``tensor``."""
        return [n for n in self.nodes if tensor in n.inputs]

    def activations(self) -> list[str]:
        """Every non-constant tensor: the graph inputs, then each node's outputs in order."""
        return [name for name, _ in self.inputs] + [o for n in self.nodes for o in n.outputs]


def _shape(value_info: Any) -> tuple[int | None, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _check_node(node: Node, constants: dict[str, np.ndarray]) -> None:
    a = node.attrs
    bad = None
    if node.op not in OPS:
        bad = f"op {node.op} is not supported; supported ops: {', '.join(OPS)}"
    elif node.op == "Conv" and (len(a.get("kernel_shape", (1, 1))) != 2
                                or np.ndim(constants.get(node.inputs[1], np.zeros((1,) * 4))) != 4):
        bad = "only 2-D convolutions are supported"
    elif node.op in ("MaxPool", "AveragePool") and (a.get("ceil_mode", 0)
                                                    or any(d != 1 for d in a.get("dilations", [1]))):
        bad = "ceil_mode and dilated pools are not supported"
    elif node.op == "AveragePool" and a.get("count_include_pad", 0):
        bad = "count_include_pad=1 is not supported (TFLite excludes padding from the average)"
    elif node.op == "Gemm" and a.get("transA", 0):
        bad = "Gemm with transA=1 is not supported"
    elif node.op == "Reshape" and node.inputs[1] not in constants:
        bad = "Reshape needs a constant shape"
    if bad:
        raise InputError(f"{node.where()}: {bad}")


def from_onnx(model: Any, model_hash: str = "") -> Graph:
    """A `Graph` from an ``onnx.ModelProto``; `InputError` for anything the runners cannot execute."""
    onnx = import_onnx()
    from onnx import numpy_helper

    g = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes = []
    for k, n in enumerate(g.node):
        attrs = {at.name: onnx.helper.get_attribute_value(at) for at in n.attribute}
        attrs = {key: (v.decode() if isinstance(v, bytes) else v) for key, v in attrs.items()}
        if n.op_type == "Constant" and "value" in attrs:
            constants[n.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        node = Node(n.op_type, n.name or f"{n.op_type}_{k}", tuple(n.input), tuple(n.output), attrs)
        _check_node(node, constants)
        nodes.append(node)
    inputs = [(vi.name, _shape(vi)) for vi in g.input if vi.name not in constants]
    if not inputs or not nodes:
        raise InputError("the ONNX model has no inputs or no nodes; expected a graph with at least one of each")
    return Graph(nodes, constants, inputs, [o.name for o in g.output], model_hash)


def load_graph(path: str | os.PathLike[str]) -> Graph:
    """Read a float ONNX model file (needs the ``onnx`` extra)."""
    onnx = import_onnx()
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read model {path}: {err.strerror or err}") from err
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # protobuf raises its own DecodeError types
        raise InputError(f"{path}: not a readable ONNX model ({err})") from err
    try:
        return from_onnx(model, "sha256:" + hashlib.sha256(data).hexdigest()[:16])
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
