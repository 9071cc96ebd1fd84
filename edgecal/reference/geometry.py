"""Sliding-window geometry (conv, depthwise, pools): padding and output size.

``padding`` is ``"VALID"``, ``"SAME"`` (TFLite's SAME and ONNX ``SAME_UPPER``:
``out = ceil(in / stride)``, ``floor(total / 2)`` before, the rest after),
``"SAME_LOWER"`` (the extra element before), or explicit ``(top, left, bottom,
right)`` as in ONNX ``pads``. Padded taps are skipped by every kernel (as if the
input there were its zero point, i.e. real 0; pools leave them out of the max and of
the average's count).

>>> w = Window.of((3, 3), stride=(2, 2), padding="SAME")
>>> w.resolve(8, 7)
(4, 4, (0, 1, 1, 1))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from ..errors import InputError

Padding = Union[str, Sequence[int]]


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    t = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(t) != 2 or any(int(a) != a or a < 1 for a in t):
        raise InputError(f"{what} must be one or two positive integers, found {v!r}")
    return int(t[0]), int(t[1])


@dataclass(frozen=True)
class Window:
    """Kernel size, stride, dilation and padding of a 2-D sliding window."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: Padding = "VALID"

    @classmethod
    def of(cls, kernel: int | Sequence[int], stride: int | Sequence[int] = 1, dilation: int | Sequence[int] = 1,
           padding: Padding = "VALID") -> Window:
        """A validated window."""
        if isinstance(padding, str):
            if padding not in ("VALID", "SAME", "SAME_LOWER"):
                raise InputError(f"padding {padding!r}: expected VALID, SAME, SAME_LOWER or (top, left, bottom, right)")
        else:
            padding = tuple(int(p) for p in padding)
            if len(padding) != 4 or min(padding) < 0:
                raise InputError(f"explicit padding must be 4 integers >= 0 (top, left, bottom, right), found {padding!r}")
        return cls(_pair(kernel, "kernel size"), _pair(stride, "stride"), _pair(dilation, "dilation"), padding)

    def _axis(self, size: int, axis: int) -> tuple[int, int, int]:
        k, s, d = self.kernel[axis], self.stride[axis], self.dilation[axis]
        eff = (k - 1) * d + 1
        if isinstance(self.padding, tuple):
            before, after = self.padding[axis], self.padding[axis + 2]
        elif self.padding == "VALID":
            before = after = 0
        else:
            out = -(-size // s)
            total = max((out - 1) * s + eff - size, 0)
            before = total // 2 if self.padding == "SAME" else total - total // 2
            after = total - before
        out = (size + before + after - eff) // s + 1
        if out < 1:
            raise InputError(
                f"window of {k} (dilation {d}) does not fit an input of {size} with padding {before}+{after}; "
                "expected a larger input or more padding"
            )
        return out, before, after

    def resolve(self, height: int, width: int) -> tuple[int, int, tuple[int, int, int, int]]:
        """(out_height, out_width, (top, left, bottom, right)) for an input of this size."""
        oh, top, bottom = self._axis(height, 0)
        ow, left, right = self._axis(width, 1)
        return oh, ow, (top, left, bottom, right)

    def geom(self, height: int, width: int) -> tuple[int, int, np.ndarray]:
        """Output size and the kernels' int64 geometry [sh, sw, dh, dw, top, left, kh, kw]."""
        oh, ow, pads = self.resolve(height, width)
        g = np.array([*self.stride, *self.dilation, pads[0], pads[1], *self.kernel], np.int64)
        return oh, ow, g
