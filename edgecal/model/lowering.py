"""The pieces an op's int8 lowering builds from: `QParams`, `Step`, and weight / bias quantization.

Weights are quantized symmetric per output channel to [-127, 127] (scale max|w| / 127,
round half away from zero) and biases to int32 with scale ``s_in * s_w[c]``, as the
TFLite converter does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from .. import reference as ref
from ..errors import InputError

if TYPE_CHECKING:
    from .graph import Node

INT32_MAX = 2**31 - 1

__all__ = ["INT32_MAX", "QParams", "Step", "quantize_bias", "quantize_weights"]


@dataclass(frozen=True)
class QParams:
    """Scale (a float32 value) and zero point of an int8 tensor."""

    scale: float
    zero_point: int

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ref.dequantize(q, self.scale, self.zero_point)


@dataclass
class Step:
    """One int8 operation: the nodes it covers, its activation inputs and output, a runner."""

    nodes: list[Node]
    inputs: tuple[str, ...]
    output: str
    run: Callable[..., np.ndarray] = field(repr=False)


def quantize_weights(w: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 weights in [-127, 127] and their float32 scales (max |w| / 127)."""
    wf = np.asarray(w, dtype=np.float32)
    if not np.isfinite(wf).all():
        raise InputError("weights hold NaN or Inf; expected finite values")
    moved = np.moveaxis(wf, axis, 0).reshape(wf.shape[axis], -1)
    amax = np.abs(moved).max(axis=1) if moved.size else np.zeros(wf.shape[axis], np.float32)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.stack([ref.quantize(row, s) for row, s in zip(moved, scale)]).clip(-127, 127)
    return np.moveaxis(q.reshape(np.moveaxis(wf, axis, 0).shape), 0, axis), scale


def quantize_bias(b: np.ndarray | None, s_in: float, s_w: np.ndarray, where: str) -> np.ndarray | None:
    """int32 bias at scale ``s_in * s_w`` per channel; `InputError` naming ``where`` if it does not fit."""
    if b is None:
        return None
    bias_scale = (np.float32(s_in) * s_w).astype(np.float64)
    q = np.round(np.broadcast_to(np.asarray(b, np.float64).reshape(-1), s_w.shape) / bias_scale)
    if np.abs(q).max(initial=0) > INT32_MAX:
        raise InputError(f"{where}: bias does not fit int32 at scale s_in * s_w; expected a larger input scale")
    return q.astype(np.int32)
