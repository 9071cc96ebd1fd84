"""`OnnxRuntimeSource`: every intermediate tensor of an ONNX Runtime session (the ``onnxruntime`` extra).

The recipe of ONNX Runtime's own calibrators (``onnxruntime.quantization.calibrate``):
the selected tensors are appended to the graph's outputs, and the session runs with
every graph optimisation off (``ORT_DISABLE_ALL``) so no fusion removes them. Which
tensors are float is read from ONNX shape inference, and checked again on the
session's outputs. The sample holds the float graph inputs and every float node
output (constants excluded), named as in the model, as edgecal's runner names them.
Configuration as `edgecal.sources.model.ModelSource`, plus ``threads`` (intra-op
threads; default 1 so calibration does not take the cores of the application; 0 lets
ONNX Runtime choose).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import Field
from ..errors import InputError, MissingExtraError
from .base import register_source
from .fields import at_least
from .model_inputs import ModelInput
from .model import MODEL_FIELDS, ModelSource

FLOAT_ELEM_TYPES = (1, 10, 11)  # onnx TensorProto FLOAT, FLOAT16, DOUBLE
EXTRA = "install it with: pip install -e '.[onnxruntime]'"


def import_runtime() -> tuple[Any, Any]:
    """(onnxruntime, onnx), or `MissingExtraError` naming the extra."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise MissingExtraError(f"the onnxruntime source needs ONNX Runtime and onnx ({err.name} is missing); "
                                f"{EXTRA}") from err
    return onnxruntime, onnx


def _elem_types(onnx: Any, model: Any) -> dict[str, int]:
    """Element type of every tensor shape inference can tell (0 when unknown)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a help here, not a requirement
        inferred = model
    g = inferred.graph
    return {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]}


@register_source
class OnnxRuntimeSource(ModelSource):
    """Activations of an ONNX model run by ONNX Runtime (``kind = "onnxruntime"``)."""

    KIND = "onnxruntime"
    FIELDS = {**MODEL_FIELDS, "threads": Field(int, 1, at_least(0))}

    def _load(self) -> tuple[list[ModelInput], list[str]]:
        self._ort, onnx = import_runtime()
        path = self.config["model"]
        try:
            self._model = onnx.load(path)
        except Exception as err:  # protobuf raises its own DecodeError types
            raise InputError(f"{path}: not a readable ONNX model ({err})") from err
        g = self._model.graph
        types = _elem_types(onnx, self._model)
        constants = {t.name for t in g.initializer}
        constants |= {o for n in g.node if n.op_type == "Constant" for o in n.output}
        self._input_names = [vi.name for vi in g.input if vi.name not in constants]
        candidates = self._input_names + [o for n in g.node if n.op_type != "Constant" for o in n.output if o]
        float_names = [n for n in dict.fromkeys(candidates) if types.get(n, 0) in (0, *FLOAT_ELEM_TYPES)]
        self._types = types
        specs = [ModelInput(vi.name, tuple(d.dim_value if d.HasField("dim_value") else None
                                           for d in vi.type.tensor_type.shape.dim),
                            _np_dtype(onnx, vi.type.tensor_type.elem_type))
                 for vi in g.input if vi.name not in constants]
        return specs, float_names

    def _prepare(self, selected: list[str]) -> list[str]:
        ort, model = self._ort, self._model
        present = {o.name for o in model.graph.output}
        for name in selected:
            if name not in present and name not in self._input_names:
                model.graph.output.add().name = name  # ORT infers the type (ValueInfo with a name only)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = self.config["threads"]
        try:
            self._session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT's exceptions derive from Exception only
            raise InputError(f"{self.config['model']}: ONNX Runtime cannot load the model ({err})") from err
        out_types = {o.name: o.type for o in self._session.get_outputs()}
        in_types = {i.name: i.type for i in self._session.get_inputs()}
        floats = ("tensor(float)", "tensor(float16)", "tensor(double)")
        kept = [n for n in selected if out_types.get(n, in_types.get(n)) in floats]
        dropped = [n for n in selected if n not in kept]
        if dropped and self.config["tensors"]:
            raise InputError(f"source {self.KIND} tensors: {dropped[0]!r} is not a float tensor; expected float ones")
        self._outputs = [n for n in kept if n not in self._input_names]
        del self._model  # the session holds what it needs
        return kept

    def _run(self, feeds: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(self._outputs, feeds)
        except Exception as err:  # ORT's exceptions derive from Exception only
            raise InputError(f"{where}: ONNX Runtime refused the batch ({str(err).splitlines()[0]})") from err
        out = dict(zip(self._outputs, values))
        return {n: out[n] if n in out else feeds[n] for n in self.selected}



def _np_dtype(onnx: Any, elem_type: int) -> np.dtype:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):  # undefined or exotic: feed float32 and let ORT say
        return np.dtype(np.float32)
