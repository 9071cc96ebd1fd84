"""Conv (2-D, with groups, pads, strides, dilations): float with numpy, int8 on the reference conv kernels.

In int8 a Conv whose ``group`` equals its input channels, one input channel per group,
runs as depthwise; a following Add of a constant becomes its bias and a Relu / Clip
its activation clamp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from ... import reference as ref
from ...errors import InputError
from ..lowering import QParams, Step, quantize_bias, quantize_weights
from . import OpSpec, Shape, register_op
from .windows import nchw, nhwc, window, windowed_shape, windows

if TYPE_CHECKING:
    from ..graph import Node
    from ..int8_run import Int8Model


def unsupported(node: Node, constants: Mapping[str, np.ndarray]) -> str | None:
    if np.ndim(constants.get(node.inputs[1], np.zeros((1,) * 4))) != 4:
        return "only 2-D convolutions are supported"
    return None


def shape(node: Node, s: list[Shape], constants: Mapping[str, np.ndarray]) -> tuple[Shape, list[int]]:
    x, w = s[0], s[1]
    group = int(node.attrs.get("group", 1))
    if len(x) != 4 or len(w) != 4 or x[1] != w[1] * group or w[0] % group:
        raise InputError(f"{node.where()}: input {x} and weights {w} (group {group}) do not match")
    out, padded = windowed_shape(node, x, w[2:], w[0])
    return out, [padded, x[0] * x[1] * out[2] * out[3] * w[2] * w[3]]  # padded input, gathered windows


def conv(node: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Float Conv of NCHW ``x`` with OIHW ``w`` (and bias ``b``), as the ONNX operator docs define it."""
    group = int(node.attrs.get("group", 1))
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise InputError(f"{node.where()}: input {x.shape} and weights {w.shape} (group {group}) do not match")
    cols = windows(x, window(node, w.shape[2:]), 0.0)
    per_in, per_out = x.shape[1] // group, w.shape[0] // group
    outs = [np.einsum("ncyxij,ocij->noyx", cols[:, g * per_in:(g + 1) * per_in], w[g * per_out:(g + 1) * per_out],
                      optimize=True) for g in range(group)]
    y = np.concatenate(outs, axis=1)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def lower(model: Int8Model, nodes: list[Node], extra_bias: Any, out: str) -> Step:
    node = nodes[0]
    qo = model.qparams[out]
    act = model.act_range(nodes, qo)
    qi = model.qparams[node.inputs[0]]
    return Step(nodes, node.inputs[:1], out, _conv_run(model, node, (qi, qo), act, extra_bias))


def _conv_run(model: Int8Model, node: Node, q: tuple[QParams, QParams], act: tuple[int, int],
              extra_bias: Any) -> Callable[[np.ndarray], np.ndarray]:
    (qi, qo), w, bias = q, model.constant(node, 1, "weight"), model.optional_constant(node, 2, "bias")
    if extra_bias is not None:
        bias = extra_bias.reshape(-1) if bias is None else bias + extra_bias.reshape(-1)
    group = int(node.attrs.get("group", 1))
    qw, sw = quantize_weights(w)
    qb = quantize_bias(bias, qi.scale, sw, node.where())
    rq = ref.op_multipliers("conv", qi.scale, sw, qo.scale, model.rounding)
    win = window(node, w.shape[2:])
    depthwise = group > 1 and w.shape[1] == 1
    kw_ = np.ascontiguousarray(qw.transpose(1, 2, 3, 0) if depthwise else qw.transpose(0, 2, 3, 1))
    fn = ref.depthwise_conv2d if depthwise else ref.conv2d

    def run(x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != w.shape[1] * group:
            raise InputError(f"{node.where()}: input shape {x.shape} does not match weights {w.shape}")
        return nchw(fn(nhwc(x), kw_, qb, rq, in_zp=qi.zero_point, out_zp=qo.zero_point, stride=win.stride,
                       padding=win.padding, dilation=win.dilation, act_range=act))

    return run


register_op(OpSpec("Conv", (2, 3), lambda node, args, values: conv(node, *args), lower, unsupported=unsupported,
                   shape=shape, fuse_bias=True, fuse_activation=True))
