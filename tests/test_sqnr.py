"""One SQNR formula: edgecal.metrics, the accuracy checks and the study scripts agree with the naive definition."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import naive
from edgecal import metrics
from edgecal.table import TensorCalibration

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def script(name: str):
    """A study script loaded as a module (its main does not run)."""
    spec = importlib.util.spec_from_file_location(f"_sqnr_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pairs():
    """(case, reference, approx): the edge cases, then seeded random ones in float32 and float64."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(1000)
    yield "exact", x, x.copy()
    yield "zero signal, no error", np.zeros(5), np.zeros(5)
    yield "zero signal with error", np.zeros(5), np.array([0.0, 0.1, 0.0, -0.2, 0.0])
    yield "empty", np.zeros(0), np.zeros(0)
    yield "all wrong", x, np.zeros_like(x)
    for n, dtype in ((1, np.float64), (17, np.float32), (4096, np.float64), (4096, np.float32)):
        ref = (rng.laplace(size=n) * 3).astype(dtype)
        yield f"noisy {n} {np.dtype(dtype).name}", ref, (ref + rng.normal(0, 0.01, n)).astype(dtype)


CASES = list(pairs())


def same(got: float, want: float) -> bool:
    return got == want if math.isinf(want) else got == pytest.approx(want, rel=1e-12)


def test_known_answers():
    assert metrics.sqnr_between(np.array([3.0, 4.0]), np.array([3.0, 3.0])) == pytest.approx(10 * math.log10(25.0))
    assert metrics.sqnr_from_sums(100.0, 1.0) == 20.0
    assert metrics.sqnr_from_sums(0.0, 0.0) == math.inf and metrics.sqnr_from_sums(0.0, 2.0) == -math.inf


@pytest.mark.parametrize("case,reference,approx", CASES, ids=[c[0] for c in CASES])
def test_sqnr_between_and_from_sums_equal_the_naive_formula(case, reference, approx):
    want = naive.sqnr_between_db(reference, approx)
    assert same(metrics.sqnr_between(reference, approx), want)
    r, a = np.asarray(reference, np.float64), np.asarray(approx, np.float64)
    assert same(metrics.sqnr_from_sums(float(np.sum(r * r)), float(np.sum((r - a) ** 2))), want)
    if case == "exact" or case.startswith("zero signal, no"):
        assert want == math.inf
    if case == "zero signal with error":
        assert want == -math.inf


ENTRIES = [TensorCalibration.symmetric("s", 2.5), TensorCalibration.asymmetric("a", -1.0, 6.0),
           TensorCalibration.unsigned("u", 4.0)]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_the_round_trip_of_an_entry_equals_the_naive_round_trip(entry):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.5, 2.0, 5000), [np.nan, np.inf, -np.inf, 0.0, 9.0, -9.0]]).astype(np.float32)
    want = naive.round_trip_sqnr_db(x, entry.scale, entry.zero_point, entry.qmin, entry.qmax)
    assert math.isfinite(want) and same(metrics.sqnr_db(x, entry), want)
    grid = np.arange(-5, 6) * entry.scale  # values on the grid come back exactly: no error
    grid = grid[(grid >= entry.range[0]) & (grid <= entry.range[1])]
    assert metrics.sqnr_db(grid, entry) == math.inf == naive.round_trip_sqnr_db(grid, entry.scale, entry.zero_point,
                                                                              entry.qmin, entry.qmax)


def test_the_model_checks_use_the_one_definition():
    pytest.importorskip("onnx", reason="edgecal.model needs the onnx extra")
    from edgecal import model
    from edgecal.model import check, ort_check, ort_search

    assert model.sqnr_db is check.sqnr_db is metrics.sqnr_between
    assert ort_check.sqnr_from_sums is ort_search.sqnr_from_sums is metrics.sqnr_from_sums


def test_the_report_uses_the_one_definition():
    from edgecal.report import views

    assert views.sqnr_from_sums is metrics.sqnr_from_sums


def test_the_study_scripts_compute_the_naive_formula():
    rng = np.random.default_rng(11)
    x = rng.standard_normal(3000)
    kl, lattice, sweep = script("kl_study"), script("lattice_study"), script("synthetic_sweep")
    amax = 2.0
    s = amax / 127
    want = naive.sqnr_between_db(x, np.clip(np.rint(x / s), -127, 127) * s)  # both scripts: round half to even
    assert same(kl.sqnr_db(x, amax), want) and same(lattice.sqnr_db(x, float(np.dot(x, x)), amax), want)
    entry = TensorCalibration.asymmetric("t", -1.5, 3.0)
    x32 = x.astype(np.float32)
    q = np.clip(np.round(x32.astype(np.float64) / entry.scale) + entry.zero_point, entry.qmin, entry.qmax)
    _, got = sweep.round_trip(x32, entry)
    assert same(got, naive.sqnr_between_db(x32, (q - entry.zero_point) * entry.scale))
    assert lattice.sqnr_db(np.zeros(4), 0.0, amax) == math.inf  # nothing to lose


def test_the_accuracy_study_uses_the_one_definition():
    pytest.importorskip("onnxruntime", reason="the accuracy study imports ONNX Runtime helpers")
    pytest.importorskip("PIL", reason="the accuracy study imports Pillow")
    assert script("accuracy_study").sqnr_db is metrics.sqnr_between
