"""A table chosen with the model's own output error: per group of tensors, the method the network prefers.

A per-tensor method (``mse``, ``percentile``, ...) judges a range by that tensor's
own round-trip error. A network can disagree: measured on PP-OCRv4's recogniser,
``percentile``'s ranges are worse than ``mse``'s in the early layers and better in
the late ones. `search_table` asks the model (the ``onnxruntime`` extra): it splits
the tensors into ``groups`` runs in graph order, starts from the first method's
table and, group by group, keeps another method's ranges for that group when the
quantized model's output SQNR on the calibration inputs improves (a greedy
coordinate search; ``len(methods) - 1`` quantize-and-run rounds per group). The
held-out inputs are never used for the choice.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..calibrator import Calibrator
from ..errors import InputError
from ..metrics import sqnr_from_sums
from ..table import CalibrationTable
from .ort_quant import import_ort, quantize_onnx

log = logging.getLogger("edgecal")


@dataclass(frozen=True)
class SearchStep:
    """One group's decision: its tensors, the method kept, and the output SQNR of each method tried."""

    group: int
    tensors: tuple[str, ...]
    chosen: str
    sqnr_db: Mapping[str, float]


def _graph_order(model_path: str | os.PathLike[str], names: Sequence[str]) -> list[str]:
    """``names`` in the order the graph computes them (graph inputs first, unknown names last)."""
    _, onnx = import_ort()
    g = onnx.load(str(model_path), load_external_data=False).graph
    order = [i.name for i in g.input] + [o for n in g.node for o in n.output]
    rank = {name: i for i, name in enumerate(order)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))


class _Scorer:
    """Output SQNR of the model quantized with a table, on fixed float inputs."""

    def __init__(self, model_path: str | os.PathLike[str], feeds: Sequence[Mapping[str, np.ndarray]],
                 activations: str, workdir: Path) -> None:
        ort, _ = import_ort()
        self.ort, self.model, self.feeds, self.activations = ort, model_path, list(feeds), activations
        self.path = workdir / "search.int8.onnx"
        sess = self._session(model_path)
        self.outputs = [o.name for o in sess.get_outputs()]
        self.reference = [sess.run(self.outputs, dict(f)) for f in self.feeds]

    def _session(self, path: Any) -> Any:
        opts = self.ort.SessionOptions()
        opts.intra_op_num_threads = 1
        return self.ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, table: CalibrationTable) -> float:
        quantize_onnx(self.model, self.path, table, activations=self.activations, missing="float")
        sess = self._session(self.path)
        signal = err = 0.0
        for ref, feed in zip(self.reference, self.feeds):
            for r, q in zip(ref, sess.run(self.outputs, dict(feed))):
                r64 = np.asarray(r, dtype=np.float64)
                signal += float(np.sum(r64 * r64))
                err += float(np.sum((r64 - np.asarray(q, dtype=np.float64)) ** 2))
        return sqnr_from_sums(signal, err)


def search_table(model_path: str | os.PathLike[str], cal: Calibrator, feeds: Sequence[Mapping[str, np.ndarray]],
                 methods: Sequence[str] = ("mse", "percentile"), groups: int = 8, scheme: str = "tflite",
                 activations: str = "s8") -> tuple[CalibrationTable, list[SearchStep]]:
    """The table whose per-group methods give the best output SQNR on ``feeds`` (see the module docstring).

    Parameters
    ----------
    model_path : path
        The float ONNX model the calibrator's tensors come from.
    cal : Calibrator
        Histograms of the model's tensors (e.g. from ``edgecal calibrate --runtime onnxruntime``).
    feeds : list of dict
        Calibration inputs (model input name -> array), run in float and in int8.
    methods : list of str
        Registered methods to choose from; the first is where the search starts.
    groups : int
        How many runs of tensors, in graph order, get a method each.
    """
    if not methods or len(set(methods)) != len(methods):
        raise InputError(f"methods must name at least one method, each once; found {list(methods)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= 1024:
        raise InputError(f"groups must be an integer in [1, 1024], found {groups!r}")
    if not feeds:
        raise InputError("the search needs at least one calibration input; found none")
    tables = {m: cal.compute(m, scheme=scheme) for m in methods}
    names = _graph_order(model_path, list(tables[methods[0]]))
    size = max(1, math.ceil(len(names) / groups))
    chunks = [names[i:i + size] for i in range(0, len(names), size)]
    current = dict(tables[methods[0]].items())
    steps: list[SearchStep] = []
    with tempfile.TemporaryDirectory(prefix="edgecal-search-") as tmp:
        score = _Scorer(model_path, feeds, activations, Path(tmp))
        best = score(tables[methods[0]])
        for g, chunk in enumerate(chunks):
            tried = {methods[0]: best}  # every group starts from the first method's ranges
            chosen = methods[0]
            for m in methods[1:]:
                trial = {**current, **{n: tables[m][n] for n in chunk}}
                s = score(tables[methods[0]].with_entries(trial.values()))
                tried[m] = s
                if s > best:
                    best, chosen, current = s, m, trial
            steps.append(SearchStep(g, tuple(chunk), chosen, tried))
            log.info("search group %d/%d (%d tensors): %s, output SQNR %.2f dB", g + 1, len(chunks), len(chunk),
                     chosen, best)
    table = tables[methods[0]].with_entries(current.values())
    return table, steps


def searched_entry_methods(table: CalibrationTable) -> dict[str, int]:
    """How many entries of ``table`` each method chose (for reports)."""
    counts: dict[str, int] = {}
    for e in table.values():
        counts[e.method] = counts.get(e.method, 0) + 1
    return counts

