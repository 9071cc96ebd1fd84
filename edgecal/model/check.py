"""The accuracy check: what a calibration table costs a model.

`check_model` runs the float graph and its int8 lowering on the same inputs and
reports top-1 accuracy of both against labels (when given), top-1 agreement
between them, and the SQNR of every int8 tensor against its float twin,
``10 log10(sum f**2 / sum (f - dequantized q)**2)`` in dB, worst first on request.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from ..metrics import sqnr_between as sqnr_db  # edgecal.model.sqnr_db: the one dB formula, for two arrays
from ..metrics import sqnr_from_sums  # noqa: F401  (importable from here as before)
from ..table import CalibrationTable
from .float_run import run_float
from .graph import Graph
from .int8_run import Int8Model


@dataclass(frozen=True)
class TensorReport:
    """One int8 tensor: the op that produced it, its parameters and its SQNR against float."""

    name: str
    op: str
    scale: float
    zero_point: int
    sqnr_db: float


@dataclass(frozen=True)
class CheckReport:
    """Float versus int8 on one data set."""

    samples: int
    output: str
    rounding: str
    float_accuracy: float | None
    int8_accuracy: float | None
    top1_agreement: float
    tensors: list[TensorReport]

    def worst(self, n: int = 3) -> list[TensorReport]:
        """The ``n`` tensors of lowest SQNR."""
        return sorted(self.tensors, key=lambda t: t.sqnr_db)[:n]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (an infinite SQNR becomes the string "inf")."""
        d = asdict(self)
        for t in d["tensors"]:
            t["sqnr_db"] = "inf" if math.isinf(t["sqnr_db"]) else t["sqnr_db"]
        d["worst"] = [t.name for t in self.worst()]
        return d


def _labels(labels: np.ndarray | None, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    y = np.asarray(labels).reshape(-1)
    if y.shape[0] != n or y.dtype.kind not in "iu":
        raise InputError(f"labels must be {n} integers (one per sample), found {y.dtype} with shape {np.shape(labels)}")
    return y


def check_model(graph: Graph, table: CalibrationTable, feeds: Mapping[str, np.ndarray],
                labels: np.ndarray | None = None, rounding: str = "tflite") -> CheckReport:
    """Run float and int8 on ``feeds`` (a batch per model input) and compare; see module docstring.

    The model's first output is taken as class scores ``[samples, classes]``.
    """
    model = Int8Model(graph, table, rounding)
    floats = run_float(graph, feeds, keep=model.qparams)  # the tensors fused away are freed as it runs
    ints = model.run(feeds)
    out = graph.outputs[0]
    f_out, q_out = floats[out], model.qparams[out].dequantize(ints[out])
    if f_out.ndim != 2:
        raise InputError(f"model output {out!r} has shape {f_out.shape}; the check expects [samples, classes]")
    y = _labels(labels, f_out.shape[0])
    f_top, q_top = f_out.argmax(axis=1), q_out.argmax(axis=1)
    producer = {s.output: s.nodes[0].op for s in model.steps}
    reports = [TensorReport(name, producer.get(name, "input"), model.qparams[name].scale,
                            model.qparams[name].zero_point, sqnr_db(floats[name], model.qparams[name].dequantize(q)))
               for name, q in ints.items()]  # one dequantized tensor at a time
    return CheckReport(
        samples=int(f_out.shape[0]), output=out, rounding=rounding,
        float_accuracy=None if y is None else float(np.mean(f_top == y)),
        int8_accuracy=None if y is None else float(np.mean(q_top == y)),
        top1_agreement=float(np.mean(f_top == q_top)), tensors=reports,
    )
