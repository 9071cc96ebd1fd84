"""edgecal: streaming, bounded-memory int8 calibration for edge devices.

>>> import numpy as np, edgecal
>>> cal = edgecal.Calibrator()
>>> cal.observe("act", np.linspace(-1.0, 1.0, 1001, dtype=np.float32))
>>> table = cal.compute("minmax")
>>> table["act"].amax, table["act"].zero_point
(1.0, 0)
"""

from ._version import __version__
from .calibrator import Calibrator
from .errors import EdgecalError, InputError, StateError, UnknownNameError
from .histogram import StreamingHistogram
from .table import CalibrationTable, TensorCalibration

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
