"""Any ONNX model in int8 through ONNX Runtime's own quantizer, with edgecal's ranges (the ``onnxruntime`` extra).

`quantize_onnx` writes the QDQ model ``onnxruntime.quantization.quantize_static``
would write if its calibrator had returned the ranges of an edgecal table: the model
is prepared as ``quantize_static`` prepares it (shape inference, opset update, every
op type ORT can quantize, no nodes chosen or excluded, ``extra_options`` passed on)
and ``QDQQuantizer`` runs on ``TensorsData(MinMax, {name: (lo, hi)})``. ORT then
derives scale and zero point from each (lo, hi) by its own rule
(``compute_scale_zp``: the range is widened to hold 0, then
``scale = (hi - lo) / (qmax - qmin)``, ``zp = round(qmin - lo / scale)``) and applies
its own adjustments (a Relu or Clip input takes the range of its output, a Softmax
output gets [0, 1]). A ``tflite`` entry keeps its scale and zero point exactly (its
range spans the 256 levels; the zero point moves by 128 with ``u8`` activations);
a symmetric entry's 254 levels are spread over 255 steps, so its scale becomes
254/255 of the table's, unless ``extra_options={"ActivationSymmetric": True}``.

`edgecal.model.ort_check.check_onnx` measures what the result costs.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write
from ..errors import InputError
from ..table import TensorCalibration
from .graph import MissingExtraError

ACTIVATIONS = ("s8", "u8")
MISSING = ("error", "float")
INSTALL = "pip install -e '.[onnxruntime]'"
FLOAT_TYPES = (1, 10)  # onnx TensorProto FLOAT, FLOAT16: the tensors ORT's calibrators give a range


def import_ort() -> tuple[Any, Any]:
    """(onnxruntime, onnx) with ``onnxruntime.quantization`` loaded, or `MissingExtraError` naming the extra."""
    try:
        import onnx
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401  (needs onnx; ORT alone does not pull it in)
    except ImportError as err:
        raise MissingExtraError(
            f"ONNX Runtime quantization needs the onnxruntime extra (onnxruntime and onnx; {err.name} is missing); "
            f"install it in the edgecal checkout with: {INSTALL} (./scripts/test installs it too)") from err
    return onnxruntime, onnx


def table_ranges(table: Mapping[str, TensorCalibration]) -> dict[str, tuple[float, float]]:
    """The real range each entry represents: ``((qmin - zp) * scale, (qmax - zp) * scale)``.

    >>> from edgecal.table import CalibrationTable
    >>> t = CalibrationTable([TensorCalibration.symmetric("a", 1.27), TensorCalibration.unsigned("r", 2.55)])
    >>> {name: (round(lo, 6), round(hi, 6)) for name, (lo, hi) in table_ranges(t).items()}
    {'a': (-1.27, 1.27), 'r': (0.0, 2.55)}
    """
    return {e.name: ((e.qmin - e.zero_point) * e.scale, (e.qmax - e.zero_point) * e.scale) for e in table.values()}


@dataclass(frozen=True)
class QuantizeSummary:
    """What `quantize_onnx` wrote: ranges used, tensors and nodes left in float, QuantizeLinear count."""

    path: str
    activations: str
    per_channel: bool
    ranges: int
    left_float: list[str]
    excluded_nodes: list[str]
    quantize_nodes: int


def _choice(what: str, value: str, known: Sequence[str]) -> None:
    if value not in known:
        raise InputError(f"{what} {value!r} is not known; expected one of: {', '.join(known)}")


def error_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _supported(fn: Any, **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments ``fn`` takes (ORT's signatures changed between 1.16 and now)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def _prepared(model_path: str | os.PathLike[str], activation_type: Any) -> Any:
    """The model as ``quantize_static`` prepares it: shapes inferred, opset updated for the types."""
    from onnxruntime.quantization import quant_utils
    from onnxruntime.quantization.quant_utils import QuantType, load_model_with_shape_infer

    path = Path(model_path)
    if not path.is_file():
        raise InputError(f"cannot read model {path}: no such file; expected an ONNX model file")
    try:
        model = load_model_with_shape_infer(path)
    except Exception as err:  # protobuf and onnx raise their own types
        raise InputError(f"{path}: not a readable ONNX model ({error_line(err)})") from err
    if not model.graph.node:  # protobuf parses many non-ONNX files as an empty model
        raise InputError(f"{path}: not an ONNX model (found no graph nodes); expected a float ONNX model")
    update = getattr(quant_utils, "update_opset_version", None)  # ORT < 1.17 left the opset as it was
    if update is None:
        return model
    try:
        return update(model, **_supported(update, weight_type=QuantType.QInt8, activation_type=activation_type))
    except ValueError as err:  # e.g. no ai.onnx opset
        raise InputError(f"{path}: ONNX Runtime cannot quantize the model ({error_line(err)})") from err


def quantizable_ops() -> list[str]:
    """Every op type ORT's QDQ and QLinear quantizers handle (``quantize_static``'s default)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def quantized_tensors(model: Any, ops: Iterable[str]) -> list[str]:
    """Tensors ORT's calibrator would give a range, in graph order: float inputs/outputs of the nodes of ``ops``."""
    g, wanted = model.graph, set(ops)
    infos = {vi.name: vi for vi in (*g.value_info, *g.output, *g.input)}
    constants = {t.name for t in g.initializer}
    found: dict[str, None] = {}
    for node in g.node:
        if node.op_type not in wanted:
            continue
        for name in (*node.input, *node.output):
            vi = infos.get(name)
            if (vi is not None and vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type in FLOAT_TYPES
                    and name not in constants):
                found[name] = None
    return list(found)


