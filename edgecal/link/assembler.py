"""Turning frames back into whole samples, and accounting for every tensor that is lost.

`SeqTracker` spots lost and duplicated frames from sequence numbers; a
`SampleAssembler` rebuilds the samples of one run from TENSOR_CHUNK and SAMPLE_END
frames. A tensor is kept only when every byte arrived, in order, consistent with
the tensor table; otherwise it is discarded whole. A sample is emitted as soon as
all its selected tensors arrived, or, with the tensors that did, when it closes (its
SAMPLE_END, a later sample's frame, or the end of the run). Each selected tensor of
each sample id in the run ends up counted exactly once: used, discarded, or unused
-- PROTOCOL.md 4.2.

>>> from edgecal.link.frames import Frame, TensorInfo, TENSOR_CHUNK, F_LAST
>>> a = SampleAssembler([TensorInfo(0, "x", 1, (2,), 8)], [0])
>>> a.begin_run(0)
>>> chunk = lambda s, off, data, flags=0: Frame(TENSOR_CHUNK, flags, 0, s, 0, off, 8, data)
>>> a.on_chunk(chunk(0, 0, bytes(4)))
[]
>>> [(s.sample_id, s.complete, s.arrays["x"].tolist()) for s in a.on_chunk(chunk(0, 4, bytes(4), F_LAST))]
[(0, True, [0.0, 0.0])]
>>> a.on_chunk(chunk(2, 4, bytes(4), F_LAST))      # sample 1 lost entirely, sample 2 lost its first chunk
[]
>>> a.end_run(3); (a.used, a.discarded)
[]
(1, 2)
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .frames import Frame, TensorInfo


class ReceivedTensor(NamedTuple):
    """One intact tensor of one sample."""

    sample_id: int
    name: str
    array: np.ndarray


class ReceivedSample(NamedTuple):
    """The intact tensors of one sample, by name in tensor id order; ``complete`` when none is missing."""

    sample_id: int
    arrays: dict[str, np.ndarray]
    complete: bool

    def tensors(self) -> list[ReceivedTensor]:
        """The sample's tensors one by one."""
        return [ReceivedTensor(self.sample_id, name, array) for name, array in self.arrays.items()]


