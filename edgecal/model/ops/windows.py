"""Sliding windows of Conv and the pools: the window of a node, its float view, its output shape."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...reference.geometry import Window

if TYPE_CHECKING:
    from ..graph import Node

Shape = tuple[int, ...]


def window(node: Node, kernel: tuple[int, int]) -> Window:
    """The sliding window of a Conv / pool node from its ONNX attributes."""
    a = node.attrs
    auto = a.get("auto_pad", "NOTSET")
    padding: str | tuple[int, int, int, int] | None = {"SAME_UPPER": "SAME", "SAME_LOWER": "SAME_LOWER",
                                                        "VALID": "VALID"}.get(auto)
    if padding is None:
        pads = list(a.get("pads", [0, 0, 0, 0]))
        padding = (pads[0], pads[1], pads[2], pads[3])
    return Window.of(kernel, tuple(a.get("strides", (1, 1))), tuple(a.get("dilations", (1, 1))), padding)


def windows(x: np.ndarray, win: Window, fill: float) -> np.ndarray:
    """View (n, c, oh, ow, kh, kw) of x padded with ``fill``."""
    oh, ow, (top, left, bottom, right) = win.resolve(x.shape[2], x.shape[3])
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    (kh, kw), (sh, sw), (dh, dw) = win.kernel, win.stride, win.dilation
    view = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]


def windowed_shape(node: Node, x: Shape, kernel: Shape, channels: int) -> tuple[Shape, int]:
    """(output shape, element count of the padded input) of a windowed op on an NCHW input of shape ``x``."""
    oh, ow, (top, left, bottom, right) = window(node, (kernel[0], kernel[1])).resolve(x[2], x[3])
    padded = x[0] * x[1] * (x[2] + top + bottom) * (x[3] + left + right)
    return (x[0], channels, oh, ow), padded


def nhwc(x: np.ndarray) -> np.ndarray:
    """An NCHW tensor as the contiguous NHWC array the reference kernels take."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def nchw(y: np.ndarray) -> np.ndarray:
    """A kernel's NHWC result back in ONNX layout."""
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))
