"""The accuracy check for codebook tables: the float graph with LUT-quantized activations.

Integer kernels take uniform scales only, so a table whose entries carry codebooks
(``lut``) is checked by simulation: the float graph runs twice on the same inputs,
once as is and once with every activation that has a codebook replaced, as soon as
it is computed, by its nearest level (`edgecal.reference.lut_quantize`, the same
codes as the firmware's ``ecal_lut_quantize``). The report is the accuracy check's
`CheckReport` (rounding ``"lut"``): top-1 of both runs, their agreement, and the
SQNR of every quantized activation against its float twin.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import InputError
from ..reference.lut import lut_dequantize, lut_quantize
from ..table import CalibrationTable
from .check import CheckReport, TensorReport, _labels, sqnr_db
from .float_run import run_float
from .graph import Graph


def check_codebook(graph: Graph, table: CalibrationTable, feeds: Mapping[str, np.ndarray],
                   labels: np.ndarray | None = None) -> CheckReport:
    """Float against LUT-quantized activations on ``feeds``; the first output is class scores."""
    luts = {e.name: e.lut for e in table.values() if e.lut is not None}
    if not luts:
        raise InputError("the table has no codebook entry; expected at least one tensor with a lut")
    floats = run_float(graph, feeds)
    quantized: list[str] = []

    def snap(name: str, value: np.ndarray) -> None:  # in place: the next nodes read the snapped values
        if name in luts and value.dtype.kind == "f":
            value[...] = lut_dequantize(lut_quantize(value, luts[name]), luts[name])
            quantized.append(name)

    snapped = run_float(graph, feeds, keep=list(luts), observe=snap)
    out = graph.outputs[0]
    if floats[out].ndim != 2:
        raise InputError(f"model output {out!r} has shape {floats[out].shape}; the check expects [samples, classes]")
    y = _labels(labels, floats[out].shape[0])
    f_top, q_top = floats[out].argmax(axis=1), snapped[out].argmax(axis=1)
    reports = [TensorReport(n, "codebook", table[n].scale, table[n].zero_point, sqnr_db(floats[n], snapped[n]))
               for n in quantized]
    return CheckReport(
        samples=int(f_top.shape[0]), output=out, rounding="lut",
        float_accuracy=None if y is None else float(np.mean(f_top == y)),
        int8_accuracy=None if y is None else float(np.mean(q_top == y)),
        top1_agreement=float(np.mean(f_top == q_top)), tensors=reports,
    )
