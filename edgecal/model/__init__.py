"""Float ONNX models: read, run in float and in int8 with a table, and check what the table costs.

Reading ONNX files needs the ``onnx`` package (``pip install -e '.[onnx]'``); the
runners themselves use numpy and the kernels in `edgecal.reference`, within a
`MemoryBudget`; external data is read from the model's own folder only. Any other ONNX
model goes through ONNX Runtime (the ``onnxruntime`` extra): `quantize_onnx` makes its
int8 model with a table's ranges, `check_onnx` compares the two.
"""

from .activations import observe_model
from .budget import DEFAULT_BUDGET, MemoryBudget
from .check import CheckReport, TensorReport, check_model, sqnr_db
from .float_run import run_float
from .graph import OPS, Graph, MissingExtraError, Node, from_onnx, load_graph
from .initializers import MalformedModelError, UnsafeModelError
from .int8_run import Int8Model, QParams, quantize_weights
from .ort_check import OnnxCheckReport, OutputReport, QuantizedTensorReport, check_onnx
from .ort_quant import QuantizeSummary, quantize_onnx, table_ranges

__all__ = [
    "DEFAULT_BUDGET", "OPS", "CheckReport", "Graph", "Int8Model", "MalformedModelError", "MemoryBudget",
    "MissingExtraError", "Node", "OnnxCheckReport", "OutputReport", "QParams", "QuantizeSummary",
    "QuantizedTensorReport", "TensorReport", "UnsafeModelError", "check_model", "check_onnx",
    "from_onnx", "load_graph", "observe_model", "quantize_onnx", "quantize_weights", "run_float", "sqnr_db",
    "table_ranges",
]
