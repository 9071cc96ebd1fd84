"""`DeviceRun`: one streaming run as an explicit state machine (PROTOCOL.md section 4).

A run goes STARTING (START sent) -> STREAMING (its ACK arrived) -> FINISHED (a FINAL
STATS: the device has no more samples) -> STOPPING (the host takes no more data) ->
ENDED; it can end from any state when the device resets, falls silent or vanishes.
Every change of state goes through `DeviceRun.on_event`, driven by one table; sample
frames go to the run's `SampleAssembler` through another. A run knows nothing of ports:
its owner (`SerialHost`) sends what it decides and feeds it what arrives.

>>> from edgecal.link.frames import TensorInfo
>>> run = DeviceRun(7, [TensorInfo(0, "x", 1, (1,), 4)], [0], window=8)
>>> run.state.name, run.on_event(RunEvent.ACKED, 100), run.state.name, run.first_sample_id
('STARTING', [], 'STREAMING', 100)
>>> run.on_event(RunEvent.ACKED, 90), run.first_sample_id   # a repeated ACK changes nothing
([], 100)
>>> run.on_event(RunEvent.STOP), run.state.name
([], 'STOPPING')
>>> run.on_event(RunEvent.STOP_ACKED, 103), run.state.name, run.asm.discarded, run.asm.unused
([], 'ENDED', 2, 1)
"""

from __future__ import annotations

import enum
import time
from typing import Callable, Sequence

from .assembler import ReceivedSample, SampleAssembler
from .frames import SAMPLE_END, TENSOR_CHUNK, Frame, TensorInfo

CREDIT_EVERY = 0.2  # seconds between repeated CREDIT frames (PROTOCOL.md 4.3)


class RunState(enum.Enum):
    STARTING = "starting"  # START sent, its ACK not seen; sample frames may already arrive
    STREAMING = "streaming"
    FINISHED = "finished"  # a FINAL STATS: every sample of the run is accounted for
    STOPPING = "stopping"  # the host takes no more data and waits for the STOP's ACK
    ENDED = "ended"


class RunEvent(enum.Enum):
    ACKED = "acked"  # the START's ACK, with the run's first sample id
    FINAL = "final"  # a FINAL STATS, with one past the run's last sample id
    STOP = "stop"  # the host decided to stop
    STOP_ACKED = "stop_acked"  # the STOP's ACK, with one past the run's last sample id
    GAVE_UP = "gave_up"  # no ACK for STOP: what arrived is all there is
    LOST = "lost"  # reset, silence or a vanished port: the end is unknown


S, E = RunState, RunEvent
# (state, event) -> next state; a pair not listed is ignored (e.g. a repeated ACK while streaming)
TRANSITIONS: dict[tuple[RunState, RunEvent], RunState] = {
    (S.STARTING, E.ACKED): S.STREAMING,
    (S.STREAMING, E.FINAL): S.FINISHED,
    **{(s, E.STOP): S.STOPPING for s in (S.STARTING, S.STREAMING, S.FINISHED)},
    (S.STOPPING, E.STOP_ACKED): S.ENDED,
    (S.STOPPING, E.GAVE_UP): S.ENDED,
    **{(s, E.LOST): S.ENDED for s in (S.STARTING, S.STREAMING, S.FINISHED, S.STOPPING)},
}
TAKES_SAMPLES = (S.STARTING, S.STREAMING, S.STOPPING)


class DeviceRun:
    """The host's side of one run: its state, its credit and its samples.

    Parameters
    ----------
    run_id : int
        The id in START and CREDIT.
    tensors : sequence of TensorInfo
        The device's (vetted) tensor table.
    selected : sequence of int
        Tensor ids the run streams.
    window : int
        Samples of credit the device may be ahead of what the host has seen.
    limit : int, optional
        Complete samples wanted from this run; later tensors are unused.
    """

    def __init__(self, run_id: int, tensors: Sequence[TensorInfo], selected: Sequence[int], window: int,
                 limit: int | None = None) -> None:
        self.run_id, self.window = run_id, window
        self.state = RunState.STARTING
        self.asm = SampleAssembler(tensors, selected)
        self.asm.limit, self.asm.horizon = limit, window
        self.granted = window
        self.first_sample_id: int | None = None
        self.end_sample_id: int | None = None
        self.device_run_samples = 0  # STATS offset 36, as last reported
        self._last_credit = time.monotonic()
        self._actions: dict[RunEvent, Callable[[int | None], list[ReceivedSample]]] = {
            E.ACKED: self._acked, E.FINAL: self._final, E.STOP: self._stop, E.STOP_ACKED: self._stop_acked,
            E.GAVE_UP: self._gave_up, E.LOST: self._lost,
        }
        self._frames: dict[int, Callable[[Frame], list[ReceivedSample]]] = {
            TENSOR_CHUNK: self.asm.on_chunk, SAMPLE_END: self.asm.on_sample_end,
        }

    def on_event(self, event: RunEvent, sample_id: int | None = None) -> list[ReceivedSample]:
        """The one transition method: act on ``event`` and move to the state `TRANSITIONS` names.

        Returns the samples the event closes (e.g. the last one of the run).
        """
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            return []
        out = self._actions[event](sample_id)
        self.state = nxt
        return out

    def on_frame(self, frame: Frame) -> list[ReceivedSample]:
        """A TENSOR_CHUNK or SAMPLE_END; returns the samples it completes or closes."""
        if self.state not in TAKES_SAMPLES:
            return []
        if self.state is RunState.STARTING and self.asm.base is None:  # the START's ACK was lost: the run
            # counts from the first sample seen until a repeated ACK names its first id (PROTOCOL.md 4.2)
            self.asm.begin_run(frame.sample_id)
        return self._frames[frame.type](frame)

    def credit(self, now: float) -> int | None:
        """The grant to send now, if any: samples seen plus the window, at least every CREDIT_EVERY s."""
        if self.state is not RunState.STREAMING:
            return None
        want = max(self.asm.samples_seen, self.device_run_samples) + self.window
        if want <= self.granted and now - self._last_credit <= CREDIT_EVERY:
            return None
        self.granted, self._last_credit = max(want, self.granted), now
        self.asm.horizon = self.granted
        return want

    # -- actions, one per event --------------------------------------------------------------------
    def _acked(self, sample_id: int | None) -> list[ReceivedSample]:
        assert sample_id is not None
        self.asm.rebase(sample_id)
        self.first_sample_id = self.asm.base
        return []

    def _final(self, sample_id: int | None) -> list[ReceivedSample]:
        self.end_sample_id = sample_id  # nothing of the run can follow a FINAL STATS
        return self.asm.end_run(sample_id)

    def _stop(self, sample_id: int | None) -> list[ReceivedSample]:
        self.asm.accepting = False
        return []

    def _stop_acked(self, sample_id: int | None) -> list[ReceivedSample]:
        self.end_sample_id = sample_id
        return self.asm.end_run(sample_id, cut=True)

    def _gave_up(self, sample_id: int | None) -> list[ReceivedSample]:
        return self.asm.end_run(self.end_sample_id, cut=True)

    def _lost(self, sample_id: int | None) -> list[ReceivedSample]:
        return self.asm.end_run(self.end_sample_id)
