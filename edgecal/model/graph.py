"""`Graph`: a float ONNX model read with the ``onnx`` package (the ``onnx`` extra).

Only the ops registered in `edgecal.model.ops` are accepted (built in: Conv (2-D),
Gemm, MatMul, Add, Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Flatten,
Reshape). Any other op, or a supported op with an attribute the runners do not
implement (3-D conv, ``ceil_mode``, ``count_include_pad``, dilated pools, ``transA``),
is refused when the model is read, with the op and the node named (`InputError`).
The reader checks what every op shares (arity, one output, attribute types, 2-D
windows) and leaves the rest to the op's own checks.

A model that is not valid ONNX (an input no one produces, a node without output,
attributes of the wrong type, tensors whose data does not match their shape, ...)
raises `MalformedModelError`, and external data outside the model's folder
`UnsafeModelError`: one line each, and ``--runtime auto`` does not pass such a model
on to ONNX Runtime. Constants are decoded by `edgecal.model.initializers` within the
graph's `MemoryBudget`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MissingExtraError
from .budget import DEFAULT_BUDGET, MemoryBudget
from .initializers import MalformedModelError, UnsafeModelError, tensor_array
from .ops import OPS, OpSpec, get_op

__all__ = ["ATTRS", "OPS", "Graph", "MissingExtraError", "Node", "from_onnx", "import_onnx", "load_graph"]


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
    budget: MemoryBudget = DEFAULT_BUDGET

    def consumers(self, tensor: str) -> list[Node]:
        """Nodes that read ``tensor``."""
        return [n for n in self.nodes if tensor in n.inputs]

    def activations(self) -> list[str]:
        """Every non-constant tensor: the graph inputs, then each node's outputs in order."""
        return [name for name, _ in self.inputs] + [o for n in self.nodes for o in n.outputs]


def _shape(value_info: Any) -> tuple[int | None, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)


#: attribute -> (python type, expected length for lists or None for scalars, smallest value)
ATTRS = {"kernel_shape": (int, 2, 1), "strides": (int, 2, 1), "dilations": (int, 2, 1), "pads": (int, 4, 0),
         "group": (int, None, 1), "transA": (int, None, 0), "transB": (int, None, 0), "axis": (int, None, None),
         "ceil_mode": (int, None, 0), "count_include_pad": (int, None, 0), "allowzero": (int, None, 0),
         "alpha": (float, None, None), "beta": (float, None, None), "min": (float, None, None),
         "max": (float, None, None), "auto_pad": (str, None, None)}
AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _attr_problem(key: str, value: Any, kinds: dict[str, tuple[type, int | None, int | None]]) -> str | None:
    """What makes attribute ``key`` invalid ONNX (wrong type, out of range) by its entry in ``kinds``, or None."""
    kind, length, least = kinds[key]
    values = value if isinstance(value, list) else [value]
    if (length is None) == isinstance(value, list):
        return f"attribute {key}={value!r}; expected {'a list of integers' if length else f'one {kind.__name__}'}"
    if not all(isinstance(v, kind) or (kind is float and isinstance(v, int)) for v in values):
        return f"attribute {key}={value!r}; expected {kind.__name__} values"
    if least is not None and any(v < least for v in values):
        return f"attribute {key}={value!r}; expected values >= {least}"
    if key == "auto_pad" and value not in AUTO_PADS:
        return f"attribute auto_pad={value!r}; expected one of {', '.join(AUTO_PADS)}"
    return None


def _malformed_problem(node: Node, spec: OpSpec, constants: dict[str, np.ndarray]) -> str | None:
    """What makes ``node`` invalid ONNX, which no runtime runs, or None."""
    need, most = spec.arity
    if not need <= len(node.inputs) <= most or not all(node.inputs[:need]):
        return f"{len(node.inputs)} inputs {list(node.inputs)}; expected {need} to {most}, the first {need} named"
    if not node.outputs or not node.outputs[0]:
        return f"outputs {list(node.outputs)}; expected exactly one named output"
    kinds = {**ATTRS, **spec.attrs}
    bad = next((p for p in (_attr_problem(k, v, kinds) for k, v in node.attrs.items() if k in kinds) if p), None)
    return bad or spec.malformed(node, constants)


