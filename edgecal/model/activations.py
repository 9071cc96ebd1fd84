"""A float ONNX model as an activation source: every tensor it computes goes into a `Calibrator`.

Calibrating a model this way needs no ONNX Runtime: `run_float` executes the graph
in numpy and hands over each intermediate tensor, named as in the model. Calibrating
from input files (``edgecal calibrate --model``, the daemon) goes through the model
sources instead (`edgecal.sources.RunnerSource` for this runner).
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from ..arrays import read_arrays
from ..calibrator import Calibrator
from ..errors import InputError
from .float_run import run_float
from .graph import Graph


MAX_BATCH_BYTES = 1 << 30  # one input file is one batch in memory


def observe_model(cal: Calibrator, graph: Graph, feeds: Mapping[str, np.ndarray]) -> None:
    """Run ``graph`` in float on one batch and observe every activation (inputs and node outputs).

    Each tensor is observed as soon as it is computed and freed after its last reader,
    so memory holds the live tensors only, not every intermediate of the batch.
    """
    run_float(graph, feeds, keep=(), observe=cal.observe)


def feeds_from(graph: Graph, arrays: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """The model's inputs from a file's arrays: by input name, or the only array of a single-input model."""
    names = [n for n, _ in graph.inputs]
    if all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    if len(names) == 1 and len(arrays) == 1:
        return {names[0]: next(iter(arrays.values()))}
    raise InputError(f"{where}: holds arrays {sorted(arrays)}; expected one named after each model input "
                     f"({', '.join(names)}), or a single array for a single-input model")


def load_arrays(path: str | os.PathLike[str], max_bytes: int = MAX_BATCH_BYTES) -> dict[str, np.ndarray]:
    """Arrays of a .npy (named by the stem) or .npz file, read by `edgecal.arrays` (headers checked, size capped)."""
    return read_arrays(path, max_bytes)

