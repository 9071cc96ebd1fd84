"""Shapes of every tensor a `Graph` computes, worked out from the input shapes alone.

`plan` runs before `edgecal.model.run_float` computes anything: it refuses, with one
line, a tensor or a peak of live tensors beyond the graph's `MemoryBudget`, and says
after which node each intermediate can be freed (its last reader has run), keeping
the graph outputs and the tensors the caller asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from ..errors import InputError
from ..reference.geometry import Window
from .graph import Graph, Node

Shape = tuple[int, ...]
F32 = 4


def window(node: Node, kernel: tuple[int, int]) -> Window:
    """The sliding window of a Conv / pool node from its ONNX attributes."""
    a = node.attrs
    auto = a.get("auto_pad", "NOTSET")
    padding = {"SAME_UPPER": "SAME", "SAME_LOWER": "SAME_LOWER", "VALID": "VALID"}.get(auto)
    if padding is None:
        pads = list(a.get("pads", [0, 0, 0, 0]))
        padding = (pads[0], pads[1], pads[2], pads[3])
    return Window.of(kernel, tuple(a.get("strides", (1, 1))), tuple(a.get("dilations", (1, 1))), padding)


def flatten_shape(node: Node, shape: Shape) -> tuple[int, int]:
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


def _matmul(node: Node, a: Shape, b: Shape) -> Shape:
    if not a or not b:
        raise InputError(f"{node.where()}: shapes do not match ({a} and {b}; expected at least 1-D)")
    a2, b2 = (a if len(a) > 1 else (1, *a)), (b if len(b) > 1 else (*b, 1))
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        batch = None
    if batch is None or a2[-1] != b2[-2]:
        raise InputError(f"{node.where()}: shapes do not match ({a} times {b})")
    return tuple(batch) + (a2[-2],) * (len(a) > 1) + (b2[-1],) * (len(b) > 1)


def _broadcast(node: Node, *shapes: Shape) -> Shape:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        shown = " and ".join(map(str, shapes))
        raise InputError(f"{node.where()}: shapes do not match ({shown} do not broadcast)") from None


def _windowed(node: Node, x: Shape, kernel: Shape, channels: int) -> tuple[Shape, int]:
    oh, ow, (top, left, bottom, right) = window(node, (kernel[0], kernel[1])).resolve(x[2], x[3])
    padded = x[0] * x[1] * (x[2] + top + bottom) * (x[3] + left + right)
    return (x[0], channels, oh, ow), padded


def _conv(node: Node, x: Shape, w: Shape) -> tuple[Shape, list[int]]:
    group = int(node.attrs.get("group", 1))
    if len(x) != 4 or len(w) != 4 or x[1] != w[1] * group or w[0] % group:
        raise InputError(f"{node.where()}: input {x} and weights {w} (group {group}) do not match")
    out, padded = _windowed(node, x, w[2:], w[0])
    return out, [padded, x[0] * x[1] * out[2] * out[3] * w[2] * w[3]]  # padded input, gathered windows


def node_shape(node: Node, s: list[Shape], constants: Mapping[str, np.ndarray]) -> tuple[Shape, list[int]]:
    """(output shape, element counts of the temporary arrays the float runner makes) of ``node``."""
    op, x = node.op, s[0]
    if op == "Conv":
        return _conv(node, x, s[1])
    if op in ("MaxPool", "AveragePool"):
        if len(x) != 4:
            raise InputError(f"{node.where()}: pools need a 4-D NCHW input, found shape {x}")
        out, padded = _windowed(node, x, tuple(node.attrs["kernel_shape"]), x[1])
        return out, [padded]
    if op == "Gemm":
        b = s[1][::-1] if node.attrs.get("transB", 0) else s[1]
        if len(x) != 2 or len(b) != 2 or x[1] != b[0]:
            trans = node.attrs.get("transB", 0)
            raise InputError(f"{node.where()}: shapes do not match ({x} times {s[1]}, transB {trans})")
        return _broadcast(node, (x[0], b[1]), *s[2:]), []
    if op == "MatMul":
        return _matmul(node, x, s[1]), []
    if op == "Add":
        return _broadcast(node, x, s[1]), []
    if op == "GlobalAveragePool":
        return x[:2] + (1,) * (len(x) - 2), []
    if op == "Flatten":
        return flatten_shape(node, x), []
    if op == "Reshape":
        return reshape_shape(node, x, constants[node.inputs[1]]), []
    return x, []  # Relu, Clip


@dataclass(frozen=True)
class Plan:
    """Shapes of every tensor, and the tensors to free after each node (by node index)."""

    shapes: dict[str, Shape]
    free_after: list[list[str]]


def _bytes(shape: Shape, itemsize: int = F32) -> int:
    return math.prod(shape) * itemsize


def _check_tensor(graph: Graph, what: str, nbytes: int) -> None:
    if nbytes > graph.budget.tensor_bytes:
        raise InputError(f"{what} needs {nbytes} bytes; expected at most {graph.budget.tensor_bytes} per tensor "
                         "(the model memory budget)")


def _last_reads(graph: Graph, kept: set[str]) -> list[list[str]]:
    last: dict[str, int] = {}
    for k, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name and name not in graph.constants:
                last[name] = k
        last.setdefault(node.outputs[0], k)  # an output no one reads is dropped right away
    free: list[list[str]] = [[] for _ in graph.nodes]
    for name, k in last.items():
        if name not in kept:
            free[k].append(name)
    return free


def plan(graph: Graph, feed_shapes: Mapping[str, Shape], keep: Iterable[str] | None = None) -> Plan:
    """Shapes and frees of a run on inputs of ``feed_shapes``; `InputError` beyond ``graph.budget``.

    ``keep`` None keeps every tensor (nothing is freed); otherwise the graph outputs and ``keep``.
    """
    shapes: dict[str, Shape] = {k: tuple(v.shape) for k, v in graph.constants.items()}
    shapes.update({k: tuple(v) for k, v in feed_shapes.items()})
    kept = set(shapes) | set(graph.activations()) if keep is None else set(keep) | set(graph.outputs)
    free = _last_reads(graph, kept)
    for name, shape in feed_shapes.items():
        _check_tensor(graph, f"model input {name!r} of shape {tuple(shape)}", _bytes(tuple(shape)))
    live = sum(_bytes(shape) for shape in shapes.values())
    for k, node in enumerate(graph.nodes):
        out, temps = node_shape(node, [shapes[i] for i in node.inputs if i], graph.constants)
        shapes[node.outputs[0]] = out
        _check_tensor(graph, f"{node.where()}: output {node.outputs[0]!r} of shape {out}", _bytes(out))
        for t in temps:
            _check_tensor(graph, f"{node.where()}: a working array of {t} values", t * F32)
        live += _bytes(out)
        if live + F32 * sum(temps) > graph.budget.total_bytes:
            raise InputError(f"{node.where()}: the tensors alive while it runs need {live + F32 * sum(temps)} bytes; "
                             f"expected at most {graph.budget.total_bytes} in all (the model memory budget)")
        live -= sum(_bytes(shapes[name]) for name in free[k])
    return Plan(shapes, free)
