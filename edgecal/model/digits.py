"""The bundled digits example: a small CNN and its held-out data (made by scripts/train_digits.py).

`run_digits_demo` calibrates the model from its own activations on the calibration
split (the float graph is the activation source) and checks every method's table
on the evaluation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..calibrator import Calibrator
from ..methods.registry import demo_methods
from ..packagedata import load_npz
from .activations import observe_model
from .check import CheckReport, check_model
from .graph import Graph, from_onnx, import_onnx


def load_digits_model() -> Graph:
    """The bundled float digits CNN (needs the ``onnx`` extra)."""
    onnx = import_onnx()
    data = resources.files("edgecal").joinpath("data/digits_cnn.onnx").read_bytes()
    return from_onnx(onnx.load_model_from_string(data), "digits_cnn")


def load_digits_split() -> dict[str, np.ndarray]:
    """calib_x, calib_y, eval_x, eval_y: images [N, 1, 8, 8] in [0, 1] and their labels."""
    return load_npz("digits_split.npz")


@dataclass(frozen=True)
class DigitsDemo:
    """Check reports per method, the scheme used, and the calibration / evaluation sizes."""

    reports: dict[str, CheckReport]
    scheme: str
    calib_samples: int
    eval_samples: int


def run_digits_demo(methods: tuple[str, ...] | None = None, scheme: str = "tflite",
                    rounding: str = "tflite") -> DigitsDemo:
    """Calibrate the digits CNN from its own activations and check each method's table (default: every method)."""
    graph, split = load_digits_model(), load_digits_split()
    cal = Calibrator(model_hash=graph.model_hash)
    for image in split["calib_x"]:  # one sample at a time, as a live source delivers them
        observe_model(cal, graph, {"image": image[None]})
    feeds = {"image": split["eval_x"]}
    reports = {m: check_model(graph, cal.compute(m, scheme=scheme), feeds, split["eval_y"], rounding)
               for m in (methods or demo_methods())}
    return DigitsDemo(reports, scheme, int(split["calib_x"].shape[0]), int(split["eval_x"].shape[0]))