class SeqTracker:
    """Sequence-number bookkeeping of one direction (PROTOCOL.md section 5)."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.missing = 0
        self.duplicates = 0

    def resync(self) -> None:
        """Accept any next sequence number (after a HELLO_ACK)."""
        self.last = None

    def accept(self, seq: int) -> bool:
        """Whether a frame with ``seq`` is new; counts gaps and duplicates."""
        if self.last is None:
            self.last = seq
            return True
        gap = (seq - self.last - 1) & 0xFFFFFFFF
        if gap >= 0x7FFFFFFF:  # equal to or older than the last one
            self.duplicates += 1
            return False
        self.missing += gap
        self.last = seq
        return True


ID_MASK = 0xFFFFFFFF
HALF = 1 << 31
MAX_JUMP = 1 << 16  # sample ids a frame may jump ahead when no credit bounds the run


def id_distance(a: int, b: int) -> int:
    """``b - a`` for 32-bit sample ids, in -2^31 .. 2^31-1 (PROTOCOL.md section 5).

    >>> id_distance(0xFFFFFFFE, 1), id_distance(1, 0xFFFFFFFE)
    (3, -3)
    """
    d = (b - a) & ID_MASK
    return d - (1 << 32) if d >= HALF else d


class SampleAssembler:
    """Reassembles the selected tensors of one run.

    Sample ids are handled relative to the run's first one with serial-number
    arithmetic, so a run may cross 2^32 - 1 -> 0; a frame more than ``horizon``
    samples into the run (the credit granted: the device cannot be further) or
    before its start is a stray chunk, never a reason to count samples as lost.

    Parameters
    ----------
    tensors : sequence of TensorInfo
        The device's tensor table (already vetted: sizes are bounded by the caller).
    selected : sequence of int
        Tensor ids the run streams.
    """

    def __init__(self, tensors: Sequence[TensorInfo], selected: Sequence[int]) -> None:
        self.tensors = list(tensors)
        self.selected = sorted(set(selected))
        self._is_selected = [False] * len(self.tensors)
        for i in self.selected:
            self._is_selected[i] = True
        self._buffers = {i: bytearray(self.tensors[i].nbytes) for i in self.selected}
        self.used = self.discarded = self.unused = 0
        self.samples_complete = 0
        self.bad_chunks = 0
        self.accepting = True
        self.limit: int | None = None  # complete samples wanted from this run
        self.horizon: int | None = None  # samples of the run the device may send (its credit); None: MAX_JUMP ahead
        self._base: int | None = None
        self._cur: int | None = None  # relative to _base
        self._filled: dict[int, int] = {}
        self._done: set[int] = set()
        self._arrays: dict[str, np.ndarray] = {}  # the current sample's intact tensors, not emitted yet

    @property
    def base(self) -> int | None:
        """The run's first sample id (None before the run began)."""
        return self._base

    @property
    def samples_seen(self) -> int:
        """Sample ids of this run up to the newest one seen (lost ones included)."""
        return 0 if self._cur is None else self._cur + 1

    @property
    def next_sample_id(self) -> int | None:
        """The first sample id of this run not seen yet (None before the run began)."""
        if self._base is None:
            return None
        return (self._base + self.samples_seen) & ID_MASK

    def begin_run(self, base_sample_id: int) -> None:
        """The run's first sample id, from the START's ACK."""
        self._base = base_sample_id & ID_MASK

    def rebase(self, base_sample_id: int) -> None:
        """The START's ACK came after the run's first frames: ``base_sample_id`` is the true first id.

        Samples between it and the first one seen were lost on the link and are counted; a
        base after the first sample seen is ignored (what arrived was intact and is kept).
        """
        if self._base is None:
            self.begin_run(base_sample_id)
            return
        back = id_distance(base_sample_id, self._base)
        if 0 < back < self._limit():
            self._base = base_sample_id & ID_MASK
            if self._cur is not None:
                self._cur += back
                self.discarded += back * len(self.selected)

    def _limit(self) -> int:
        """Relative sample ids at or past this one cannot belong to the run."""
        if self.horizon is not None:
            return self.horizon
        return self.samples_seen + MAX_JUMP

    def _relative(self, sample_id: int) -> int | None:
        """``sample_id`` relative to the run's start, or None when it cannot belong to the run."""
        if self._base is None:
            return None
        rel = (sample_id - self._base) & ID_MASK
        return rel if rel < HALF and rel < self._limit() else None

    def _close_current(self, lost: str = "discarded") -> list[ReceivedSample]:
        """Close the current sample: its missing tensors count as ``lost``; returns what is left to emit."""
        if self._cur is None:
            return []
        setattr(self, lost, getattr(self, lost) + len(self.selected) - len(self._done))
        self._done = set(self.selected)
        self._filled.clear()
        return self._emit(complete=False)

    def _emit(self, complete: bool) -> list[ReceivedSample]:
        if not self._arrays:
            return []
        assert self._cur is not None and self._base is not None
        sample = ReceivedSample((self._base + self._cur) & ID_MASK, self._arrays, complete)
        self._arrays = {}
        return [sample]

    def _move_to(self, rel: int) -> list[ReceivedSample]:
        """Start sample ``rel``; the whole samples between the current one and it were lost."""
        if self._cur is None:
            out = []
            self.discarded += rel * len(self.selected)
        else:
            out = self._close_current()
            self.discarded += (rel - self._cur - 1) * len(self.selected)
        self._cur = rel
        self._done, self._filled = set(), {}
        return out

    def _advance(self, sample_id: int) -> tuple[bool, list[ReceivedSample]]:
        """Move to ``sample_id``: (False, []) for a frame of an older sample or outside the run (ignored)."""
        rel = self._relative(sample_id)
        if rel is None or (self._cur is not None and rel < self._cur):
            return False, []
        return True, (self._move_to(rel) if rel != self._cur else [])

    def on_chunk(self, frame: Frame) -> list[ReceivedSample]:
        """Take one TENSOR_CHUNK; returns the samples it completes or closes."""
        t = frame.tensor_id
        ok, out = (False, []) if t >= len(self.tensors) or not self._is_selected[t] else self._advance(frame.sample_id)
        if not ok:
            self.bad_chunks += 1
            return []
        return out + self._take(t, frame)

    def _take(self, t: int, frame: Frame) -> list[ReceivedSample]:
        if t in self._done:
            return []  # the rest of a tensor already discarded
        info, filled = self.tensors[t], self._filled.get(t, 0)
        size = len(frame.payload)
        if frame.total != info.nbytes or frame.offset != filled or filled + size > info.nbytes:
            self._done.add(t)  # a gap, a stray chunk or a size that disagrees with the table
            self._filled.pop(t, None)
            self.discarded += 1
            return []
        buf = self._buffers[t]
        buf[filled : filled + size] = frame.payload
        filled += size
        self._filled[t] = filled
        if filled < info.nbytes:
            return []
        self._done.add(t)
        del self._filled[t]
        if not self.accepting:
            self.unused += 1
            return []
        self.used += 1
        self._arrays[info.name] = np.frombuffer(bytes(buf), dtype=info.dtype).reshape(info.shape)
        if len(self._arrays) < len(self.selected):
            return []
        self.samples_complete += 1
        if self.limit is not None and self.samples_complete >= self.limit:
            self.accepting = False  # what arrives after the last wanted sample is unused
        return self._emit(complete=True)

    def on_sample_end(self, frame: Frame) -> list[ReceivedSample]:
        """SAMPLE_END: whatever of this sample is still incomplete is lost; returns what it closes."""
        ok, out = self._advance(frame.sample_id)
        return out + self._close_current() if ok else out

    def end_run(self, end_sample_id: int | None, cut: bool = False) -> list[ReceivedSample]:
        """Close the run; ``end_sample_id`` (one past its last sample) counts whole samples lost at its tail.

        With ``cut`` (the run ended by the host's STOP, PROTOCOL.md 4.4) the device may have
        stopped in the middle of its last sample, ``end_sample_id - 1`` (without an end: the
        last sample seen): the tensors of that sample that did not arrive were never sent and
        are counted unused, not discarded.
        """
        end = None if end_sample_id is None else self._relative_end(end_sample_id)
        out = []
        last = self._cur if end is None else end - 1  # the sample a STOP may have cut (or the last one seen)
        if cut and last is not None and last >= 0:
            if self._cur is None or last > self._cur:
                out = self._move_to(last)  # the cut sample sent nothing that arrived
            out += self._close_current("unused")
        out += self._close_current()
        if end is not None:
            self.discarded += max(0, end - self.samples_seen) * len(self.selected)
        self._base = None
        self._cur = None
        return out

    def _relative_end(self, end_sample_id: int) -> int | None:
        """The run's end relative to its start; None when it is before what was seen or beyond the horizon."""
        if self._base is None:
            return None
        rel = (end_sample_id - self._base) & ID_MASK
        if rel >= HALF or rel < self.samples_seen or rel > self._limit():
            return None
        return rel
