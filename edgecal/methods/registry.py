"""The registry of calibration methods: name -> pure function of a histogram.

A method takes a `StreamingHistogram` (with at least one non-zero finite value) and
keyword parameters, and returns the clipping threshold ``amax > 0`` of the symmetric
int8 grid. For the asymmetric scheme (TFLite / ONNX Runtime activations: 256 levels
and a zero point) a method returns a range ``(lo, hi)`` with ``lo <= 0 <= hi``:
either from its own ``fit`` function (registered beside it), or, for methods that
only know thresholds, by running the method on each sign of the tensor separately
(``hi`` from the positive values, ``lo`` from the negative ones; a sign with no
values gets 0).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import InputError, UnknownNameError
from ..names import DEFAULT_METHOD
from ..histogram import StreamingHistogram
from ..plugins import load_group

MethodFn = Callable[..., float]
FitFn = Callable[..., "tuple[float, float]"]



@dataclass(frozen=True)
class Method:
    """A registered method: its function, the defaults of its parameters, and its range fit if any."""

    name: str
    fn: MethodFn
    defaults: dict[str, Any]
    summary: str
    fit: FitFn | None = None
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    auto_candidate: bool = True  # `auto` tries it when no method list is given
    #: parameters the asymmetric scheme uses for a tensor with no negative values, unless the
    #: caller set them (kl: 256 levels, since all of int8 then lies on [0, amax])
    one_sign: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``params``; an unknown parameter or one of the wrong type is an error."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            accepted = ", ".join(sorted(self.defaults)) or "none"
            raise InputError(f"method {self.name!r} has no parameter {unknown[0]!r}; accepted: {accepted}")
        for key, value in params.items():
            _check_type(self.name, key, value, self.defaults[key])
            if key in self.bounds and not self.bounds[key][0] <= value <= self.bounds[key][1]:
                lo, hi = self.bounds[key]
                raise InputError(f"method {self.name!r} parameter {key!r} must be in [{lo:g}, {hi:g}], found {value!r}")
        return {**self.defaults, **params}

    def __call__(self, hist: StreamingHistogram, **params: Any) -> float:
        value = self.fn(hist, **self.resolve(params))
        return value if isinstance(value, Traced) else float(value)

    def fit_range(self, hist: StreamingHistogram, **params: Any) -> tuple[float, float]:
        """``(lo, hi)`` for the asymmetric scheme, ``lo <= 0 <= hi``."""
        resolved = self.resolve(params)
        if self.fit is not None:
            lo, hi = self.fit(hist, **resolved)
            return min(_kept(lo), 0.0), max(_kept(hi), 0.0)
        hi = _kept(self.fn(SignView(hist, positive=True), **resolved)) if (hist.max or 0.0) > 0.0 else 0.0
        lo = -_kept(self.fn(SignView(hist, positive=False), **resolved)) if (hist.min or 0.0) < 0.0 else 0.0
        return min(lo, 0.0), max(hi, 0.0)


def _kept(value: Any) -> float:
    """``value`` as a float, its record kept when it has one."""
    return value if isinstance(value, Traced) else float(value)


def _check_type(method: str, key: str, value: Any, default: Any) -> None:
    """A parameter must have its default's kind: bool for bool, int for int, a real number for float."""
    if isinstance(default, bool):
        ok = isinstance(value, (bool, np.bool_))
    elif isinstance(default, int):
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    elif isinstance(default, float):
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    else:
        ok = True
    if not ok:
        raise InputError(f"method {method!r} parameter {key!r} must be {type(default).__name__}, "
                         f"found {type(value).__name__} {value!r}")


class SignView:
    """The values of one sign of a histogram, as a method sees a histogram of |x|.

    ``zeros`` are the tensor's exact zeros (they belong to both signs), ``amax`` the
    sign's extreme magnitude.
    """

    def __init__(self, hist: StreamingHistogram, positive: bool) -> None:
        self._hist = hist
        self._positive = positive
        self.bins = hist.bins
        self.bin_width = hist.bin_width
        self.zeros = hist.zeros
        extreme = hist.max if positive else hist.min
        self.amax = abs(extreme) if extreme is not None and (extreme > 0) == positive and extreme != 0 else 0.0
        self.min = 0.0
        self.max = self.amax

    def abs_counts(self) -> np.ndarray:
        return self._hist.positive_counts() if self._positive else self._hist.negative_counts()

    def occupied_abs_counts(self) -> np.ndarray:
        counts = self.abs_counts()
        nonzero = np.flatnonzero(counts)
        return counts[: nonzero[-1] + 1] if nonzero.size else counts[:0]

    def positive_counts(self) -> np.ndarray:
        return self.abs_counts()

    def negative_counts(self) -> np.ndarray:
        return np.zeros(self.bins, dtype=np.int64)


