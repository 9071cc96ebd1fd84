"""The op registry: everything edgecal's ONNX runner knows about each op type, in one place.

An op is one `OpSpec`, registered with `register_op` by the module of its family
(`conv`, `gemm`, `elementwise`, `pool`, `shape_ops`). The reader (`edgecal.model.graph`),
the shape planner (`edgecal.model.shapes`), the float runner (`edgecal.model.float_run`)
and the int8 lowering (`edgecal.model.int8_run`) only dispatch through `get_op`, so
supporting a new op is one new module that calls `register_op` when imported::

    register_op(OpSpec("Neg", arity=(1, 1), run_float=lambda node, args, values: -args[0],
                       lower=lower_neg))

What each field does is described on `OpSpec`; the checks return a problem (one line,
without the node, which the reader prefixes) or None.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Union

import numpy as np

from ...errors import InputError

if TYPE_CHECKING:
    from ..graph import Node
    from ..int8_run import Int8Model
    from ..lowering import Step

Shape = tuple[int, ...]
Constants = Mapping[str, np.ndarray]
Clamp = Union[str, tuple[float, float]]  # "relu" or (lo, hi), as `edgecal.reference.activation_range` takes

__all__ = ["OPS", "OpSpec", "broadcast", "get_op", "register_op", "same_shape", "unregister_op"]


def no_problem(node: Node, constants: Constants) -> str | None:
    """The default check: nothing beyond the arity, outputs and attribute types the reader checks itself."""
    return None


def same_shape(node: Node, shapes: list[Shape], constants: Constants) -> tuple[Shape, list[int]]:
    """The default shape rule: the output has the first input's shape and the float run makes no temporaries."""
    return shapes[0], []


def broadcast(node: Node, *shapes: Shape) -> Shape:
    """The numpy broadcast of ``shapes``; `InputError` naming the node when they do not broadcast."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        shown = " and ".join(map(str, shapes))
        raise InputError(f"{node.where()}: shapes do not match ({shown} do not broadcast)") from None


@dataclass(frozen=True)
class OpSpec:
    """One op type: how it is checked, shaped, run in float and lowered to int8.

    Parameters
    ----------
    op : str
        The ONNX op type.
    arity : (int, int)
        Required and most inputs; every op has exactly one output.
    run_float : callable
        ``(node, args, values) -> array``: the float output from the input arrays (None
        for an absent optional input); ``values`` holds every tensor computed so far.
    lower : callable, optional
        ``(model, nodes, extra_bias, out) -> Step``: the int8 step of ``nodes`` (the op's
        node, plus the nodes fused into it) producing ``out``; None: no int8 lowering.
    malformed : callable
        ``(node, constants) -> problem``: what makes the node invalid ONNX (`MalformedModelError`).
    unsupported : callable
        ``(node, constants) -> problem``: valid ONNX the runners do not implement (`InputError`).
    shape : callable
        ``(node, input shapes, constants) -> (output shape, element counts of float temporaries)``.
    attrs : dict
        Attribute types beyond `edgecal.model.graph.ATTRS`: name -> (type, list length or None, least).
    fuse_bias, fuse_activation : bool
        In int8, a following Add of a constant becomes the op's bias / a following op
        with a ``clamp`` becomes its activation clamp (when nothing else reads the tensor).
    clamp : callable, optional
        ``(node, constants) -> "relu" | (lo, hi)``: set for activations that fuse into the op before them.
    """

    op: str
    arity: tuple[int, int]
    run_float: Callable[[Node, list[Any], Mapping[str, np.ndarray]], np.ndarray]
    lower: Callable[[Int8Model, list[Node], Any, str], Step] | None = None
    malformed: Callable[[Node, Constants], str | None] = no_problem
    unsupported: Callable[[Node, Constants], str | None] = no_problem
    shape: Callable[[Node, list[Shape], Constants], tuple[Shape, list[int]]] = same_shape
    attrs: dict[str, tuple[type, int | None, int | None]] = field(default_factory=dict)
    fuse_bias: bool = False
    fuse_activation: bool = False
    clamp: Callable[[Node, Constants], Clamp] | None = None


_REGISTRY: dict[str, OpSpec] = {}
#: the supported op types, in registration order (a live view: it grows as op modules register)
OPS = _REGISTRY.keys()


def register_op(spec: OpSpec) -> OpSpec:
    """Add ``spec`` to the registry; `InputError` if its op type is already registered."""
    if spec.op in _REGISTRY:
        raise InputError(f"op {spec.op} is already registered (by {_REGISTRY[spec.op].run_float.__module__}); "
                         "expected each op type registered once")
    _REGISTRY[spec.op] = spec
    return spec


def unregister_op(op: str) -> None:
    """Remove ``op`` from the registry (a no-op for an unknown type)."""
    _REGISTRY.pop(op, None)


def get_op(op: str) -> OpSpec:
    """The spec of ``op``; `InputError` listing the supported ops."""
    spec = _REGISTRY.get(op)
    if spec is None:
        raise InputError(f"op {op} is not supported; supported ops: {', '.join(_REGISTRY)}")
    return spec


#: the built-in op families; each registers its ops when imported, and this order is the order of `OPS`
FAMILIES = ("conv", "gemm", "elementwise", "pool", "shape_ops")
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")
