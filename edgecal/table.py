"""`CalibrationTable`: the per-tensor int8 parameters edgecal produces.

A table maps tensor names to `TensorCalibration` entries (threshold ``amax``,
``scale``, ``zero_point``, ``dtype`` and quantization ``scheme``, the method that
chose them with its parameters, provenance counters and flags) and carries
table-level metadata: schema version, edgecal version, model hash when known, and
creation time. Tables are immutable values; they are written and read through the
format registry in `edgecal.formats`.

>>> t = CalibrationTable([TensorCalibration.symmetric("x", 2.54)], created="2026-01-01T00:00:00Z")
>>> t["x"].scale, t["x"].zero_point, t["x"].dtype
(0.02, 0, 'int8')
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ._version import __version__
from .errors import InputError

SCHEMA = 1
# scheme -> (dtype, qmin, qmax). "tflite": asymmetric int8 activations as TFLite and ONNX Runtime use them,
# real = scale * (q - zero_point) with any zero point in [-128, 127]; Calibrator.compute(scheme="tflite") fits
# a range [lo, hi] (lo <= 0 <= hi) per tensor: never-negative tensors get zero point -128 and scale amax / 255.
SCHEMES = {"symmetric": ("int8", -127, 127), "tflite": ("int8", -128, 127)}
FLAGS = ("all_zero", "constant", "nonfinite", "fallback", "clipped_heavy")
CLIPPED_HEAVY = 0.01  # flag an entry whose range may leave out more than this fraction of the finite values
ALL_ZERO_AMAX = 1.0  # any scale represents an all-zero tensor exactly; 1/127 is the documented choice


@dataclass(frozen=True)
class TensorStats:
    """Provenance of one tensor: what the histogram saw."""

    samples: int = 0
    count: int = 0
    zeros: int = 0
    nans: int = 0
    posinf: int = 0
    neginf: int = 0
    min: float | None = None
    max: float | None = None

    @property
    def nonfinite(self) -> int:
        return self.nans + self.posinf + self.neginf


@dataclass(frozen=True)
class TensorCalibration:
    """Quantization parameters of one tensor: real = scale * (q - zero_point)."""

    name: str
    amax: float
    scale: float
    zero_point: int = 0
    dtype: str = "int8"
    scheme: str = "symmetric"
    method: str = "manual"
    params: Mapping[str, Any] = field(default_factory=dict)
    stats: TensorStats = field(default_factory=TensorStats)
    flags: tuple[str, ...] = ()
    lut: tuple[float, ...] | None = None  # a codebook: 2**k ascending levels, nearest-level quantization

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "\n" in self.name:
            raise InputError(f"tensor name must be a non-empty single-line string, found {self.name!r}")
        if self.scheme not in SCHEMES:
            raise InputError(f"tensor {self.name!r}: unknown scheme {self.scheme!r}; known: {', '.join(SCHEMES)}")
        for label, value in (("amax", self.amax), ("scale", self.scale)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"tensor {self.name!r}: {label} must be a finite number > 0, found {value!r}")
        dtype, qmin, qmax = SCHEMES[self.scheme]
        if self.dtype != dtype or not qmin <= self.zero_point <= qmax:
            raise InputError(
                f"tensor {self.name!r}: scheme {self.scheme} needs dtype {dtype} and a zero point in "
                f"[{qmin}, {qmax}], found {self.dtype} with zero point {self.zero_point}"
            )
        unknown = [f for f in self.flags if f not in FLAGS]
        if unknown:
            raise InputError(f"tensor {self.name!r}: unknown flag {unknown[0]!r}; known: {', '.join(FLAGS)}")
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "flags", tuple(f for f in FLAGS if f in self.flags))  # canonical order
        if self.lut is not None:
            object.__setattr__(self, "lut", check_lut(self.name, self.lut))

    @classmethod
    def symmetric(cls, name: str, amax: float, **fields: Any) -> TensorCalibration:
        """Symmetric int8 entry: scale = amax / 127, zero point 0."""
        amax = float(amax)
        return cls(name=name, amax=amax, scale=amax / 127.0, zero_point=0, dtype="int8", scheme="symmetric", **fields)

    @classmethod
    def unsigned(cls, name: str, amax: float, **fields: Any) -> TensorCalibration:
        """TFLite-scheme entry of a never-negative tensor: zero point -128, scale = amax / 255 (256 levels on [0, amax])."""
        amax = float(amax)
        return cls(name=name, amax=amax, scale=amax / 255.0, zero_point=-128, dtype="int8", scheme="tflite", **fields)

    @classmethod
    def asymmetric(cls, name: str, lo: float, hi: float, **fields: Any) -> TensorCalibration:
        """TFLite-scheme entry covering ``[lo, hi]`` (``lo <= 0 <= hi``, ``lo < hi``) with 256 levels.

        scale = (hi - lo) / 255 and zero point = round(-128 - lo / scale), as TFLite's
        converter and ONNX Runtime's quantizer compute them (0 is then exact); amax is
        the largest |real value| the entry represents.
        """
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise InputError(f"tensor {name!r}: range must be finite with lo < hi, found [{lo!r}, {hi!r}]")
        scale = (hi - lo) / 255.0
        zero_point = int(min(max(round(-128.0 - lo / scale), -128), 127))
        amax = max(128 + zero_point, 127 - zero_point) * scale
        return cls(name=name, amax=amax, scale=scale, zero_point=zero_point, dtype="int8", scheme="tflite", **fields)

    @property
    def range(self) -> tuple[float, float]:
        """The real values the entry represents: ``((qmin - zp) * scale, (qmax - zp) * scale)``."""
        return (self.qmin - self.zero_point) * self.scale, (self.qmax - self.zero_point) * self.scale

    def as_symmetric(self) -> TensorCalibration:
        """This entry for formats that hold only symmetric int8 scales.

        Rule: a ``tflite`` entry becomes the symmetric entry whose amax is the largest
        |real value| it represents, ``max(|qmin - zp|, |qmax - zp|) * scale`` (for a
        never-negative tensor with zero point -128 that is its amax: the range is kept,
        the resolution halves). Symmetric entries are returned unchanged; other schemes
        raise `InputError`.
        """
        if self.scheme == "symmetric":
            return self
        if self.scheme != "tflite":
            raise InputError(f"tensor {self.name!r}: scheme {self.scheme!r} has no conversion to symmetric int8")
        amax = max(abs(self.qmin - self.zero_point), abs(self.qmax - self.zero_point)) * self.scale
        return TensorCalibration.symmetric(self.name, amax, method=self.method, params=self.params, stats=self.stats,
                                           flags=self.flags)

    def check_uniform(self, fmt: str) -> None:
        """`InputError` if this entry is a codebook, which format ``fmt`` (uniform scales only) cannot hold."""
        if self.lut is not None:
            raise InputError(f"tensor {self.name!r} has a codebook ({len(self.lut)}-level LUT); {fmt} holds "
                             "uniform int8 scales only; write json, ecal or c")

    @property
    def qmin(self) -> int:
        return SCHEMES[self.scheme][1]

    @property
    def qmax(self) -> int:
        return SCHEMES[self.scheme][2]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = list(self.flags)
        d["params"] = dict(self.params)
        if self.lut is None:
            del d["lut"]  # uniform entries keep their pre-codebook form
        else:
            d["lut"] = list(self.lut)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorCalibration:
        try:
            fields = dict(d)
            fields["stats"] = TensorStats(**fields.get("stats", {}))
            fields["flags"] = tuple(fields.get("flags", ()))
            if fields.get("lut") is not None:
                fields["lut"] = tuple(fields["lut"])
            return cls(**fields)
        except TypeError as err:
            raise InputError(f"tensor entry has unexpected fields: {err}") from err


MAX_LUT = 256


def check_lut(name: str, lut: Any) -> tuple[float, ...]:
    """``lut`` as a tuple of floats if it is 2**k (1 <= k <= 8) finite, strictly ascending levels."""
    try:
        levels = tuple(float(v) for v in lut)
    except (TypeError, ValueError) as err:
        raise InputError(f"tensor {name!r}: lut must be a sequence of numbers, found {lut!r}") from err
    n = len(levels)
    if not (2 <= n <= MAX_LUT and n & (n - 1) == 0):
        raise InputError(f"tensor {name!r}: lut has {n} levels; expected a power of two from 2 to {MAX_LUT}")
    if not all(math.isfinite(v) for v in levels) or any(b <= a for a, b in zip(levels, levels[1:])):
        raise InputError(f"tensor {name!r}: lut levels must be finite and strictly ascending")
    return levels


def refuse_lut(table: CalibrationTable, fmt: str) -> None:
    """`InputError` when an entry of ``table`` is a codebook: format ``fmt`` holds uniform scales only."""
    for entry in table.values():
        entry.check_uniform(fmt)


def utc_now() -> str:
    """Creation time stamp: ISO 8601, UTC, seconds."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class CalibrationTable(Mapping[str, TensorCalibration]):
    """An immutable, ordered mapping of tensor name -> `TensorCalibration` with metadata."""

    SCHEMA = SCHEMA

    def __init__(
        self,
        entries: Iterable[TensorCalibration],
        *,
        model_hash: str | None = None,
        created: str | None = None,
        edgecal_version: str | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        self._entries: dict[str, TensorCalibration] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise InputError(f"tensor {entry.name!r} appears twice in the table")
            self._entries[entry.name] = entry
        self.model_hash = model_hash
        self.created = created or utc_now()
        self.edgecal_version = edgecal_version or __version__
        # Optional JSON-able facts about where the data came from (e.g. serial-link loss counters
        # under "link"); empty by default, and then absent from meta() and from every file.
        self.provenance: dict[str, Any] = dict(provenance or {})

    def __getitem__(self, name: str) -> TensorCalibration:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(list(self._entries)[:10]) or "none"
            raise KeyError(f"tensor {name!r} is not in the table; it has: {known}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CalibrationTable):
            return NotImplemented
        return self.meta() == other.meta() and list(self._entries.items()) == list(other._entries.items())

    def __repr__(self) -> str:
        return f"CalibrationTable({len(self)} tensors, created={self.created!r}, model_hash={self.model_hash!r})"

    def meta(self) -> dict[str, Any]:
        """Table-level metadata (``provenance`` only when there is some)."""
        meta: dict[str, Any] = {
            "schema": self.SCHEMA,
            "edgecal_version": self.edgecal_version,
            "model_hash": self.model_hash,
            "created": self.created,
        }
        if self.provenance:
            meta["provenance"] = self.provenance
        return meta

    def replace_meta(self, **meta: Any) -> CalibrationTable:
        """A copy with some metadata fields changed."""
        fields = {k: v for k, v in self.meta().items() if k != "schema"}
        fields.update(meta)
        return CalibrationTable(self.values(), **fields)

    def with_entries(self, entries: Iterable[TensorCalibration]) -> CalibrationTable:
        """A copy with the same metadata and other entries."""
        return CalibrationTable(entries, **{k: v for k, v in self.meta().items() if k != "schema"})

    def save(self, path: str | os.PathLike[str], format: str | None = None, **options: Any) -> None:
        """Write atomically in ``format`` (default: chosen by the file suffix)."""
        from .formats import save_table

        save_table(self, path, format, **options)

    @classmethod
    def load(cls, path: str | os.PathLike[str], format: str | None = None) -> CalibrationTable:
        """Read a table written in any readable format (chosen by suffix or content)."""
        from .formats import load_table

        return load_table(path, format)


__all__ = ["CalibrationTable", "TensorCalibration", "TensorStats", "SCHEMES", "FLAGS", "ALL_ZERO_AMAX", "CLIPPED_HEAVY",
           "utc_now", "check_lut", "refuse_lut"]
