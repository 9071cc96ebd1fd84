"""`--json`: one document schema for every command that reports.

Every document is one JSON object on stdout with ``"edgecal"`` (the version that
wrote it), ``"command"`` (the subcommand) and ``"ok"`` (true when the command did
what it was asked), plus the command's own keys. Tensors are a list of objects whose
keys are the field names of the table (`TensorCalibration.to_dict`) or of the state
(`TensorStats`, plus ``name``, ``bins`` and ``range``), so a script reads the same
names the Python API uses. Non-finite floats (an infinite SQNR, an empty tensor's
range) are the strings ``"inf"``, ``"-inf"`` and ``"nan"``: strict JSON has no
such numbers. Errors are not documents: they stay the one ``edgecal: error:`` line
on stderr with exit code 2.

>>> import json
>>> doc = json.loads(dumps(document("merge", out="m.ecst", worst=float("-inf"))))
>>> doc["command"], doc["ok"], doc["worst"]
('merge', True, '-inf')
>>> import numpy as np
>>> dumps({"n": np.int64(3), "x": np.float32(np.inf)}).split()
['{', '"n":', '3,', '"x":', '"inf"', '}']
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from .._version import __version__
from ..calibrator import Calibrator
from ..table import CalibrationTable


def document(command: str, ok: bool = True, **fields: Any) -> dict[str, Any]:
    """The common head (``edgecal``, ``command``, ``ok``) followed by ``fields``."""
    return {"edgecal": __version__, "command": command, "ok": ok, **fields}


def _finite(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and every non-finite float replaced by its name, recursively."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        value = value.item()  # numpy scalar (a method parameter, a statistic) -> int / float / bool
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(doc: dict[str, Any]) -> str:
    """Strict JSON text of ``doc`` (indented, keys in the order they were given)."""
    return json.dumps(_finite(doc), indent=2, allow_nan=False)


def emit(command: str, ok: bool = True, **fields: Any) -> None:
    """Print the document of ``command`` on stdout."""
    print(dumps(document(command, ok, **fields)))


def table_fields(table: CalibrationTable) -> dict[str, Any]:
    """A table's metadata and its tensors, under the names of the table's JSON format."""
    return {**table.meta(), "tensors": [e.to_dict() for e in table.values()]}


def state_tensors(cal: Calibrator) -> list[dict[str, Any]]:
    """Per tensor of a state: ``name``, the `TensorStats` fields, the histogram's ``bins`` and ``range``."""
    out = []
    for name in cal.names():
        h = cal.histogram(name)
        out.append({"name": name, **asdict(cal.stats(name)), "bins": cal.bins, "range": h.range})
    return out


def state_fields(cal: Calibrator) -> dict[str, Any]:
    """A state's bins, consumed-input count, model hash and tensors."""
    return {"bins": cal.bins, "consumed": len(cal.consumed), "model_hash": cal.model_hash,
            "tensors": state_tensors(cal)}
