"""The daemon's bound on tensor names: histograms stop at max_tensors, the rest is refused and counted."""

from __future__ import annotations

import logging

import numpy as np

from edgecal import Calibrator, CalibrationTable
from edgecal.daemon import tensors
from edgecal.daemon.service import Daemon
from edgecal.daemon.tensors import TensorBudget
from edgecal.sources import Sample

from test_daemon import records, write_config


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_names_beyond_the_limit_are_refused_counted_and_named_once(caplog):
    budget = TensorBudget(2, [], clock=Clock())
    assert budget.admit("a") and budget.admit("a")
    budget.add("a")
    assert budget.admit("b")
    budget.add("b")
    assert [budget.admit(n) for n in ("c", "c", "a", "d", "c")] == [False, False, True, False, False]
    assert budget.counts() == {"tensors_refused": 4, "tensor_names_refused": 2}
    warned = [r.getMessage() for r in records(caplog) if "refused" in r.getMessage()]
    assert len(warned) == 2 and "'c'" in warned[0] and "'d'" in warned[1] and "max_tensors = 2" in warned[0]


def test_warnings_are_rate_limited_and_the_suppressed_ones_summed_up(caplog):
    clock = Clock()
    budget = TensorBudget(1, ["kept"], clock=clock)
    for i in range(tensors.WARNINGS + 5):
        assert not budget.admit(f"n{i}")
    assert len(records(caplog)) == tensors.WARNINGS
    clock.now = tensors.WINDOW + 1
    assert not budget.admit("late")
    messages = [r.getMessage() for r in records(caplog)]
    assert messages[tensors.WARNINGS].startswith("5 more tensor names were refused") and "'late'" in messages[-1]
    assert budget.counts() == {"tensors_refused": tensors.WARNINGS + 6, "tensor_names_refused": tensors.WARNINGS + 6}


def test_remembered_refused_names_are_bounded(monkeypatch):
    monkeypatch.setattr(tensors, "REMEMBER", 3)
    budget = TensorBudget(1, ["kept"], clock=Clock())
    for i in range(10):
        budget.admit(f"n{i}")
    assert len(budget.refused_names) == 3 and budget.counts() == {"tensors_refused": 10, "tensor_names_refused": 3}


def test_a_checkpoint_above_the_limit_keeps_its_tensors_and_refuses_new_ones(caplog):
    budget = TensorBudget(1, ["a", "b"], clock=Clock())
    assert budget.admit("a") and budget.admit("b") and not budget.admit("c")
    assert "holds 2 tensors, more than max_tensors = 1" in caplog.text


def test_the_daemon_keeps_at_most_max_tensors_histograms_and_reports_the_rest(tmp_path, caplog):
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("[state]", "[calibrator]\nmax_tensors = 3\n\n[state]"))
    d = Daemon(cfg)
    caplog.set_level(logging.WARNING, "edgecal")
    runner = type("R", (), {"source": d.sources[0], "label": "spool#1"})()
    for i in range(50):  # every sample brings a new name, as a model with per-step names would
        d._fold(runner, Sample({"conv": np.arange(4, dtype=np.float32), f"step{i}": np.ones(2, np.float32)}))
    assert d.cal.names() == ["conv", "step0", "step1"]
    assert d.counts["samples"] == 50 and d.cal.samples("conv") == 50
    prov = d.provenance()
    assert prov["tensors_refused"] == 48 and prov["tensor_names_refused"] == 48
    assert "48 tensors refused" in d.status_line()
    assert len([r for r in records(caplog) if "refused" in r.getMessage()]) == tensors.WARNINGS
    assert d._checkpoint() and d._emit()
    assert Calibrator.load_state(tmp_path / "state.ecst").names() == ["conv", "step0", "step1"]
    assert CalibrationTable.load(tmp_path / "table.json").provenance["daemon"]["tensors_refused"] == 48
