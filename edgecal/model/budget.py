"""`MemoryBudget`: how much memory edgecal's model runners may use, set by configuration, never by the model.

A model file of a few hundred bytes can ask for gigabytes (a Conv with huge pads,
thousands of chained ops each keeping its output). The runners work out every
tensor's shape from the input shapes before computing anything (`edgecal.model.shapes`)
and refuse, with one line, a tensor or a total above the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

GIB = 1 << 30


@dataclass(frozen=True)
class MemoryBudget:
    """Largest single tensor (``tensor_bytes``) and largest sum of live tensors (``total_bytes``)."""

    tensor_bytes: int = GIB
    total_bytes: int = 2 * GIB

    def __post_init__(self) -> None:
        for key in ("tensor_bytes", "total_bytes"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"memory budget {key}={v!r}; expected a positive integer number of bytes")


DEFAULT_BUDGET = MemoryBudget()
