"""kl-refine: the continuous KL objective against its piecewise-integrated twin, its gradient, and the descent."""

from __future__ import annotations

import math

import numpy as np
import pytest

import naive
from edgecal import Calibrator, InputError, StreamingHistogram
from edgecal.formats import load_table, save_table
from edgecal.methods import get_method
from edgecal.methods.kl_refine import _cells, density, kl_at, kl_gradient, prefix, refine
from edgecal.methods.kl_refine_range import joint_gradient, joint_kl
from edgecal.methods.registry import Traced


def hist_of(x, bins=2048) -> StreamingHistogram:
    h = StreamingHistogram(bins)
    h.update(np.asarray(x, dtype=np.float64))
    return h


def small_case(rng):
    n = int(rng.integers(3, 60))
    counts = rng.integers(0, 30, n).astype(np.float64) * (rng.random(n) < 0.8)
    counts[-1] = max(counts[-1], 1.0)
    counts[0] = max(counts[0], 1.0)
    return counts, n - 1 + float(rng.uniform(0.01, 1.0)), int(rng.integers(1, 12))


@pytest.mark.parametrize("seed", range(60))
def test_objective_matches_the_piecewise_integral(seed):
    rng = np.random.default_rng(seed)
    counts, top, levels = small_case(rng)
    pre, d, top = prefix(counts, top)
    for t in [1.0, float(rng.uniform(1, top)), float(rng.integers(1, math.floor(top) + 1)), top]:
        want = naive.continuous_kl(counts, top, t, levels)
        got = kl_at(pre, d, top, t, levels)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12) or (math.isinf(want) and math.isinf(got))


def away_from_kinks(t, levels, h):
    """No bin edge within 100 h of t, t - 1 or any cell edge k t / L (the objective's kinks)."""
    points = [t, t - 1.0, *[k * t / levels for k in range(1, levels)]]
    return all(abs(p - round(p)) > 100 * h * max(1.0, levels) for p in points)


@pytest.mark.parametrize("seed", range(40))
def test_gradient_matches_central_differences(seed):
    rng = np.random.default_rng(1000 + seed)
    counts, top, levels = small_case(rng)
    counts += 1.0  # no empty cell: the analytic gradient exists everywhere off the kinks
    pre, d, top = prefix(counts, top)
    h = 1e-7
    checked = 0
    for t in rng.uniform(1.0 + 1e-3, top - 1e-3, 40):
        if not away_from_kinks(t, levels, h):
            continue
        g, ok = kl_gradient(pre, d, top, t, levels)
        fd = (kl_at(pre, d, top, t + h, levels) - kl_at(pre, d, top, t - h, levels)) / (2 * h)
        assert ok and g == pytest.approx(fd, rel=1e-5, abs=1e-8), (t, g, fd)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("dist", ["gauss", "relu", "laplace", "student-t3"])
def test_gradient_matches_central_differences_on_real_histograms(dist):
    x = SAMPLES[dist](np.random.default_rng(5))
    pre, d, top = density(hist_of(x))
    checked = 0
    h = 1e-5  # the objective is ~1e-3 from sums of ~1e6: smaller steps drown in rounding
    for t in np.linspace(130.0, min(0.9 * top, 640.0), 12) + 0.0137:  # where the KL optima lie
        if not away_from_kinks(t, 128, h / 128):
            continue
        g, ok = kl_gradient(pre, d, top, t, 128)
        if not ok:  # only where a cell of Q is empty (sparse far tails)
            folded, plain = np.empty(128), np.empty(128)
            _cells(pre, d, top, t, 128, folded, plain)
            assert (plain == 0).any()
            continue
        fd = (kl_at(pre, d, top, t + h, 128) - kl_at(pre, d, top, t - h, 128)) / (2 * h)
        assert g == pytest.approx(fd, rel=1e-4, abs=1e-10)
        checked += 1
    assert checked >= 4


def test_an_empty_cell_that_mass_enters_has_no_analytic_gradient_and_the_descent_counts_the_fallback():
    counts = np.array([5.0, 0.0, 0.0, 0.0, 7.0, 3.0])
    pre, d, top = prefix(counts, 6.0)
    g, ok = kl_gradient(pre, d, top, 6.0, 3)  # cell [2, 4) is empty and density 7 starts at its right edge
    assert not ok and math.isnan(g)
    out = np.zeros(9)
    refine(pre, d, top, 3, 6, 10, 1e-9, out)
    assert out[7] >= 1  # the first step at t = 6 used a finite difference


SAMPLES = {
    "gauss": lambda r: r.standard_normal(200000),
    "relu": lambda r: np.maximum(r.standard_normal(200000), 0),
    "laplace": lambda r: r.laplace(size=200000),
    "student-t3": lambda r: r.standard_t(3, 200000),
    "bimodal": lambda r: np.concatenate([r.normal(1, 0.2, 100000), r.normal(6, 0.5, 100000)]),
}


