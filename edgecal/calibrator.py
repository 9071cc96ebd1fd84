"""`Calibrator`: one streaming histogram per tensor, and the table they produce.

>>> import numpy as np
>>> cal = Calibrator()
>>> cal.observe("relu1", np.maximum(np.linspace(-1, 3, 4001), 0))
>>> cal.observe("relu1", np.array([4.0]))             # later batches stream into one histogram
>>> table = cal.compute("minmax")
>>> table["relu1"].amax, table["relu1"].stats.samples, table["relu1"].stats.count
(4.0, 2, 4002)
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from .atomic import atomic_write
from .errors import InputError, StateError
from .histogram import DEFAULT_BINS, StreamingHistogram, check_bins
from .methods import DEFAULT_METHOD, get_method
from .methods.registry import traced_params
from .regular_file import read_regular
from .safe_json import load_json
from .staging import StagingBuffer
from .table import ALL_ZERO_AMAX, CLIPPED_HEAVY, SCHEMES, CalibrationTable, TensorCalibration, TensorStats

log = logging.getLogger("edgecal")

MIN_AMAX = 127.0 * 2.0**-126  # keeps scale = amax/127 a normal float32
# At most: the block takes what 4 arrays per tensor need (edgecal.staging), 4.8 MiB for 300 tensors of 1K float32
# values and 8 MiB for 500, where an observe then costs 1.4-1.5x what one tensor binned at once does (binning each
# array at once: ~4.3x; scripts/bench.py --only observe); 256 KiB for a few tensors.
DEFAULT_STAGE_BYTES = 8 << 20


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "\n" in name:
        raise InputError(f"tensor name must be a non-empty single-line string, found {name!r}")


def _usable(name: str, method: Any, value: float, extreme: float, flags: list[str]) -> float:
    """``value`` if it is a finite threshold > 0, else ``extreme`` (max |x| of that sign) with a warning."""
    if math.isfinite(value) and value > 0.0:
        return float(value)
    if "fallback" not in flags:
        flags.append("fallback")
    log.warning("tensor %r: method %s gave threshold %r; using %r", name, method.name, value, extreme)
    return extreme


def clipped_at_most(hist: StreamingHistogram, lo: float, hi: float, step: float = 0.0) -> int:
    """An upper bound on the finite values clipped by the grid ``[lo, hi]`` with step ``step``.

    A value is clipped when it lies more than half a step outside the range (closer
    ones only round to the end level, as values inside do). Every bin reaching past
    ``hi + step/2`` (or ``lo - step/2``) counts whole; 0 when the range covers min and max.
    """
    w = hist.bin_width
    lo, hi = lo - step / 2.0, hi + step / 2.0
    over = 0
    if hist.max is not None and hist.max > hi:
        over += int(hist.positive_counts()[max(int(math.floor(hi / w)), 0):].sum())
    if hist.min is not None and hist.min < lo:
        over += int(hist.negative_counts()[max(int(math.floor(-lo / w)), 0):].sum())
    return over


def _update(name: str, hist: StreamingHistogram, array: Any, threads: int = 1) -> None:
    try:
        hist.update(array, threads)
    except InputError as err:
        raise InputError(f"tensor {name!r}: {err}") from None


class Calibrator:
    """Streams arrays into per-tensor histograms and computes calibration tables.

    Parameters
    ----------
    bins : int
        Bins per sign of every histogram (a power of two; default 8192, see README).
    model_hash : str, optional
        Identifies the model the activations come from; copied into every table.
    threads : int
        Threads that share a big `observe` batch (see `StreamingHistogram.update`), and the
        tensors of a flush of staged arrays; same results.
    stage_bytes : int
        Bytes of the block that gathers small float arrays (see `edgecal.staging`): when
        many tensors are observed in turn, each histogram then takes many arrays at once.
        Every read of a histogram (`histogram`, `compute`, `merge`, `to_bytes`, ...) bins
        the staged values first, and the histograms are bit-identical to unstaged ones.
        A tensor's first array is binned at once; the block is allocated when a later
        small array comes. 0 turns staging off.
    """

    SCHEMA = 1
    _MAGIC = b"ECST"
    _HEAD = struct.Struct("<4sHHIII")  # magic, schema, reserved, bins, tensors, payload bytes

    def __init__(self, bins: int = DEFAULT_BINS, model_hash: str | None = None, *, threads: int = 1,
                 stage_bytes: int = DEFAULT_STAGE_BYTES) -> None:
        if type(threads) is not int or threads < 1:
            raise InputError(f"threads must be a positive integer, found {threads!r}")
        self.threads = threads
        self.bins = check_bins(bins)
        self.model_hash = model_hash
        self._tensors: dict[str, StreamingHistogram] = {}  # may lack staged values: read it through _hists
        self._samples: dict[str, int] = {}
        self.consumed: set[str] = set()
        self._stage = StagingBuffer(stage_bytes)
        self._lock = threading.Lock()  # a flush (from any reader) never interleaves with staging

    @property
    def _hists(self) -> dict[str, StreamingHistogram]:
        """Every histogram, with every staged value binned: the way every read of the state goes."""
        self.flush()
        return self._tensors

    @property
    def stage_bytes(self) -> int:
        """Bytes of the staging block (0: staging is off); setting it bins what is staged first."""
        return self._stage.capacity

    @stage_bytes.setter
    def stage_bytes(self, value: int) -> None:
        stage = StagingBuffer(value)  # checks the value before anything changes
        with self._lock:
            self._stage.flush(self.threads)
            self._stage = stage

    def flush(self) -> None:
        """Bin every staged array into its histogram now (reads of the state do it themselves)."""
        with self._lock:
            self._stage.flush(self.threads)

    # -- feeding -----------------------------------------------------------------------
    def observe(self, name: str, array: Any) -> None:
        """Fold one array (a sample or batch) of tensor ``name`` into its histogram.

        A small float array of a tensor observed before is copied into the staging
        block (see ``stage_bytes``) and binned at the next flush; the sample counts at
        once, and later changes to ``array`` do not reach the histogram.
        """
        _check_name(name)
        arr = array if type(array) is np.ndarray else np.asarray(array)
        if arr.size == 0:
            raise InputError(f"tensor {name!r}: expected a non-empty array, found shape {arr.shape}")
        hist = self._tensors.get(name)
        if hist is not None and self._stage.takes(arr, len(self._tensors)):  # a new histogram is binned into while hot
            with self._lock:
                self._stage.stage(hist, arr, self.threads, len(self._tensors))
        else:
            hist = hist or StreamingHistogram(self.bins)
            _update(name, hist, arr, self.threads)  # checks the dtype before touching any counter
        self._register(name, hist)

    def observe_chunks(self, name: str, chunks: Iterable[Any]) -> None:
        """Fold one array that arrives in pieces (e.g. read from a file) as a single array.

        The pieces fill a scratch histogram that is merged only when all of them were
        good, so a bad piece leaves the calibrator as it was.
        """
        _check_name(name)
        scratch = StreamingHistogram(self.bins)
        for chunk in chunks:
            _update(name, scratch, chunk)
        if scratch.count == 0:
            raise InputError(f"tensor {name!r}: expected a non-empty array, found no values")
        self._register(name, self._hists[name].merge(scratch) if name in self._hists else scratch)

    def observe_histogram(self, name: str, hist: StreamingHistogram) -> None:
        """Fold one array that was binned elsewhere (e.g. in shares, by several workers) as a single array."""
        _check_name(name)
        if hist.bins != self.bins or hist.count == 0:
            raise InputError(f"tensor {name!r}: histogram of {hist.bins} bins and {hist.count} values; expected "
                             f"{self.bins} bins and at least one value")
        self._register(name, self._hists[name].merge(hist) if name in self._hists else hist.copy())

    def _register(self, name: str, hist: StreamingHistogram) -> None:
        self._tensors[name] = hist
        self._samples[name] = self._samples.get(name, 0) + 1

    def observe_many(self, arrays: Mapping[str, Any]) -> None:
        """`observe` every ``name: array`` of a mapping (one sample of several tensors)."""
        for name, array in arrays.items():
            self.observe(name, array)

    def merge(self, other: Calibrator) -> Calibrator:
        """Add every histogram of ``other`` (exactly); returns ``self``."""
        if not isinstance(other, Calibrator):
            raise InputError(f"can only merge a Calibrator, found {type(other).__name__}")
        if other.bins != self.bins:
            raise InputError(f"cannot merge calibrators with {self.bins} and {other.bins} bins; expected equal bin counts")
        shared = self.consumed & other.consumed
        if shared:
            raise InputError(f"both states already contain input {sorted(shared)[0]!r}; merging would count it twice")
        if self.model_hash and other.model_hash and self.model_hash != other.model_hash:
            raise InputError(f"cannot merge states of different models: {self.model_hash} and {other.model_hash}")
        self._warn_unknown_model(other)
        for name, hist in other._hists.items():
            if name in self._hists:
                self._hists[name].merge(hist)
                self._samples[name] += other._samples[name]
            else:
                self._hists[name] = hist.copy()
                self._samples[name] = other._samples[name]
        self.consumed |= other.consumed
        self.model_hash = self.model_hash or other.model_hash
        return self

    def _warn_unknown_model(self, other: Calibrator) -> None:
        """A state without a model hash cannot prove its tensors are the same model's: say so once."""
        if (self.model_hash is None) == (other.model_hash is None):
            return
        shared = sorted(set(self._hists) & set(other._hists))
        if shared:
            known = self.model_hash or other.model_hash
            log.warning(f"merging a state without a model hash into one of model {known}: {len(shared)} tensors "
                        f"of the same name (e.g. {shared[0]!r}) are assumed to come from that model")

    # -- reading -----------------------------------------------------------------------
    def names(self) -> list[str]:
        """Tensor names in the order they were first observed."""
        return list(self._tensors)  # a staged array's tensor is registered when observed: no flush needed

    def histogram(self, name: str) -> StreamingHistogram:
        """The histogram of tensor ``name``, with every array observed so far binned.

        It is the calibrator's own object: arrays observed after this call may wait in the
        staging block (see ``stage_bytes``) until the next read through the calibrator, so
        ask again rather than keep it.
        """
        try:
            return self._hists[name]
        except KeyError:
            raise InputError(f"tensor {name!r} has not been observed; observed: {', '.join(self._hists) or 'none'}") from None

    def samples(self, name: str) -> int:
        """How many arrays of tensor ``name`` were observed."""
        self.histogram(name)
        return self._samples[name]

    def stats(self, name: str) -> TensorStats:
        """Provenance counters of tensor ``name``."""
        h = self.histogram(name)
        return TensorStats(self._samples[name], h.count, h.zeros, h.nans, h.posinf, h.neginf, h.min, h.max)

    def compute(self, method: str = DEFAULT_METHOD, names: Iterable[str] | None = None, scheme: str = "symmetric",
                **params: Any) -> CalibrationTable:
        """One table entry per tensor, ranges chosen by ``method`` with ``params``.

        ``scheme="symmetric"``: int8 with zero point 0, threshold ``amax``, scale
        amax / 127. ``scheme="tflite"``: asymmetric int8 as TFLite and ONNX Runtime
        quantize activations; each tensor gets a range ``[lo, hi]`` (``lo <= 0 <= hi``)
        from the method's range fit (see `edgecal.methods.registry`), so a
        never-negative tensor gets zero point -128 and all 256 levels on [0, amax],
        and a tensor with a small negative tail a small negative range.

        An entry whose range may leave out more than 1 % of the tensor's finite values
        is flagged ``clipped_heavy`` and logged as a warning.
        """
        m = get_method(method)
        resolved = m.resolve(params)
        if scheme not in SCHEMES:
            raise InputError(f"unknown scheme {scheme!r}; known schemes: {', '.join(SCHEMES)}")
        chosen = list(self._hists) if names is None else list(names)
        if not chosen:
            raise InputError("no tensors observed; expected at least one observe() before compute()")
        one_sign = {k: v for k, v in m.one_sign.items() if k not in params}  # the caller's values win
        entries = [self._entry(name, m, resolved, scheme, one_sign) for name in chosen]
        return CalibrationTable(entries, model_hash=self.model_hash)

    def _entry(self, name: str, method: Any, params: dict[str, Any], scheme: str,
               one_sign: Mapping[str, Any] | None = None) -> TensorCalibration:
        h = self.histogram(name)
        stats = self.stats(name)
        if h.finite == 0:
            raise InputError(
                f"tensor {name!r}: no finite values ({h.nans} NaN, {h.posinf} +Inf, {h.neginf} -Inf); "
                "expected at least one finite value"
            )
        flags: list[str] = []
        if stats.nonfinite:
            flags.append("nonfinite")
            log.warning(
                "tensor %r: %d of %d values are not finite (%d NaN, %d +Inf, %d -Inf); they were excluded",
                name, stats.nonfinite, h.count, h.nans, h.posinf, h.neginf,
            )
        if scheme == "tflite":
            entry = self._asymmetric(name, h, method, params, one_sign or {}, flags)
        else:
            entry = self._symmetric(name, h, method, params, flags)
        return self._check_clipping(h, entry, stats)

    def _symmetric(self, name: str, h: StreamingHistogram, method: Any, params: dict[str, Any],
                   flags: list[str]) -> TensorCalibration:
        lut = None
        if h.amax == 0.0:
            flags.append("all_zero")
            amax = ALL_ZERO_AMAX
        elif h.min == h.max:
            flags.append("constant")
            amax = h.amax
        else:
            value = method(h, **params)
            params = traced_params(params, amax=value)  # an optimiser's record, when the method keeps one
            lut = getattr(value, "lut", None)  # a codebook method's levels
            amax = _usable(name, method, value, h.amax, flags)
        if amax < MIN_AMAX:
            flags.append("fallback")
            amax = MIN_AMAX
        return TensorCalibration.symmetric(name, amax, method=method.name, params=params,
                                           flags=tuple(flags), lut=lut)

    def _asymmetric(self, name: str, h: StreamingHistogram, method: Any, params: dict[str, Any],
                    one_sign: Mapping[str, Any], flags: list[str]) -> TensorCalibration:
        lo_seen, hi_seen = min(h.min or 0.0, 0.0), max(h.max or 0.0, 0.0)
        lut = None
        if h.amax == 0.0:
            flags.append("all_zero")
            lo, hi = 0.0, ALL_ZERO_AMAX
        elif h.min == h.max:
            flags.append("constant")
            lo, hi = lo_seen, hi_seen
        else:
            if one_sign and lo_seen == 0.0:
                params = {**params, **one_sign}  # the method's parameters for a tensor of one sign
            lo, hi = method.fit_range(h, **params)
            params = traced_params(params, lo=lo, hi=hi)
            lut = getattr(hi, "lut", None) or getattr(lo, "lut", None)
            hi = _usable(name, method, hi, hi_seen, flags) if hi_seen > 0.0 else hi
            lo = -_usable(name, method, -lo, -lo_seen, flags) if lo_seen < 0.0 else lo
        least = MIN_AMAX * 255.0 / 127.0  # scale (hi - lo) / 255 must stay a normal float32
        if hi - lo < least:
            flags.append("fallback")
            hi = lo + least
        return TensorCalibration.asymmetric(name, lo, hi, method=method.name, params=params,
                                            flags=tuple(flags), lut=lut)

    def _check_clipping(self, h: StreamingHistogram, entry: TensorCalibration, stats: TensorStats) -> TensorCalibration:
        if entry.lut is not None:  # a codebook's outer cells reach min and max: nothing is clipped
            return replace(entry, stats=stats)
        lo, hi = entry.range
        clipped = clipped_at_most(h, lo, hi, entry.scale)
        flags = entry.flags
        if clipped > CLIPPED_HEAVY * h.finite and "constant" not in flags and "all_zero" not in flags:
            flags = (*flags, "clipped_heavy")
            log.warning("tensor %r: the %s range [%.6g, %.6g] may clip up to %d of %d finite values (%.2f %%)",
                        entry.name, entry.method, lo, hi, clipped, h.finite, 100.0 * clipped / h.finite)
        return replace(entry, stats=stats, flags=flags)

    # -- state -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Versioned, compressed, CRC-32-checked state."""
        meta = {
            "tensors": [{"name": n, "samples": self._samples[n]} for n in self._hists],
            "consumed": sorted(self.consumed),
            "model_hash": self.model_hash,
        }
        meta_bytes = json.dumps(meta, sort_keys=True).encode()
        deflate = zlib.compressobj(1)  # one histogram at a time: 300 tensors of 8192 bins would be 38 MiB raw
        parts = [deflate.compress(struct.pack("<I", len(meta_bytes)) + meta_bytes)]
        parts += [deflate.compress(h.to_bytes()) for h in self._hists.values()]
        payload = b"".join(parts) + deflate.flush()
        body = self._HEAD.pack(self._MAGIC, self.SCHEMA, 0, self.bins, len(self._hists), len(payload)) + payload
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, max_memory: int | None = None) -> Calibrator:
        """Rebuild a calibrator from `to_bytes` output; `StateError` on any damage or inconsistency.

        The histograms the header claims must fit in ``max_memory`` bytes (default
        `MAX_STATE_MEMORY`), checked before anything is decompressed; the payload is
        then inflated one histogram at a time, never beyond what the header claims.
        """
        data = bytes(data)
        size = cls._HEAD.size
        if data[:4] != cls._MAGIC[: len(data)] or not data:
            raise StateError(f"not an edgecal state file: starts {data[:4]!r}, expected magic {cls._MAGIC!r}")
        if len(data) < size + 4:
            raise StateError(f"state is truncated: {len(data)} bytes, expected at least {size + 4}")
        _, schema, _, bins, count, plen = cls._HEAD.unpack_from(data)
        if schema != cls.SCHEMA:
            raise StateError(f"state schema {schema} is not supported by edgecal (expected schema {cls.SCHEMA})")
        if len(data) != size + plen + 4:
            raise StateError(f"state is truncated or padded: {len(data)} bytes, header says {size + plen + 4}")
        if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
            raise StateError("state checksum mismatch: the file is corrupt")
        try:
            cal = cls(bins)
        except InputError as err:
            raise StateError(f"state header is corrupt: {err}") from None
        _check_state_memory(count, bins, MAX_STATE_MEMORY if max_memory is None else max_memory)
        hsize = StreamingHistogram._HEAD.size + 16 * bins + 4
        payload = _Inflater(data[size:-4])
        (mlen,) = struct.unpack("<I", payload.take(4))
        if mlen > _MAX_META_BYTES:
            raise StateError(f"state metadata of {mlen} bytes; expected at most {_MAX_META_BYTES}")
        tensors, consumed, model_hash = _state_meta(payload.take(mlen), count)
        for name, samples in tensors:
            hist = StreamingHistogram.from_bytes(payload.take(hsize))
            if not 1 <= samples <= hist.count:
                raise StateError(f"state tensor {name!r}: {samples} arrays of {hist.count} values; expected "
                                 "between 1 and the number of values")
            cal._hists[name], cal._samples[name] = hist, samples
        payload.finish()
        cal.consumed, cal.model_hash = consumed, model_hash
        return cal

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Checkpoint every histogram to ``path`` atomically."""
        atomic_write(path, self.to_bytes())

    @classmethod
    def load_state(cls, path: str | os.PathLike[str]) -> Calibrator:
        """Load a checkpoint written by `save_state` (a regular file of at most `MAX_STATE_BYTES`)."""
        data = read_regular(path, MAX_STATE_BYTES, "state")
        try:
            return cls.from_bytes(data)
        except StateError as err:
            raise StateError(f"{path}: {err}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calibrator):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __repr__(self) -> str:
        return f"Calibrator(bins={self.bins}, tensors={len(self._tensors)}, model_hash={self.model_hash!r})"

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles hold flushed histograms and an empty staging block of the same size."""
        self.flush()
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


