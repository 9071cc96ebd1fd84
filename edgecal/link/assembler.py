"""Turning frames back into whole tensors, and accounting for every one that is lost.

`SeqTracker` spots lost and duplicated frames from sequence numbers; a
`SampleAssembler` rebuilds the tensors of one run from TENSOR_CHUNK frames. A
tensor is delivered only when every byte arrived, in order, consistent with the
tensor table; otherwise it is discarded whole. Each selected tensor of each sample
id in the run ends up counted exactly once: used, discarded, or unused (arrived
after the host stopped taking data) -- PROTOCOL.md 4.2.

>>> from edgecal.link.frames import Frame, TensorInfo, TENSOR_CHUNK, F_LAST
>>> a = SampleAssembler([TensorInfo(0, "x", 1, (2,), 8)], [0])
>>> a.begin_run(0)
>>> chunk = lambda s, off, data, flags=0: Frame(TENSOR_CHUNK, flags, 0, s, 0, off, 8, data)
>>> a.on_chunk(chunk(0, 0, bytes(4)))
[]
>>> [(t.sample_id, t.name, t.array.tolist()) for t in a.on_chunk(chunk(0, 4, bytes(4), F_LAST))]
[(0, 'x', [0.0, 0.0])]
>>> a.on_chunk(chunk(2, 4, bytes(4), F_LAST))      # sample 1 lost entirely, sample 2 lost its first chunk
[]
>>> a.end_run(3); (a.used, a.discarded)
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


class SampleAssembler:
    """Reassembles the selected tensors of one run.

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
        self._base: int | None = None
        self._cur: int | None = None
        self._filled: dict[int, int] = {}
        self._done: set[int] = set()
        self._used_in_sample = 0

    @property
    def samples_seen(self) -> int:
        """Sample ids of this run up to the newest one seen (lost ones included)."""
        if self._base is None or self._cur is None:
            return 0
        return self._cur - self._base + 1

    @property
    def next_sample_id(self) -> int | None:
        """The first sample id of this run not seen yet (None before the run began)."""
        if self._base is None:
            return None
        return self._base if self._cur is None else self._cur + 1

    def begin_run(self, base_sample_id: int) -> None:
        """The run's first sample id, from the START's ACK."""
        self._base = base_sample_id

    def _close_current(self) -> None:
        if self._cur is not None:
            self.discarded += len(self.selected) - len(self._done)
            self._done = set(self.selected)
            self._filled.clear()

    def _advance(self, sample_id: int) -> bool:
        """Move to ``sample_id``; False for a frame of an older sample (ignored)."""
        if self._base is None:
            return False
        if self._cur is None:
            if sample_id < self._base:
                return False
            self.discarded += (sample_id - self._base) * len(self.selected)
        elif sample_id < self._cur:
            return False
        elif sample_id > self._cur:
            self._close_current()
            self.discarded += (sample_id - self._cur - 1) * len(self.selected)
        else:
            return True
        self._cur = sample_id
        self._done, self._filled, self._used_in_sample = set(), {}, 0
        return True

    def on_chunk(self, frame: Frame) -> list[ReceivedTensor]:
        """Take one TENSOR_CHUNK; returns the tensor it completes, if any."""
        t = frame.tensor_id
        if t >= len(self.tensors) or not self._is_selected[t] or not self._advance(frame.sample_id):
            self.bad_chunks += 1
            return []
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
        self._used_in_sample += 1
        if self._used_in_sample == len(self.selected):
            self.samples_complete += 1
            if self.limit is not None and self.samples_complete >= self.limit:
                self.accepting = False  # what arrives after the last wanted sample is unused
        array = np.frombuffer(bytes(buf), dtype=info.dtype).reshape(info.shape)
        return [ReceivedTensor(frame.sample_id, info.name, array)]

    def on_sample_end(self, frame: Frame) -> None:
        """SAMPLE_END: whatever of this sample is still incomplete is lost."""
        if self._advance(frame.sample_id):
            self._close_current()

    def end_run(self, end_sample_id: int | None) -> None:
        """Close the run; ``end_sample_id`` (one past its last sample) counts whole samples lost at its tail."""
        self._close_current()
        if end_sample_id is not None and self._base is not None:
            first_unseen = self._base if self._cur is None else self._cur + 1
            self.discarded += max(0, end_sample_id - first_unseen) * len(self.selected)
        self._base = None
        self._cur = None
