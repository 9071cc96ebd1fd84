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
from .graph import Graph, Node
from .ops import get_op
from .ops.shape_ops import flatten_shape, reshape_shape
from .ops.windows import window

__all__ = ["Plan", "Shape", "flatten_shape", "node_shape", "plan", "reshape_shape", "window"]

Shape = tuple[int, ...]
F32 = 4


def node_shape(node: Node, s: list[Shape], constants: Mapping[str, np.ndarray]) -> tuple[Shape, list[int]]:
    """(output shape, element counts of the temporary arrays the float runner makes) of ``node``, by its op."""
    return get_op(node.op).shape(node, s, constants)


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
