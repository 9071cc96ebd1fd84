"""`LiteRTSource`: every intermediate tensor of a LiteRT (TFLite) interpreter (the ``litert`` extra).

The interpreter is built with ``experimental_preserve_all_tensors=True`` (without it
the arena reuses intermediate buffers and `get_tensor` fails or returns another
tensor's bytes) and with the builtin kernels only, without the default delegates, so
every op runs in LiteRT's own kernels and leaves its output readable. Preserving all
tensors keeps every intermediate resident: the arena grows to the sum of all
activations, the price of reading them.

The sample holds the float tensors of the primary subgraph's inputs and of every
operator output, named by the model (a repeated name gets ``#<index>`` appended). A
batch whose shape differs from the model's input shape is fed after
``resize_tensor_input``. Integer (quantized) tensors are left out: this source
calibrates float models. Configuration as `edgecal.sources.model.ModelSource`, plus
``threads`` (default 1; 0 lets LiteRT choose). ``ai_edge_litert`` is preferred; the
legacy ``tflite_runtime`` is used when it is the one installed.
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

FLOATS = (np.float16, np.float32, np.float64)


def import_interpreter() -> tuple[Any, Any]:
    """(Interpreter, OpResolverType), or `MissingExtraError` naming the extra."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as err:
        try:
            from tflite_runtime.interpreter import Interpreter, OpResolverType
        except ImportError:
            raise MissingExtraError("the litert source needs LiteRT; install it with: "
                                    "pip install -e '.[litert]'") from err
    return Interpreter, OpResolverType


@register_source
class LiteRTSource(ModelSource):
    """Activations of a float .tflite model run by LiteRT (``kind = "litert"``)."""

    KIND = "litert"
    FIELDS = {**MODEL_FIELDS, "threads": Field(int, 1, at_least(0))}

    def _load(self) -> tuple[list[ModelInput], list[str]]:
        interpreter_cls, resolver = import_interpreter()
        path = self.config["model"]
        try:
            it = interpreter_cls(model_path=path, num_threads=self.config["threads"] or None,
                                 experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                                 experimental_preserve_all_tensors=True)
            it.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise InputError(f"{path}: LiteRT cannot load the model ({str(err).splitlines()[0]})") from err
        self._it = it
        details = {d["index"]: d for d in it.get_tensor_details()}
        self._inputs = it.get_input_details()
        self._shapes = {d["name"]: tuple(int(s) for s in d["shape"]) for d in self._inputs}
        order = [d["index"] for d in self._inputs] + [int(i) for op in it._get_ops_details() for i in op["outputs"]]
        self._index: dict[str, int] = {}
        for i in dict.fromkeys(i for i in order if i >= 0):
            if details[i]["dtype"] in FLOATS:
                name = details[i]["name"] or f"tensor{i}"
                self._index[name if name not in self._index else f"{name}#{i}"] = i
        specs = [ModelInput(d["name"], tuple(int(s) if s >= 0 else None for s in d["shape_signature"]),
                            np.dtype(d["dtype"])) for d in self._inputs]
        return specs, list(self._index)

    def _run(self, feeds: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
        it = self._it
        try:
            resized = False
            for d in self._inputs:
                x = feeds[d["name"]]
                if self._shapes[d["name"]] != x.shape:
                    it.resize_tensor_input(d["index"], list(x.shape), strict=False)
                    self._shapes[d["name"]], resized = x.shape, True
            if resized:
                it.allocate_tensors()
            for d in self._inputs:
                it.set_tensor(d["index"], np.ascontiguousarray(feeds[d["name"]]))
            it.invoke()
            return {name: it.get_tensor(self._index[name]) for name in self.selected}
        except (ValueError, RuntimeError) as err:
            raise InputError(f"{where}: LiteRT refused the batch ({str(err).splitlines()[0]})") from err