def _unsupported_problem(node: Node, spec: OpSpec, constants: dict[str, np.ndarray]) -> str | None:
    """What valid ONNX in ``node`` the runners do not implement, or None."""
    a = node.attrs
    if len([o for o in node.outputs if o]) != 1:
        return f"outputs {list(node.outputs)}; expected exactly one named output (no MaxPool indices)"
    lengths = [k for k in ("kernel_shape", "strides", "dilations", "pads") if k in a and len(a[k]) != ATTRS[k][1]]
    if lengths:
        key = lengths[0]
        return f"attribute {key}={a[key]!r}; only 2-D windows are supported ({ATTRS[key][1]} values)"
    return spec.unsupported(node, constants)


def _check_node(node: Node, constants: dict[str, np.ndarray]) -> None:
    try:
        spec = get_op(node.op)
    except InputError as err:
        raise InputError(f"{node.where()}: {err}") from None
    bad = _malformed_problem(node, spec, constants)
    if bad:
        raise MalformedModelError(f"{node.where()}: {bad}")
    bad = _unsupported_problem(node, spec, constants)
    if bad:
        raise InputError(f"{node.where()}: {bad}")


def _check_wiring(nodes: list[Node], known: set[str], outputs: list[str]) -> None:
    """Every node input is computed before it is read, every tensor has one producer, every output exists."""
    for node in nodes:
        for name in node.inputs:
            if name and name not in known:
                raise MalformedModelError(f"{node.where()}: input {name!r} is not a graph input, a constant or the "
                                          "output of an earlier node; expected nodes in execution order")
        if node.outputs[0] in known:
            raise MalformedModelError(f"{node.where()}: output {node.outputs[0]!r} is already a graph input, a "
                                      "constant or another node's output; expected each tensor produced once")
        known.add(node.outputs[0])
    missing = [o for o in outputs if o not in known]
    if missing or not outputs:
        raise MalformedModelError(f"graph outputs {missing or outputs} are not computed by the model; expected at "
                                  "least one output, each a graph input or a node output")


def _attributes(onnx: Any, n: Any) -> dict[str, Any]:
    attrs = {at.name: onnx.helper.get_attribute_value(at) for at in n.attribute}  # None for an undefined type
    return {key: (v.decode(errors="replace") if isinstance(v, bytes) else v) for key, v in attrs.items()}


def from_onnx(model: Any, model_hash: str = "", folder: Path | None = None,
              budget: MemoryBudget = DEFAULT_BUDGET) -> Graph:
    """A `Graph` from an ``onnx.ModelProto``; `InputError` for anything the runners cannot execute.

    External data is read from ``folder`` (the model file's folder) only, as
    `edgecal.model.initializers` describes; constants larger than ``budget.tensor_bytes`` are refused.
    """
    onnx = import_onnx()
    g = model.graph
    constants = {t.name: tensor_array(t, folder, budget.tensor_bytes) for t in g.initializer}
    nodes = []
    for k, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{k}"
        attrs = _attributes(onnx, n)
        if n.op_type == "Constant" and "value" in attrs:
            if len(n.output) != 1 or not n.output[0]:
                raise MalformedModelError(f"node {name!r} (Constant): outputs {list(n.output)}; expected exactly one")
            constants[n.output[0]] = tensor_array(attrs["value"], folder, budget.tensor_bytes)
            continue
        node = Node(n.op_type, name, tuple(n.input), tuple(n.output), attrs)
        _check_node(node, constants)
        nodes.append(node)
    inputs = [(vi.name, _shape(vi)) for vi in g.input if vi.name not in constants]
    if not inputs or not nodes:
        raise InputError("the ONNX model has no inputs or no nodes; expected a graph with at least one of each")
    outputs = [o.name for o in g.output]
    _check_wiring(nodes, {n for n, _ in inputs} | set(constants), outputs)
    return Graph(nodes, constants, inputs, outputs, model_hash, budget)


def load_graph(path: str | os.PathLike[str], budget: MemoryBudget = DEFAULT_BUDGET) -> Graph:
    """Read a float ONNX model file (needs the ``onnx`` extra); external data only from its own folder."""
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
        return from_onnx(model, "sha256:" + hashlib.sha256(data).hexdigest()[:16], Path(path).parent, budget)
    except (UnsafeModelError, MalformedModelError) as err:
        raise type(err)(f"{path}: {err}") from None
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
