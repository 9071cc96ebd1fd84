"""int8 reference kernels with the exact integer semantics of TFLite / TFLM (default),
their single-rounding build, and ONNX Runtime's float32 requantization.

Every kernel is a private Numba function with a validating public wrapper here;
`tests/naive.py` holds a slow transcription of each, and the tests compare both
and check them bit for bit against the TFLM interpreter and ONNX Runtime.

>>> import numpy as np
>>> from edgecal import reference as ref
>>> rq = ref.op_multipliers("fc", 0.5, [0.01], 0.25)
>>> x = np.array([[10, -20, 30]], np.int8); w = np.array([[100, 50, -127]], np.int8)
>>> ref.fully_connected(x, w, np.array([7], np.int32), rq, in_zp=-1).tolist()   # acc -3780, times 0.02
[[-76]]
"""

from .elementwise import add, add_params
from .geometry import Window
from .linear import conv2d, depthwise_conv2d, fully_connected
from .lut import lut_bounds, lut_dequantize, lut_quantize
from .pool import avg_pool2d, max_pool2d
from .quantization import dequantize, quantize
from .requant import ROUNDINGS, Int32OverflowError, Requant, activation_range, op_multipliers, quantize_multiplier, requantize

__all__ = [
    "ROUNDINGS", "Int32OverflowError", "Requant", "Window", "activation_range", "add", "add_params", "avg_pool2d", "conv2d",
    "depthwise_conv2d", "dequantize", "fully_connected", "lut_bounds", "lut_dequantize", "lut_quantize", "max_pool2d",
    "op_multipliers", "quantize",
    "quantize_multiplier", "requantize",
]