def _constant_ranges(model: Any) -> dict[str, tuple[float, float]]:
    """(min, max) of every float Constant node output: the range ORT's MinMax calibrator would find."""
    from onnx import numpy_helper

    out = {}
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and "value" in attrs:
            value = numpy_helper.to_array(attrs["value"].t)
            if value.dtype.kind == "f" and value.size:
                out[node.output[0]] = (float(value.min()), float(value.max()))
    return out


def _missing_error(absent: list[str], wanted: list[str]) -> InputError:
    shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
    return InputError(f"the table has no entry for {len(absent)} of the {len(wanted)} tensors ONNX Runtime quantizes "
                      f"in this model ({shown}); expected one for each (calibrate this model, or leave them in float)")


def _excluded_nodes(model: Any, absent: list[str]) -> list[str]:
    """Names of the nodes reading or writing a tensor without range (unnamed nodes get a name first)."""
    missing, taken = set(absent), {n.name for n in model.graph.node}
    out = []
    for k, node in enumerate(model.graph.node):
        if missing.intersection(node.input) or missing.intersection(node.output):
            if not node.name:
                node.name = next(f"{node.op_type}_{k}_{i}" for i in range(len(taken) + 1)
                                 if f"{node.op_type}_{k}_{i}" not in taken)
                taken.add(node.name)
            out.append(node.name)
    return out


def _quantizer(model: Any, ranges: Mapping[str, tuple[float, float]], activations: str, per_channel: bool,
               excluded: list[str], ops: list[str], extra_options: Mapping[str, Any]) -> Any:
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import QuantizationMode, QuantType

    data = {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for name, (lo, hi) in ranges.items()}
    kwargs = dict(model=model, per_channel=per_channel, reduce_range=False, mode=QuantizationMode.QLinearOps,
                  static=True, weight_qType=QuantType.QInt8,
                  activation_qType=QuantType.QInt8 if activations == "s8" else QuantType.QUInt8,
                  tensors_range=TensorsData(CalibrationMethod.MinMax, data), nodes_to_quantize=[],
                  nodes_to_exclude=excluded, op_types_to_quantize=ops, extra_options=dict(extra_options))
    return QDQQuantizer(**_supported(QDQQuantizer.__init__, **kwargs))  # mode/static: ORT < 1.17