MAX_STATE_BYTES = 1 << 30  # a state file on disk (compressed)
MAX_STATE_MEMORY = 2 << 30  # what the histograms a state claims may take in memory once loaded
_MAX_META_BYTES = 1 << 26
_INT64_MAX = (1 << 63) - 1


def _check_state_memory(count: int, bins: int, limit: int) -> None:
    """`StateError` when ``count`` histograms of ``bins`` bins would not fit in ``limit`` bytes."""
    need = count * (_LANE_BYTES_PER_BIN * bins + 16 * bins)
    if need > limit:
        raise StateError(f"state claims {count} tensors of {bins} bins ({need} bytes in memory); expected at most "
                         f"{limit} bytes (max_memory)")


_LANE_BYTES_PER_BIN = 24  # StreamingHistogram: 2 signs x (uint32 + the int64 a big histogram loads into) per bin


class _Inflater:
    """The state payload, decompressed exactly as many bytes at a time as asked for."""

    def __init__(self, payload: bytes) -> None:
        self._d, self._tail = zlib.decompressobj(), payload

    def take(self, n: int) -> bytes:
        parts, got = [], 0
        try:
            while got < n:
                before = len(self._tail)
                chunk = self._d.decompress(self._tail, n - got)
                self._tail = self._d.unconsumed_tail
                if not chunk and (self._d.eof or len(self._tail) == before):
                    raise StateError(f"state payload ends early: expected {n - got} more bytes")
                parts.append(chunk)
                got += len(chunk)
        except zlib.error as err:
            raise StateError(f"state payload is corrupt: {err}") from None
        return b"".join(parts)

    def finish(self) -> None:
        try:
            extra = self._d.decompress(self._tail, 1)
        except zlib.error as err:
            raise StateError(f"state payload is corrupt: {err}") from None
        if extra or not self._d.eof or self._d.unused_data:
            raise StateError("state payload holds more than its header says; expected nothing after the last tensor")


