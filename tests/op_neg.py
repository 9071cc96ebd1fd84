"""Neg (y = -x), added to edgecal's ONNX runner the way any op is: this one module, registered on import.

Float: numpy's negative. int8: TFLite-style rescale of ``in_zp - q`` from the input's
scale to the output's (its own table entry), clamped to int8. Nothing in edgecal
names this op; importing the module is all it takes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecal import reference as ref
from edgecal.model.graph import Node
from edgecal.model.int8_run import Int8Model
from edgecal.model.lowering import Step
from edgecal.model.ops import OpSpec, register_op


def lower(model: Int8Model, nodes: list[Node], extra_bias: Any, out: str) -> Step:
    """One int8 step: ``in_zp - q`` requantized by s_in / s_out to the output's own parameters."""
    node = nodes[0]
    src = node.inputs[0]
    qi = model.qparams[src]
    qo = model.qparams[out] = model.entry(out, f"output of {node.where()}")
    real = float(np.float32(qi.scale) / np.float32(qo.scale))
    rq = ref.Requant.from_real([real], model.rounding)
    return Step(nodes, (src,), out, lambda x: ref.requantize(qi.zero_point - x.astype(np.int64), rq, qo.zero_point))


SPEC = register_op(OpSpec("Neg", (1, 1), lambda node, args, values: np.negative(args[0]), lower))