def _scheme_options(table: Mapping[str, TensorCalibration], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """ORT options that keep a symmetric table's meaning (the caller's own options win).

    ORT removes a Relu or Clip whose output it quantizes asymmetrically, trusting the
    range to start at 0 so that QuantizeLinear's clamp does the Relu's work. A
    symmetric entry of a never-negative tensor spans [-amax, amax]: without the Relu,
    negative values would pass (measured: PP-OCR's classifier fell to 46 % agreement).
    So tables with symmetric entries keep those activations
    (``QDQKeepRemovableActivations``), and an all-symmetric table is quantized
    symmetrically (``ActivationSymmetric``: zero point 0, scale amax / 127, as written).
    """
    options = dict(extra or {})
    schemes = {e.scheme for e in table.values()}
    if "symmetric" in schemes:
        options.setdefault("QDQKeepRemovableActivations", True)
        if schemes == {"symmetric"}:
            options.setdefault("ActivationSymmetric", True)
    return options


def quantize_onnx(model_path: str | os.PathLike[str], out_path: str | os.PathLike[str],
                  table: Mapping[str, TensorCalibration], activations: str = "s8", per_channel: bool = True,
                  missing: str = "error", extra_options: Mapping[str, Any] | None = None) -> QuantizeSummary:
    """Write the QDQ int8 model ONNX Runtime makes of ``model_path`` with the ranges of ``table``.

    Parameters
    ----------
    model_path, out_path : path
        The float ONNX model, and where the int8 model goes (written atomically).
    table : CalibrationTable
        Ranges of the model's tensors (`table_ranges`); entries for other tensors are ignored.
    activations : {"s8", "u8"}
        Activation type (int8 or uint8); weights are always int8, symmetric.
    per_channel : bool
        One weight scale per output channel (default) or one per tensor.
    missing : {"error", "float"}
        The model's tensors ORT quantizes (float inputs and outputs of its quantizable
        nodes, initializers aside) that the table lacks: ``"error"`` raises `InputError`
        naming how many and the first few; ``"float"`` leaves every node reading or
        writing one of them in float. A float Constant output needs no entry: its range
        is its (min, max), as ORT's MinMax calibrator would find.
    extra_options : mapping, optional
        Passed to ORT's quantizer as ``quantize_static``'s ``extra_options``.
    """
    _choice("activations", activations, ACTIVATIONS)
    _choice("missing", missing, MISSING)
    import_ort()
    from onnxruntime.quantization.quant_utils import QuantType

    model = _prepared(model_path, QuantType.QInt8 if activations == "s8" else QuantType.QUInt8)
    ops = quantizable_ops()
    wanted = quantized_tensors(model, ops)
    known = {**_constant_ranges(model), **table_ranges(table)}
    absent = [name for name in wanted if name not in known]
    if absent and missing == "error":
        raise _missing_error(absent, wanted)
    excluded = _excluded_nodes(model, absent)
    ranges = {name: known[name] for name in wanted if name in known}
    try:
        options = _scheme_options(table, extra_options)
        quantizer = _quantizer(model, ranges, activations, per_channel, excluded, ops, options)
        quantizer.quantize_model()
        data = quantizer.model.model.SerializeToString()
    except Exception as err:  # ORT's quantizer raises ValueError, KeyError, AssertionError ...
        raise InputError(f"{model_path}: ONNX Runtime cannot quantize the model ({error_line(err)})") from err
    try:
        atomic_write(out_path, data)
    except IsADirectoryError as err:
        raise InputError(f"cannot write {out_path}: it is a folder; expected a file path") from err
    except OSError as err:
        raise InputError(f"cannot write {out_path}: {err.strerror or err}") from err
    q_nodes = sum(n.op_type == "QuantizeLinear" for n in quantizer.model.model.graph.node)
    return QuantizeSummary(str(out_path), activations, per_channel, len(ranges), absent, excluded, q_nodes)

