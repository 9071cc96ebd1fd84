"""`RunnerSource`: edgecal's own float ONNX runner as an activation source (no ONNX Runtime needed).

The model is read with `edgecal.model.load_graph` (the ``onnx`` extra) and each batch
runs through `edgecal.model.run_float` in numpy; the sample holds the graph inputs and
every node output, named as in the model. Only the runner's op subset is accepted
(`edgecal.model.OPS`); a model with other ops is refused at `RunnerSource.open` with
the op and the node named. Configuration as `edgecal.sources.model.ModelSource`.
For `ModelSource.file_state` each tensor is observed as soon as it is computed and
freed after its last reader, so memory holds the live tensors of a batch only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .base import register_source
from .model_inputs import ModelInput
from .model import ModelSource

if TYPE_CHECKING:
    from ..model.graph import Graph


@register_source
class RunnerSource(ModelSource):
    """Activations of a float ONNX model computed by edgecal's numpy runner (``kind = "runner"``)."""

    KIND = "runner"

    def __init__(self, graph: Graph | None = None, **config: Any) -> None:
        """``graph``: the model already read from ``config["model"]`` (by a caller that checked its ops)."""
        super().__init__(**config)
        self._given = graph

    def _load(self) -> tuple[list[ModelInput], list[str]]:
        from ..model.graph import load_graph  # the runner (4 MB of modules) only in a daemon that runs a model

        self.graph: Graph = self._given if self._given is not None else load_graph(self.config["model"])
        specs = [ModelInput(name, shape, np.dtype(np.float32)) for name, shape in self.graph.inputs]
        return specs, self.graph.activations()

    def _run(self, feeds: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
        from ..model.float_run import run_float

        try:
            values = run_float(self.graph, feeds)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        return {name: values[name] for name in self.selected}

    def _observe_batch(self, feeds: dict[str, np.ndarray], where: str, observe: Callable[[str, np.ndarray], None]) -> None:
        wanted = set(self.selected)

        from ..model.float_run import run_float

        def selected(name: str, value: np.ndarray) -> None:
            if name in wanted:
                observe(name, value)

        try:
            run_float(self.graph, feeds, keep=(), observe=selected)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
