"""edgecal: streaming, bounded-memory int8 calibration for edge devices.

>>> import numpy as np, edgecal
>>> cal = edgecal.Calibrator()
>>> cal.observe("act", np.linspace(-1.0, 1.0, 1001, dtype=np.float32))
>>> table = cal.compute("minmax")
>>> table["act"].amax, table["act"].zero_point
(1.0, 0)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import EdgecalError, InputError, StateError, UnknownNameError

if TYPE_CHECKING:
    from .calibrator import Calibrator
    from .histogram import StreamingHistogram
    from .table import CalibrationTable, TensorCalibration

# Imported on first use, so that `edgecal.sources.client` inside an application and
# `edgecal --help` do not load the calibration stack.
_LAZY = {"Calibrator": "calibrator", "StreamingHistogram": "histogram", "CalibrationTable": "table",
         "TensorCalibration": "table"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'edgecal' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "__version__",
    "Calibrator",
    "CalibrationTable",
    "TensorCalibration",
    "StreamingHistogram",
    "EdgecalError",
    "InputError",
    "StateError",
    "UnknownNameError",
]
