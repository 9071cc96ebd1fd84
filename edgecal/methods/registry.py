"""The registry of calibration methods: name -> pure function of a histogram.

A method takes a `StreamingHistogram` (with at least one non-zero finite value) and
keyword parameters, and returns the clipping threshold ``amax > 0``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import InputError, UnknownNameError
from ..histogram import StreamingHistogram

MethodFn = Callable[..., float]


@dataclass(frozen=True)
class Method:
    """A registered method: its function and the defaults of its parameters."""

    name: str
    fn: MethodFn
    defaults: dict[str, Any]
    summary: str

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``params``; an unknown parameter is an error."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            accepted = ", ".join(sorted(self.defaults)) or "none"
            raise InputError(f"method {self.name!r} has no parameter {unknown[0]!r}; accepted: {accepted}")
        return {**self.defaults, **params}

    def __call__(self, hist: StreamingHistogram, **params: Any) -> float:
        return float(self.fn(hist, **self.resolve(params)))


_METHODS: dict[str, Method] = {}


def register(name: str) -> Callable[[MethodFn], MethodFn]:
    """Decorator: register ``fn(hist, **params) -> amax`` under ``name``."""

    def deco(fn: MethodFn) -> MethodFn:
        sig = inspect.signature(fn)
        defaults = {k: p.default for k, p in list(sig.parameters.items())[1:]}
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _METHODS[name] = Method(name, fn, defaults, summary)
        return fn

    return deco


def get_method(name: str) -> Method:
    """The method registered as ``name``; `UnknownNameError` lists the known ones."""
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownNameError("method", name, list(_METHODS)) from None


def method_names() -> list[str]:
    """Names of every registered method."""
    return sorted(_METHODS)
