"""Execute a `Graph` in float32 with numpy, within the graph's memory budget.

This is the float reference of the accuracy check and an activation source for
calibration: `run_float` returns every tensor the graph computes, by name, or only
the ones asked for (the others are freed once read), and can hand each tensor to
an observer as soon as it exists.
Each node runs by its op's entry in `edgecal.model.ops`; semantics follow the ONNX
operator docs (NCHW layout; Conv with groups, pads, strides and dilations; pools
exclude padding from max and average).

>>> import numpy as np
>>> from edgecal.model.graph import Graph, Node
>>> g = Graph([Node("Relu", "r", ("x",), ("y",))], {}, [("x", (None, 3))], ["y"])
>>> run_float(g, {"x": np.array([[-1.0, 0.5, 2.0]])})["y"].tolist()
[[0.0, 0.5, 2.0]]
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np

from ..errors import InputError
from .graph import Graph, Node
from .ops import get_op
from .shapes import plan, window

__all__ = ["check_feeds", "run_float", "window"]


def _run_node(node: Node, v: Mapping[str, np.ndarray]) -> np.ndarray:
    """The float32 output of ``node`` by its registered op; numpy shape errors become one-line `InputError`s."""
    args = [v[i] if i else None for i in node.inputs]
    try:
        return np.asarray(get_op(node.op).run_float(node, args, v), dtype=np.float32)
    except ValueError as err:  # numpy shape errors from matmul / add
        raise InputError(f"{node.where()}: shapes do not match ({err})") from None


def check_feeds(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Graph inputs as float32 arrays; `InputError` for a missing input or a shape that does not match."""
    out = {}
    for name, shape in graph.inputs:
        if name not in feeds:
            raise InputError(f"model input {name!r} is missing; given: {', '.join(feeds) or 'nothing'}")
        x = np.asarray(feeds[name])
        if x.dtype.kind not in "fiu":
            raise InputError(f"model input {name!r}: dtype {x.dtype}; expected real numbers")
        if x.ndim != len(shape) or any(s is not None and s > 0 and s != d for s, d in zip(shape[1:], x.shape[1:])):
            want = "x".join("N" if s is None or s <= 0 else str(s) for s in shape)
            raise InputError(f"model input {name!r}: shape {x.shape} does not match the model's {want}")
        out[name] = x.astype(np.float32)
    return out


def run_float(graph: Graph, feeds: Mapping[str, np.ndarray], keep: Iterable[str] | None = None,
              observe: Callable[[str, np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """Tensors of the graph computed in float32: every one (``keep`` None), or the outputs and ``keep``.

    Shapes are checked against ``graph.budget`` before anything runs (`InputError`
    naming the node). Each intermediate not kept is freed once its last reader ran;
    ``observe(name, value)``, when given, sees every activation (graph inputs, then
    each node output) as soon as it exists.
    """
    values: dict[str, np.ndarray] = {k: np.asarray(v, dtype=np.float32) if v.dtype.kind == "f" else v
                                     for k, v in graph.constants.items()}
    inputs = check_feeds(graph, feeds)
    steps = plan(graph, {k: v.shape for k, v in inputs.items()}, keep)
    values.update(inputs)
    if observe is not None:
        for name in inputs:
            observe(name, inputs[name])
    for node, free in zip(graph.nodes, steps.free_after):
        out = values[node.outputs[0]] = _run_node(node, values)
        if observe is not None:
            observe(node.outputs[0], out)
        for name in free:
            del values[name]
    return values