def _state_meta(raw: bytes, count: int) -> tuple[list[tuple[str, int]], set[str], str | None]:
    """(tensors as (name, samples), consumed keys, model hash) of a state's JSON metadata, checked."""
    meta = load_json(raw, "state metadata")
    try:
        tensors = [(t["name"], t["samples"]) for t in meta["tensors"]]
        consumed, model_hash = meta["consumed"], meta["model_hash"]
    except (KeyError, TypeError) as err:
        raise StateError(f"state metadata lacks {err}; expected tensors, consumed and model_hash") from None
    names = [n for n, _ in tensors]
    if len(tensors) != count:
        raise StateError(f"state metadata lists {len(tensors)} tensors; header says {count}")
    if not all(isinstance(n, str) and n and "\n" not in n for n in names) or len(set(names)) != len(names):
        raise StateError(f"state tensor names {names[:5]}...; expected distinct non-empty one-line strings")
    if not all(type(k) is int and 0 <= k <= _INT64_MAX for _, k in tensors):
        raise StateError("state sample counts are not integers in [0, 2**63); the data is corrupt")
    if not isinstance(consumed, list) or not all(isinstance(k, str) for k in consumed) \
            or len(set(consumed)) != len(consumed):
        raise StateError("state consumed inputs are not distinct strings; the data is corrupt")
    if not isinstance(model_hash, (str, type(None))):
        raise StateError(f"state model_hash is {type(model_hash).__name__}; expected a string or null")
    return tensors, set(consumed), model_hash

