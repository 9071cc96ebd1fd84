"""`Connection`: one application's stream of link frames on the local socket, turned into samples.

Each connection has its own `FrameDecoder` (memory fixed by ``max_payload``), its own
sequence tracking and its own tensor table, and reassembles samples with the link's
`SampleAssembler`, so a tensor with a missing, corrupt or inconsistent chunk is
discarded whole and counted, never delivered. What a connection may ask the host to
hold is capped: a tensor table above ``max_tensor_bytes`` per tensor or
``max_sample_bytes`` in all is refused and the connection closed before anything is
allocated. The accepted subset of PROTOCOL.md is described in `edgecal.sources.socket`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ClientError
from ..link.assembler import ReceivedSample, SampleAssembler, SeqTracker
from ..link.decoder import FrameDecoder
from ..link.errors import FrameError
from ..link.frames import (MAX_TENSORS, PROTOCOL_VERSION, SAMPLE_END, TENSOR_CHUNK, TENSOR_INFO, Frame, TensorInfo,
                           parse_tensor_info)

TALLIES = ("samples", "samples_partial", "tensors_used", "tensors_discarded", "bad_chunks", "frames_ignored",
           "bytes_received")


@dataclass(frozen=True)
class Limits:
    """What one connection may make the host hold."""

    max_payload: int
    max_tensor_bytes: int
    max_sample_bytes: int


class Connection:
    """Decoder, tensor table and reassembly of one client.

    Parameters
    ----------
    peer : str
        How logs name the client (e.g. its process id).
    limits : Limits
        Frame size and memory caps.
    """

    def __init__(self, peer: str, limits: Limits) -> None:
        self.peer, self.limits = peer, limits
        self.decoder = FrameDecoder(limits.max_payload)
        self.seq = SeqTracker()
        self.tally = dict.fromkeys(TALLIES, 0)
        self._infos: dict[int, TensorInfo] = {}
        self._asm: SampleAssembler | None = None
        self._out: list[dict[str, np.ndarray]] = []

    def feed(self, data: bytes) -> list[dict[str, np.ndarray]]:
        """The samples completed by ``data``; `ClientError` when the client broke a rule."""
        self.tally["bytes_received"] += len(data)
        for frame in self.decoder.feed(data):
            if frame.version != PROTOCOL_VERSION or not self.seq.accept(frame.seq):
                continue
            self._handle(frame)
        return self._take()

    def finish(self) -> list[dict[str, np.ndarray]]:
        """The client went away: partial tensors are discarded, intact ones of its last sample delivered."""
        self._end_run()
        return self._take()

    def counters(self) -> dict[str, int]:
        """This connection's tallies, decoder counters and sequence gaps (assembler totals included)."""
        d = self.decoder.counters
        out: dict[str, Any] = dict(self.tally)
        asm = self._asm  # read once: stats() may run in another thread
        if asm is not None:
            out["tensors_discarded"] += asm.discarded
            out["bad_chunks"] += asm.bad_chunks
        out.update(frames_ok=d.frames, frames_corrupt=d.corrupt, frames_foreign=d.foreign_version,
                   frames_missing=self.seq.missing, frames_duplicate=self.seq.duplicates, resync_bytes=d.resync_bytes)
        return out

    # -- frames -------------------------------------------------------------------------------
    def _handle(self, frame: Frame) -> None:
        if frame.type == TENSOR_CHUNK:
            if self._asm is None:
                self._begin_run(frame.sample_id)
            assert self._asm is not None
            self._deliver(self._asm.on_chunk(frame))
        elif frame.type == SAMPLE_END:
            if self._asm is not None:
                self._deliver(self._asm.on_sample_end(frame))
        elif frame.type == TENSOR_INFO:
            self._on_info(frame)
        else:
            self.tally["frames_ignored"] += 1

    def _on_info(self, frame: Frame) -> None:
        if frame.tensor_id == 0:
            self._end_run()  # a new table
            self._infos = {}
        elif self._asm is not None:
            raise ClientError(f"TENSOR_INFO for tensor id {frame.tensor_id} while samples stream; "
                              "expected a new table to start with tensor id 0")
        try:
            info = parse_tensor_info(frame)
        except FrameError as err:
            raise ClientError(f"bad TENSOR_INFO: {err}") from None
        if info.id >= MAX_TENSORS or info.nbytes == 0:
            raise ClientError(f"tensor {info.name!r}: id {info.id}, {info.nbytes} bytes; expected an id below "
                              f"{MAX_TENSORS} and a tensor of at least one element")
        if info.nbytes > self.limits.max_tensor_bytes:
            raise ClientError(f"tensor {info.name!r} is {info.nbytes} bytes; this socket takes at most "
                              f"{self.limits.max_tensor_bytes} per tensor (max_tensor_bytes)")
        self._infos[info.id] = info

    def _begin_run(self, sample_id: int) -> None:
        count = len(self._infos)
        if not count or sorted(self._infos) != list(range(count)):
            raise ClientError(f"TENSOR_CHUNK before a complete tensor table (ids {sorted(self._infos)}); "
                              "expected TENSOR_INFO frames for tensor ids 0, 1, ... first")
        table = [self._infos[i] for i in range(count)]
        names = [t.name for t in table]
        if len(set(names)) != count:
            raise ClientError(f"the tensor table names a tensor twice: {names}")
        total = sum(t.nbytes for t in table)
        if total > self.limits.max_sample_bytes:
            raise ClientError(f"the tensor table holds {total} bytes per sample; this socket takes at most "
                              f"{self.limits.max_sample_bytes} (max_sample_bytes)")
        self._asm = SampleAssembler(table, list(range(count)))
        self._asm.begin_run(sample_id)

    def _end_run(self) -> None:
        if self._asm is not None:
            self._deliver(self._asm.end_run(None))
            self.tally["tensors_discarded"] += self._asm.discarded
            self.tally["bad_chunks"] += self._asm.bad_chunks
            self._asm = None

    # -- samples ------------------------------------------------------------------------------
    def _deliver(self, samples: list[ReceivedSample]) -> None:
        for sample in samples:
            self.tally["samples"] += 1
            self.tally["tensors_used"] += len(sample.arrays)
            self.tally["samples_partial"] += not sample.complete
            self._out.append(sample.arrays)

    def _take(self) -> list[dict[str, np.ndarray]]:
        out, self._out = self._out, []
        return out