class Traced(float):
    """A threshold carrying its optimiser's record (iterations, steps, objective values).

    A method may return one instead of a plain float; `Calibrator.compute` stores the
    record in the entry's ``params["trace"]`` and, when ``lut`` is set (a codebook's
    levels), those levels in the entry's ``lut``. It is a float everywhere else.
    """

    trace: dict[str, Any]
    lut: tuple[float, ...] | None = None

    def __new__(cls, value: float, trace: Mapping[str, Any]) -> Traced:
        obj = super().__new__(cls, value)
        obj.trace = dict(trace)
        return obj

    def __neg__(self) -> Traced:
        out = Traced(-float(self), self.trace)
        out.lut = self.lut
        return out


def traced_params(params: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    """``params`` plus ``trace``: the record of the one traced value (or the one record all of them share),
    else each value's record by name (``lo``, ``hi``)."""
    traces = {k: v.trace for k, v in values.items() if isinstance(v, Traced)}
    if not traces:
        return dict(params)
    records = list(traces.values())
    one = len(values) == 1 or (len(traces) == len(values) and all(r == records[0] for r in records))
    return {**params, "trace": records[0] if one else traces}


_METHODS: dict[str, Method] = {}


def register(name: str, fit: FitFn | None = None, bounds: Mapping[str, tuple[float, float]] | None = None,
             auto_candidate: bool = True, one_sign: Mapping[str, Any] | None = None) -> Callable[[MethodFn], MethodFn]:
    """Decorator: register ``fn(hist, **params) -> amax`` under ``name``.

    ``fit(hist, **params) -> (lo, hi)``, when given, is the method's own range for
    the asymmetric scheme; it takes the same parameters as ``fn``. ``bounds`` maps a
    numeric parameter to its accepted ``(min, max)``: `Method.resolve` refuses values
    outside before any work starts (a huge level count would run for hours).
    ``auto_candidate=False`` keeps the method out of `auto`'s default list (slow
    methods, tool-compatibility modes and codebooks, which `auto`'s uniform-grid
    error cannot judge); `auto` still tries it when named in its ``methods``.
    ``one_sign`` overrides parameters for a never-negative tensor in the asymmetric
    scheme (see `Method.one_sign`). A module that calls this on import is a method
    plugin as it stands: name it in the ``edgecal.methods`` entry-point group.
    """

    def deco(fn: MethodFn) -> MethodFn:
        sig = inspect.signature(fn)
        defaults = {k: p.default for k, p in list(sig.parameters.items())[1:]}
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        unknown = sorted(set(one_sign or {}) - set(defaults))
        if unknown:
            raise TypeError(f"method {name!r}: one_sign names {unknown[0]!r}, which is not a parameter")
        _METHODS[name] = Method(name, fn, defaults, summary, fit, dict(bounds or {}), auto_candidate,
                                dict(one_sign or {}))
        return fn

    return deco


def _register_plugin(name: str, obj: Any) -> None:
    """An ``edgecal.methods`` entry point: a module that registered itself, or a method function."""
    if inspect.ismodule(obj):
        return
    if not callable(obj):
        raise TypeError(f"expected a module or a method function, found {type(obj).__name__}")
    if name not in _METHODS:
        register(name)(obj)


def _plugins() -> None:
    load_group("edgecal.methods", _register_plugin)


def get_method(name: str) -> Method:
    """The method registered as ``name``; `UnknownNameError` lists the known ones."""
    _plugins()
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownNameError("method", name, list(_METHODS)) from None


def method_names() -> list[str]:
    """Names of every registered method."""
    _plugins()
    return sorted(_METHODS)


def demo_methods() -> list[str]:
    """The default first, then every other quick uniform grid `auto` chooses among: the demos' columns.

    `auto` itself and the methods registered with ``auto_candidate=False`` (slow ones,
    tool-compatibility modes, codebooks) stay out of the side-by-side demos.
    """
    return [DEFAULT_METHOD, *(m for m in method_names()
                              if m not in (DEFAULT_METHOD, "auto") and get_method(m).auto_candidate)]
