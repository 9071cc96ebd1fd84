"""The accuracy check of `edgecal check`, reduced to what a report shows: agreement and per-tensor SQNR.

The model runs in edgecal's own runner (`edgecal.model.check_model`) when it supports
every op; otherwise in ONNX Runtime (`quantize_onnx` then `check_onnx`, the
``onnxruntime`` extra), as ``edgecal check`` chooses.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..model.activations import feeds_from, load_arrays
from ..model.check import check_model
from ..model.graph import MissingExtraError, load_graph
from ..table import CalibrationTable


@dataclass(frozen=True)
class Accuracy:
    """Float versus int8 for one table: top-1 agreement (None if the output is not class scores) and SQNR."""

    model: str
    data: str
    runtime: str
    samples: int
    agreement: float | None
    float_accuracy: float | None
    int8_accuracy: float | None
    tensor_sqnr: dict[str, float]


Checker = Callable[[CalibrationTable], Accuracy]


def _labels(arrays: dict[str, np.ndarray], key: str | None, data: str) -> np.ndarray | None:
    if key is None:
        return None
    if key not in arrays:
        raise InputError(f"{data}: no array {key!r} for --labels; it holds {', '.join(sorted(arrays))}")
    return arrays.pop(key)


def checker(model: str | os.PathLike[str], data: str | os.PathLike[str], labels: str | None = None) -> Checker:
    """A function checking a table on ``model`` with the inputs (and optional labels array) of ``data``."""
    model, data = str(model), str(data)
    arrays = load_arrays(data)
    y = _labels(arrays, labels, data)
    try:
        graph = load_graph(model)
    except MissingExtraError:
        raise
    except InputError:
        return _ort_checker(model, data, arrays, y)
    feeds = feeds_from(graph, arrays, data)

    def check(table: CalibrationTable) -> Accuracy:
        r = check_model(graph, table, feeds, y)
        return Accuracy(model, data, "edgecal", r.samples, r.top1_agreement, r.float_accuracy, r.int8_accuracy,
                        {t.name: t.sqnr_db for t in r.tensors})

    return check


def _ort_checker(model: str, data: str, arrays: dict[str, np.ndarray], y: Any) -> Checker:
    """The check in ONNX Runtime (models edgecal's runner does not run)."""
    from ..model.ort_check import check_onnx
    from ..model.ort_quant import quantize_onnx
    from ..sources import OnnxRuntimeSource
    from ..sources.model_inputs import check_feed

    feeds = check_feed(OnnxRuntimeSource(model=model, inputs=data).load(), arrays, data)

    def check(table: CalibrationTable) -> Accuracy:
        with tempfile.TemporaryDirectory(prefix="edgecal-report-") as tmp:
            int8 = Path(tmp) / "model.int8.onnx"
            quantize_onnx(model, int8, table)
            r = check_onnx(model, int8, [feeds], y)
        return Accuracy(model, data, "onnxruntime", r.samples, r.top1_agreement, r.float_accuracy, r.int8_accuracy,
                        {t.name: t.sqnr_db for t in r.tensors})

    return check
