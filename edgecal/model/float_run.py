"""Execute a `Graph` in float32 with numpy, within the graph's memory budget.

This is the float reference of the accuracy check and an activation source for
calibration: `run_float` returns every tensor the graph computes, by name, or only
the ones asked for (the others are freed once read), and can hand each tensor to
an observer as soon as it exists.
Semantics follow the ONNX operator docs (NCHW layout; Conv with groups, pads,
strides and dilations; pools exclude padding from max and average).

>>> import numpy as np
>>> from edgecal.model.graph import Graph, Node
>>> g = Graph([Node("Relu", "r", ("x",), ("y",))], {}, [("x", (None, 3))], ["y"])
>>> run_float(g, {"x": np.array([[-1.0, 0.5, 2.0]])})["y"].tolist()
[[0.0, 0.5, 2.0]]
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import InputError
from ..reference.geometry import Window
from .graph import Graph, Node
from .shapes import flatten_shape, plan, reshape_shape, window

__all__ = ["check_feeds", "run_float", "window"]


def _windows(x: np.ndarray, win: Window, fill: float) -> np.ndarray:
    """View (n, c, oh, ow, kh, kw) of x padded with ``fill``."""
    oh, ow, (top, left, bottom, right) = win.resolve(x.shape[2], x.shape[3])
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    (kh, kw), (sh, sw), (dh, dw) = win.kernel, win.stride, win.dilation
    view = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]


def conv(node: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    group = int(node.attrs.get("group", 1))
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise InputError(f"{node.where()}: input {x.shape} and weights {w.shape} (group {group}) do not match")
    cols = _windows(x, window(node, w.shape[2:]), 0.0)
    per_in, per_out = x.shape[1] // group, w.shape[0] // group
    outs = [np.einsum("ncyxij,ocij->noyx", cols[:, g * per_in:(g + 1) * per_in], w[g * per_out:(g + 1) * per_out],
                      optimize=True) for g in range(group)]
    y = np.concatenate(outs, axis=1)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def max_pool(node: Node, x: np.ndarray) -> np.ndarray:
    return _windows(x, window(node, tuple(node.attrs["kernel_shape"])), -np.inf).max(axis=(-2, -1))


def average_pool(node: Node, x: np.ndarray) -> np.ndarray:
    win = window(node, tuple(node.attrs["kernel_shape"]))
    total = _windows(x, win, 0.0).sum(axis=(-2, -1))
    count = _windows(np.ones((1, 1, *x.shape[2:]), x.dtype), win, 0.0).sum(axis=(-2, -1))
    return total / count


def gemm(node: Node, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    at = node.attrs
    bm = b.T if at.get("transB", 0) else b
    y = np.float32(at.get("alpha", 1.0)) * (a @ bm)
    return y if c is None else y + np.float32(at.get("beta", 1.0)) * c


def clip_bounds(node: Node, values: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """(lo, hi) of a Clip node: inputs 1 and 2 (opset >= 11) or attributes min / max."""
    lo, hi = node.attrs.get("min", -math.inf), node.attrs.get("max", math.inf)
    if len(node.inputs) > 1 and node.inputs[1]:
        lo = float(values[node.inputs[1]])
    if len(node.inputs) > 2 and node.inputs[2]:
        hi = float(values[node.inputs[2]])
    return float(lo), float(hi)


def reshape_to(node: Node, x: np.ndarray, shape: np.ndarray) -> tuple[int, ...]:
    return reshape_shape(node, x.shape, shape)


def flatten_to(node: Node, x: np.ndarray) -> tuple[int, int]:
    return flatten_shape(node, x.shape)


def _run_node(node: Node, v: Mapping[str, np.ndarray]) -> np.ndarray:
    args = [v[i] if i else None for i in node.inputs]
    ops: dict[str, Callable[[], np.ndarray]] = {
        "Conv": lambda: conv(node, *args),
        "Gemm": lambda: gemm(node, *args),
        "MatMul": lambda: np.matmul(args[0], args[1]),
        "Add": lambda: np.add(args[0], args[1]),
        "Relu": lambda: np.maximum(args[0], np.float32(0)),
        "Clip": lambda: np.clip(args[0], *clip_bounds(node, v)),
        "MaxPool": lambda: max_pool(node, args[0]),
        "AveragePool": lambda: average_pool(node, args[0]),
        "GlobalAveragePool": lambda: args[0].mean(axis=tuple(range(2, args[0].ndim)), keepdims=True),
        "Flatten": lambda: args[0].reshape(flatten_to(node, args[0])),
        "Reshape": lambda: args[0].reshape(reshape_to(node, args[0], args[1])),
    }
    try:
        return np.asarray(ops[node.op](), dtype=np.float32)
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
