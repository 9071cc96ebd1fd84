"""MaxPool, AveragePool and GlobalAveragePool: float with numpy, int8 on the reference pool kernels.

Pools exclude padding from the max and the average (TFLite's rule), so
``count_include_pad=1``, ``ceil_mode`` and dilated pools are refused. In int8 a pool
keeps its input's scale and zero point, as TFLite requires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ... import reference as ref
from ...errors import InputError
from ..lowering import Step
from . import OpSpec, Shape, register_op
from .windows import nchw, nhwc, window, windowed_shape, windows

if TYPE_CHECKING:
    from ..graph import Node
    from ..int8_run import Int8Model


def malformed(node: Node, constants: Mapping[str, np.ndarray]) -> str | None:
    return None if "kernel_shape" in node.attrs else "no kernel_shape attribute; expected two kernel sizes"


def unsupported(node: Node, constants: Mapping[str, np.ndarray]) -> str | None:
    a = node.attrs
    if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1])):
        return "ceil_mode and dilated pools are not supported"
    if node.op == "AveragePool" and a.get("count_include_pad", 0):
        return "count_include_pad=1 is not supported (TFLite excludes padding from the average)"
    return None


def shape(node: Node, s: list[Shape], constants: Mapping[str, np.ndarray]) -> tuple[Shape, list[int]]:
    x = s[0]
    if len(x) != 4:
        raise InputError(f"{node.where()}: pools need a 4-D NCHW input, found shape {x}")
    out, padded = windowed_shape(node, x, tuple(node.attrs["kernel_shape"]), x[1])
    return out, [padded]


def global_shape(node: Node, s: list[Shape], constants: Mapping[str, np.ndarray]) -> tuple[Shape, list[int]]:
    return s[0][:2] + (1,) * (len(s[0]) - 2), []


def max_pool(node: Node, x: np.ndarray) -> np.ndarray:
    return windows(x, window(node, tuple(node.attrs["kernel_shape"])), -np.inf).max(axis=(-2, -1))


def average_pool(node: Node, x: np.ndarray) -> np.ndarray:
    win = window(node, tuple(node.attrs["kernel_shape"]))
    total = windows(x, win, 0.0).sum(axis=(-2, -1))
    count = windows(np.ones((1, 1, *x.shape[2:]), x.dtype), win, 0.0).sum(axis=(-2, -1))
    return total / count


def lower(model: Int8Model, nodes: list[Node], extra_bias: Any, out: str) -> Step:
    node, src = nodes[0], nodes[0].inputs[0]
    model.qparams[out] = model.qparams[src]
    fn = ref.max_pool2d if node.op == "MaxPool" else ref.avg_pool2d

    def run(x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            raise InputError(f"{node.where()}: int8 pools need a 4-D NCHW input, found shape {x.shape}")
        win = window(node, x.shape[2:] if node.op == "GlobalAveragePool" else tuple(node.attrs["kernel_shape"]))
        return nchw(fn(nhwc(x), win.kernel, win.stride, win.padding))

    return Step(nodes, (src,), out, run)


register_op(OpSpec("MaxPool", (1, 1), lambda node, args, values: max_pool(node, args[0]), lower,
                   malformed=malformed, unsupported=unsupported, shape=shape))
register_op(OpSpec("AveragePool", (1, 1), lambda node, args, values: average_pool(node, args[0]), lower,
                   malformed=malformed, unsupported=unsupported, shape=shape))
register_op(OpSpec("GlobalAveragePool", (1, 1),
                   lambda node, args, values: args[0].mean(axis=tuple(range(2, args[0].ndim)), keepdims=True),
                   lower, shape=global_shape))