def refined(dist):
    h = hist_of(SAMPLES[dist](np.random.default_rng(11)))
    return h, get_method("kl-refine")(h)


@pytest.mark.parametrize("dist", sorted(SAMPLES))
def test_descent_moves_downhill_and_never_lands_above_the_grid_optimum(dist):
    h, value = refined(dist)
    tr = value.trace
    pre, d, top = density(h)
    t0, t = tr["t_grid"] / h.bin_width, float(value) / h.bin_width
    downhill = min(kl_at(pre, d, top, t0 + dt, 128) for dt in (-1e-4, 1e-4) if 1.0 <= t0 + dt <= top)
    assert tr["converged"] and tr["finite_differences"] == 0 and tr["iterations"] >= 1
    if downhill < tr["kl_grid"]:  # the grid optimum is not a minimum of the continuous objective
        assert abs(t - t0) > 1e-3 and tr["iterations"] >= 2  # the parameter moved ...
        assert tr["kl"] < downhill  # ... past the first small step, downhill from the grid optimum
    # otherwise the grid optimum is a kink minimum on the bin edge: the first (one-bin) trial may still
    # find lower ground beyond the kink's neighbourhood, and if it does not, nothing changes
    assert (t != t0 and tr["kl"] < tr["kl_grid"]) or (t == t0 and tr["kl"] == tr["kl_grid"])
    assert tr["kl"] == pytest.approx(naive_kl_of(h, t), rel=1e-9)
    for dt in (-1e-3, 1e-3):  # a local minimum at the optimiser's resolution
        if 1.0 <= t + dt <= top:
            assert kl_at(pre, d, top, t + dt, 128) >= tr["kl"] - 1e-12


def test_the_descent_moves_on_most_distributions():
    moved = [dist for dist in SAMPLES if float(refined(dist)[1]) != refined(dist)[1].trace["t_grid"]]
    assert len(moved) >= 3, moved


def naive_kl_of(h, t):
    _, d, top = density(h)
    counts = d.copy()
    counts[-1] *= top - (d.size - 1)
    return naive.continuous_kl(counts, top, t, 128)


@pytest.mark.parametrize("seed", range(12))
def test_grid_optimum_is_the_best_bin_edge_by_the_twin(seed):
    rng = np.random.default_rng(2000 + seed)
    counts, top, levels = small_case(rng)
    start = int(rng.integers(1, 4))
    pre, d, top = prefix(counts, top)
    out = np.zeros(9)
    refine(pre, d, top, levels, start, 0, 1e-9, out)
    edges = [float(i) for i in range(start, counts.size + 1) if i < top] + [top]
    kls = [naive.continuous_kl(counts, top, t, levels) for t in edges]
    best = min(kls)
    assert out[1] == pytest.approx(best, rel=1e-9, abs=1e-12) or math.isinf(best)
    assert out[0] == max(t for t, k in zip(edges, kls) if k <= best * (1 + 1e-12) + 1e-15)
    assert out[2] == out[0] and out[8] == 1.0  # max_iter 0: no step, trivially converged


def test_iteration_cap_is_reported_as_not_converged():
    h = hist_of(SAMPLES["gauss"](np.random.default_rng(11)))
    tr = get_method("kl-refine")(h, max_iter=1).trace
    assert tr["iterations"] == 1 and not tr["converged"]


@pytest.mark.parametrize("scheme", ["symmetric", "tflite"])
def test_kl_refine_runs_through_calibrate_and_the_trace_survives_json_and_ecal(tmp_path, scheme):
    cal = Calibrator(2048)
    r = np.random.default_rng(3)
    cal.observe("a", r.standard_normal(50000))
    cal.observe("b", np.maximum(r.laplace(size=50000), 0))
    table = cal.compute("kl-refine", scheme=scheme)
    a = table["a"]
    trace = a.params["trace"]
    assert trace["iterations"] >= 1 and trace["kl"] <= trace["kl_grid"]
    if scheme == "tflite":  # one joint record: the step and the zero point were chosen together
        assert trace["zero_point"] == a.zero_point and table["b"].params["trace"]["zero_point"] == -128
    for suffix in (".json", ".ecal"):
        save_table(table, tmp_path / f"t{suffix}")
        assert load_table(tmp_path / f"t{suffix}")["a"].params == a.params


@pytest.mark.parametrize("params,match", [
    ({"max_iter": -1}, r"parameter 'max_iter' must be in \[0, 10000\]"),
    ({"tol": 0.0}, r"parameter 'tol' must be in"),
    ({"num_levels": 1.5}, "must be int"),
    ({"candidates": 0}, r"parameter 'candidates' must be in \[1, 4096\]"),
])
def test_bad_parameters_are_refused(params, match):
    with pytest.raises(InputError, match=match):
        get_method("kl-refine")(hist_of([1.0, 2.0]), **params)


