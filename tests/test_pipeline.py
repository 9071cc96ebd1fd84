"""`edgecal.pipeline`: resuming, consumed keys, checkpoints, stop and emit policies."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
from naive import naive_inputs_once

from edgecal import CalibrationTable, Calibrator
from edgecal.errors import InputError
from edgecal.pipeline import (
    CheckpointPolicy,
    EmitPolicy,
    Pipeline,
    StopPolicy,
    load_checkpoint,
    stop_on_signals,
)

BINS = 256


def inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(f"in{i}", {"conv": rng.standard_normal(40).astype(np.float32),
                        "fc": rng.laplace(size=16).astype(np.float32)}) for i in range(n)]


def reference(items):
    """A calibrator fed directly: what folding each distinct input once must give."""
    cal = Calibrator(BINS)
    for key, arrays in naive_inputs_once([items]):
        for name, array in arrays.items():
            cal.observe(name, array)
        if key is not None:
            cal.consumed.add(key)
    return cal


def test_stopped_in_the_middle_and_resumed_equals_an_uninterrupted_run(tmp_path):
    items, state = inputs(7), tmp_path / "s.ecst"
    first = Pipeline(Calibrator(BINS), CheckpointPolicy(state), StopPolicy(samples=3), EmitPolicy(at_end=False))
    assert first.run(items).reason == "samples"
    assert Calibrator.load_state(state).consumed == {"in0", "in1", "in2"}
    emit = EmitPolicy(tmp_path / "resumed.json", method="minmax")
    done = Pipeline(Calibrator.load_state(state), CheckpointPolicy(state), emit=emit).run(items)
    assert (done.reason, done.used, done.skipped) == ("exhausted", 4, 3)
    whole = Pipeline(Calibrator(BINS), emit=EmitPolicy(tmp_path / "whole.json", method="minmax")).run(items)
    assert Calibrator.load_state(state) == reference(items)
    resumed, uninterrupted = CalibrationTable.load(tmp_path / "resumed.json"), whole.table
    assert [resumed[n].scale for n in resumed] == [uninterrupted[n].scale for n in uninterrupted]
    assert list(resumed) == ["conv", "fc"] and done.table == resumed


def test_keyboard_interrupt_keeps_whole_inputs_only_and_writes_no_table_when_asked(tmp_path):
    items, state, out = inputs(4), tmp_path / "s.ecst", tmp_path / "t.json"

    def lazy(i, key, arrays):
        if i == 2:
            return key, lambda: (_ for _ in ()).throw(KeyboardInterrupt)
        return key, lambda: arrays

    run = Pipeline(Calibrator(BINS), CheckpointPolicy(state), emit=EmitPolicy(out, on_interrupt=False))
    result = run.run(lazy(i, k, a) for i, (k, a) in enumerate(items))
    assert (result.reason, result.used, result.table) == ("interrupted", 2, None) and not out.exists()
    assert Calibrator.load_state(state) == reference(items[:2])


def test_a_consumed_key_is_never_counted_twice_and_older_keys_are_recognised():
    a, b = inputs(2)
    pipe = Pipeline(Calibrator(BINS), emit=EmitPolicy(at_end=False))
    result = pipe.run([a, b, a, (("new", "in1"), b[1]), (None, a[1]), (None, a[1])])
    assert (result.used, result.skipped) == (4, 2)
    assert pipe.cal.samples("conv") == 4 and pipe.cal.consumed == {"in0", "in1"}
    assert pipe.cal == reference([a, b, (None, a[1]), (None, a[1])])


def test_a_prepared_state_is_merged_and_its_key_skipped_next_time():
    part = Calibrator(BINS)
    part.observe("t", np.arange(-5.0, 6.0))
    part.consumed.add("file")
    pipe = Pipeline(Calibrator(BINS), emit=EmitPolicy(at_end=False))
    assert pipe.fold("file", lambda: part) and not pipe.fold("file", lambda: pytest.fail("read twice"))
    assert pipe.cal.samples("t") == 1 and pipe.cal.consumed == {"file"}


def test_checkpoint_is_atomic_and_keeps_the_previous_one(tmp_path, monkeypatch):
    state = tmp_path / "s.ecst"
    pipe = Pipeline(Calibrator(BINS), CheckpointPolicy(state))
    (k0, a0), (k1, a1) = inputs(2)
    pipe.fold(k0, a0)
    assert pipe.checkpoint() and not (tmp_path / "s.ecst.prev").exists()
    first = state.read_bytes()
    pipe.fold(k1, a1)
    assert pipe.checkpoint()
    assert (tmp_path / "s.ecst.prev").read_bytes() == first and Calibrator.load_state(state).consumed == {k0, k1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ecst", "s.ecst.prev"]  # no temporary file left

    def full(fd):
        raise OSError(28, "No space left on device")

    before = state.read_bytes()
    monkeypatch.setattr("edgecal.atomic.os.fsync", full)
    with pytest.raises(OSError, match="No space left"):
        pipe.checkpoint()
    assert state.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["s.ecst", "s.ecst.prev"]
    pipe.checkpoint_policy.retry_interval = 60.0
    assert not pipe.checkpoint() and pipe.counts["write_errors"] == 1 and state.read_bytes() == before


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path):
    state = tmp_path / "s.ecst"
    pipe = Pipeline(Calibrator(BINS), CheckpointPolicy(state))
    pipe.fold(*inputs(1)[0])
    pipe.checkpoint()
    pipe.checkpoint()
    state.write_bytes(b"ECST broken")
    assert load_checkpoint(state, BINS) == pipe.cal
    (tmp_path / "s.ecst.prev").unlink()
    fresh = load_checkpoint(state, BINS, model_hash="m")
    assert fresh.names() == [] and fresh.model_hash == "m"


def test_checkpoint_every_interval_and_committed_tokens(tmp_path):
    class Spool:
        KEEP_CONSUMED = False

        def __init__(self):
            self.committed = []

        def commit(self, tokens):
            self.committed += tokens

    spool, state = Spool(), tmp_path / "s.ecst"
    pipe = Pipeline(Calibrator(BINS), CheckpointPolicy(state, interval=100.0))
    for key, arrays in inputs(3):
        pipe.fold(key, arrays, token=key + ".npz", committer=spool)
    pipe.tick(pipe.started + 99.0)
    assert not state.exists() and spool.committed == [] and pipe.cal.consumed == {"in0", "in1", "in2"}
    pipe.tick(pipe.started + 100.0)
    assert state.exists() and spool.committed == ["in0.npz", "in1.npz", "in2.npz"]
    assert pipe.cal.consumed == set() and pipe.pending == {}  # the spool deleted them: no key to keep


def test_a_failed_commit_keeps_the_keys_for_the_next_checkpoint(tmp_path):
    class Broken:
        KEEP_CONSUMED = False

        def commit(self, tokens):
            raise RuntimeError("read-only spool")

    pipe = Pipeline(Calibrator(BINS), CheckpointPolicy(tmp_path / "s.ecst"))
    pipe.fold("k", inputs(1)[0][1], token="t", committer=Broken())
    assert pipe.checkpoint() and pipe.cal.consumed == {"k"} and len(pipe.pending) == 1


def test_stop_policies():
    items = inputs(5)
    stop = StopPolicy()
    stop.event.set()
    assert Pipeline(Calibrator(BINS), stop=stop, emit=EmitPolicy(at_end=False)).run(items).used == 1
    assert Pipeline(Calibrator(BINS), stop=StopPolicy(samples=4), emit=EmitPolicy(at_end=False)).run(items).used == 4
    assert Pipeline(Calibrator(BINS), emit=EmitPolicy(at_end=False)).run(items).reason == "exhausted"

    def idle():
        yield items[0]
        while True:
            yield None  # nothing arrives: only the clock can stop this run

    result = Pipeline(Calibrator(BINS), stop=StopPolicy(duration=0.05), emit=EmitPolicy(at_end=False)).run(idle())
    assert (result.reason, result.used) == ("duration", 1)


@pytest.mark.parametrize("bad", [{"samples": 0}, {"duration": 0.0}, {"duration": -1.0}])
def test_a_stop_policy_that_could_never_run_is_refused(bad):
    with pytest.raises(InputError, match="expected a positive count"):
        StopPolicy(**bad)


def test_signals_set_the_stop_event_and_a_second_interrupts():
    event, before = threading.Event(), signal.getsignal(signal.SIGTERM)
    with stop_on_signals(event, second_interrupts=True):
        os.kill(os.getpid(), signal.SIGTERM)
        assert event.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_emit_every_n_samples_on_request_and_with_provenance(tmp_path):
    out = tmp_path / "t.json"
    emit = EmitPolicy(out, method="minmax", every_samples=2, at_end=False, provenance=lambda: {"run": {"n": 1}})
    pipe = Pipeline(Calibrator(BINS), emit=emit)
    items = inputs(5)
    pipe.run(items)
    assert pipe.counts["tables"] == 2 and CalibrationTable.load(out).provenance == {"run": {"n": 1}}
    assert CalibrationTable.load(out)["conv"].stats.count == 4 * 40  # the last table: after the fourth input
    emit.request.set()
    pipe.tick()
    assert pipe.counts["tables"] == 3 and CalibrationTable.load(out)["conv"].stats.count == 5 * 40
    assert not emit.request.is_set()


def test_emit_every_seconds_and_nothing_before_the_first_tensor(tmp_path):
    pipe = Pipeline(Calibrator(BINS), emit=EmitPolicy(tmp_path / "t.json", every_seconds=10.0))
    pipe.tick(pipe.started + 10.0)
    assert pipe.counts["tables"] == 0 and not (tmp_path / "t.json").exists()
    pipe.fold(*inputs(1)[0])
    pipe.tick(pipe.started + 15.0)
    assert pipe.counts["tables"] == 0
    pipe.tick(pipe.started + 20.0)
    assert pipe.counts["tables"] == 1 and (tmp_path / "t.json").exists()


def test_an_empty_run_raises_or_writes_nothing(tmp_path):
    with pytest.raises(InputError, match="no tensors observed"):
        Pipeline(Calibrator(BINS), emit=EmitPolicy(tmp_path / "t.json")).run([])
    quiet = Pipeline(Calibrator(BINS), emit=EmitPolicy(tmp_path / "t.json", require_tensors=False)).run([])
    assert quiet.table is None and not (tmp_path / "t.json").exists()


def test_a_failed_table_raises_or_is_retried(tmp_path):
    emit = EmitPolicy(tmp_path / "no-such-folder" / "t.json")
    pipe = Pipeline(Calibrator(BINS), emit=emit)
    pipe.fold(*inputs(1)[0])
    with pytest.raises(InputError, match="does not exist"):
        pipe.emit()
    emit.retry_interval = 30.0
    assert pipe.emit() is None and pipe.counts["write_errors"] == 1 and pipe.next_emit is not None


def test_rejected_samples_are_counted_or_raise():
    bad = ("k", {"t": np.array(["text"])})
    with pytest.raises(InputError):
        Pipeline(Calibrator(BINS)).fold(*bad)
    pipe = Pipeline(Calibrator(BINS), reject_bad=True)
    assert not pipe.fold(*bad) and pipe.counts["rejected"] == 1 and pipe.cal.consumed == {"k"}


def test_a_tensor_budget_limits_the_histograms():
    class Two:
        def __init__(self):
            self.known = set()

        def admit(self, name):
            return name in self.known or len(self.known) < 2

        def add(self, name):
            self.known.add(name)

    pipe = Pipeline(Calibrator(BINS), budget=Two())
    pipe.fold(None, {"a": np.ones(2), "b": np.ones(2), "c": np.ones(2)})
    assert pipe.cal.names() == ["a", "b"]


# -- the commands on the pipeline -------------------------------------------------------------

@pytest.fixture
def three_files(tmp_path):
    folder = tmp_path / "acts"
    folder.mkdir()
    for i, (_, arrays) in enumerate(inputs(3, seed=4)):
        np.savez(folder / f"batch{i}.npz", **arrays)
    return folder


def test_calibrate_stops_after_the_file_being_read_on_sigterm(three_files, tmp_path, monkeypatch, capsys):
    from edgecal.cli import files as cli_files
    from edgecal.cli import main

    real, calls = cli_files._read_file, []

    def signalled(path, key, bins):
        calls.append(path)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while this file is being read
        return real(path, key, bins)

    monkeypatch.setattr(cli_files, "_read_file", signalled)
    state, out = tmp_path / "s.ecst", tmp_path / "t.json"
    assert main(["calibrate", str(three_files), "-o", str(out), "--state", str(state)]) == 130
    assert "2 new files kept in" in capsys.readouterr().err and not out.exists() and len(calls) == 2
    assert len(Calibrator.load_state(state).consumed) == 2 and Calibrator.load_state(state).samples("conv") == 2


def test_calibrate_keeps_the_previous_state(three_files, tmp_path):
    from edgecal.cli import main

    files, state = sorted(three_files.iterdir()), tmp_path / "s.ecst"
    assert main(["calibrate", str(files[0]), "-o", str(tmp_path / "a.json"), "--state", str(state), "-q"]) == 0
    first = state.read_bytes()
    assert main(["calibrate", str(three_files), "-o", str(tmp_path / "b.json"), "--state", str(state), "-q"]) == 0
    assert (tmp_path / "s.ecst.prev").read_bytes() == first and len(Calibrator.load_state(state).consumed) == 3


def test_stream_sessions_resume_from_the_state_and_keep_the_previous_one(tmp_path):
    from edgecal.link import SerialHost, StreamSession
    from test_link_host import FakeDevice

    state, truth = tmp_path / "s.ecst", Calibrator(BINS)
    for first in (0, 100):  # two runs of 5 samples, the second resuming from the first's state
        dev = FakeDevice(first_sample=first, count=5)
        try:
            with SerialHost(dev.url) as src:
                src.open()
                cal = Calibrator.load_state(state) if state.exists() else Calibrator(BINS)
                emit = EmitPolicy(tmp_path / "t.json", method="minmax")
                result = StreamSession(src, cal, state=state, emit=emit).run()
        finally:
            dev.close()
        assert (result.reason, result.samples) == ("finished", 5)
        for (_, name), array in sorted(dev.sent.items()):
            truth.observe(name, array)
        if first == 0:
            after_first = state.read_bytes()
    assert (tmp_path / "s.ecst.prev").read_bytes() == after_first
    saved = Calibrator.load_state(state)
    saved.model_hash = None
    assert saved == truth
    assert result.table == CalibrationTable.load(tmp_path / "t.json")
    assert [result.table[n].amax for n in result.table] == [truth.compute("minmax")[n].amax for n in result.table]