def test_a_histogram_without_nonzero_values_is_refused():
    with pytest.raises(InputError, match="no non-zero finite value"):
        density(hist_of([0.0, 0.0]))


# -- the asymmetric scheme: step continuous, zero point an integer ----------------------
def two_signs(rng):
    out = []
    for _ in range(2):
        n = int(rng.integers(4, 40))
        c = rng.integers(0, 30, n).astype(np.float64) + 1.0
        out.append((c, n - 1 + float(rng.uniform(0.05, 1.0))))
    return out


@pytest.mark.parametrize("seed", range(25))
def test_joint_objective_matches_the_piecewise_integral(seed):
    rng = np.random.default_rng(3000 + seed)
    (pc, pt), (nc, nt) = two_signs(rng)
    ppre, pd, pt = prefix(pc, pt)
    npre, nd, nt = prefix(nc, nt)
    tops = np.array([pt, nt, 1.0, 1.0])
    m_pos = int(rng.integers(1, 255))
    s = float(rng.uniform(max(1.0 / m_pos, 1.0 / (255 - m_pos)), 1.0)) * 1.01
    want = naive.joint_continuous_kl(pc, pt, nc, nt, s, m_pos)
    assert joint_kl(ppre, pd, npre, nd, tops, s, m_pos) == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_joint_gradient_matches_central_differences(seed):
    rng = np.random.default_rng(4000 + seed)
    (pc, pt), (nc, nt) = two_signs(rng)
    ppre, pd, pt = prefix(pc, pt)
    npre, nd, nt = prefix(nc, nt)
    tops = np.array([pt, nt, 1.0, 1.0])
    m_pos = int(rng.integers(20, 235))
    checked = 0
    for s in rng.uniform(1.0 / min(m_pos, 255 - m_pos) + 1e-3, 0.3, 20):
        h = 1e-8
        if not all(abs(k * s - round(k * s)) > 10 * k * h + 1e-12 for k in range(1, 256)):
            continue  # a cell edge k s (or a threshold) within reach of a bin edge: a kink
        g, ok = joint_gradient(ppre, pd, npre, nd, tops, s, m_pos)
        fd = (joint_kl(ppre, pd, npre, nd, tops, s + h, m_pos) - joint_kl(ppre, pd, npre, nd, tops, s - h, m_pos)) / (2 * h)
        assert ok and g == pytest.approx(fd, rel=1e-5, abs=1e-7), (s, g, fd)
        checked += 1
    assert checked >= 3


RANGE_SAMPLES = {
    "gauss": lambda r: r.standard_normal(100000),
    "skewed": lambda r: np.concatenate([r.standard_normal(50000), r.exponential(3.0, 50000)]),
    "relu": lambda r: np.maximum(r.standard_normal(100000), 0),
    "never positive": lambda r: -np.abs(r.laplace(size=100000)),
}


@pytest.mark.parametrize("dist", sorted(RANGE_SAMPLES))
def test_range_descends_from_its_grid_and_keeps_the_integer_zero_point(dist):
    h = hist_of(RANGE_SAMPLES[dist](np.random.default_rng(21)))
    lo, hi = get_method("kl-refine").fit_range(h)
    tr = (hi if isinstance(hi, Traced) else lo).trace
    assert tr["converged"] and tr["kl"] <= tr["kl_grid"] and tr["iterations"] >= 1
    step = (hi - lo) / 255
    assert round(-128 - lo / step) == tr["zero_point"] and -lo / step == pytest.approx(round(-lo / step), abs=1e-6)
    if dist == "relu":
        assert lo == 0.0 and tr["zero_point"] == -128
    if dist == "never positive":
        assert hi == 0.0 and tr["zero_point"] == 127
    if dist in ("gauss", "skewed"):
        assert abs(step - tr["step_grid"]) > 1e-9 and tr["kl"] < tr["kl_grid"]  # the step moved, downhill


def test_tflite_table_entry_carries_one_record_with_its_zero_point():
    cal = Calibrator(2048)
    cal.observe("x", RANGE_SAMPLES["skewed"](np.random.default_rng(2)))
    e = cal.compute("kl-refine", scheme="tflite")["x"]
    assert e.params["trace"]["zero_point"] == e.zero_point
    assert e.params["candidates"] == 128


def test_a_sign_shorter_than_start_bin_keeps_its_whole_range_as_the_floor():
    x = np.maximum(np.random.default_rng(8).standard_normal(100000) * 4, -0.375)  # hard-swish: a tiny negative side
    h = hist_of(x)
    lo, hi = get_method("kl-refine").fit_range(h)
    assert lo <= h.min + 1e-12 and hi > 1.0
