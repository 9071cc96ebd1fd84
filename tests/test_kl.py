"""The O(n*L) KL search against the literal O(n^2) twin in naive.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

import naive
from edgecal import InputError
from edgecal.methods import kl_divergences, kl_search


def assert_same_choice(counts, num_levels=128, start_bin=128):
    """Same kept-bin count as the twin, or (float64 near-tie) a KL within 1e-12 of its minimum."""
    fast = kl_search(counts, num_levels, start_bin)
    slow, best = naive.kl_search(counts, num_levels, start_bin)
    if fast != slow:
        at_fast = naive.kl_divergence_of_candidate(counts, fast, num_levels)
        assert at_fast <= best + 1e-12 * abs(best), (fast, slow, at_fast, best)
    return fast


def lognormal_counts(rng, n):
    return np.round(rng.lognormal(3, 1.5, n) * (rng.random(n) < 0.8)).astype(np.int64)


EDGE_CASES = {
    "one spike": np.eye(1, 300, 150, dtype=np.int64)[0] * 1000,
    "everything in bin 0": np.eye(1, 300, 0, dtype=np.int64)[0] * 7,
    "everything in the last bin": np.eye(1, 300, 299, dtype=np.int64)[0] * 7,
    "empty bins between": np.tile([5, 0, 0, 3], 80),
    "equal counts (ties)": np.full(400, 9),
    "runs of equal counts": np.repeat([4, 4, 9, 9, 1, 1, 6, 6], 40),
    "uniform with zero head": np.concatenate([np.zeros(100, np.int64), np.full(300, 2)]),
    "10 samples": np.bincount([3, 17, 17, 130, 131, 200, 250, 251, 255, 299], minlength=300),
    "ReLU with half zeros in bin 0": np.concatenate([[50000], np.round(2e4 * np.exp(-np.arange(1, 600) / 80.0))]).astype(np.int64),
    "rare huge outliers": np.concatenate([np.round(1e5 * np.exp(-np.arange(400) / 30.0)), np.zeros(1500), [1, 0, 2]]).astype(np.int64),
    "shorter than start_bin": np.array([3, 1, 4, 1, 5, 9, 2, 6]),
    "single bin": np.array([42]),
    "float counts": np.abs(np.sin(np.arange(500))) * 10.5,
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("levels", [128, 256, 7])
def test_edge_cases_match_naive(case, levels):
    assert_same_choice(EDGE_CASES[case], levels, 128)


@pytest.mark.parametrize("seed", range(210))
def test_random_histograms_match_naive(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 700))
    kind = seed % 4
    if kind == 0:
        counts = lognormal_counts(rng, n)
    elif kind == 1:
        x = np.abs(rng.standard_t(3, 20000))
        counts = np.histogram(x, bins=n, range=(0, x.max()))[0]
    elif kind == 2:
        counts = rng.integers(0, 4, n)  # sparse, many ties
    else:
        counts = rng.poisson(rng.uniform(0, 50), n)
    if not counts.any():
        counts[rng.integers(n)] = 1
    levels = int(rng.choice([128, 256, 16, 3]))
    start = int(rng.integers(1, 200))
    assert_same_choice(counts, levels, start)


def test_divergences_match_naive_per_candidate():
    rng = np.random.default_rng(11)
    counts = lognormal_counts(rng, 300)
    fast = kl_divergences(counts, 128, 128)
    slow = np.array([naive.kl_divergence_of_candidate(counts, i, 128) for i in range(128, 301)])
    assert np.array_equal(np.isinf(fast), np.isinf(slow))
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=1e-9, atol=1e-13)


def test_hand_computed_divergences():
    # counts 5,3,1,0,0,0,0,1 with 2 levels. Kept 2: P=[5,5]/10, Q=[5,3]/8.
    # Kept 3: P=[5,3,2]/10, Q=[4,4,1]/9. Kept 8: P=counts/10, Q=[3,3,3,0,0,0,0,1]/10.
    # Kept 4..7: last kept bin empty with outliers beyond -> rejected.
    counts = np.array([5, 3, 1, 0, 0, 0, 0, 1])
    d = kl_divergences(counts, num_levels=2, start_bin=2)
    want = [
        0.5 * math.log(0.5 / 0.625) + 0.5 * math.log(0.5 / 0.375),
        0.5 * math.log(0.5 / (4 / 9)) + 0.3 * math.log(0.3 / (4 / 9)) + 0.2 * math.log(0.2 / (1 / 9)),
        math.inf, math.inf, math.inf, math.inf,
        0.5 * math.log(5 / 3) + 0.1 * math.log(1 / 3),
    ]
    np.testing.assert_allclose(d, want, rtol=1e-12)
    assert kl_search(counts, num_levels=2, start_bin=2) == 2


def test_ties_go_to_the_largest_threshold():
    # [3, 3, 0, 0] with 2 levels: keeping 2, 3 or 4 bins reproduces P exactly (KL 0).
    counts = np.array([3, 3, 0, 0])
    assert [naive.kl_divergence_of_candidate(counts, i, 2) for i in (2, 3, 4)] == [0, 0, 0]
    assert kl_search(counts, num_levels=2, start_bin=2) == 4
    assert kl_search(counts[:3], num_levels=2, start_bin=2) == 3


@pytest.mark.parametrize(
    "counts, msg",
    [
        ([], "non-empty 1-D"),
        ([[1, 2]], "non-empty 1-D"),
        ([0, 0, 0], "all zero"),
        ([1, -1], "non-negative"),
        ([1, np.nan], "non-negative"),
        (["a"], "real numbers"),
    ],
)
def test_bad_counts_are_refused(counts, msg):
    with pytest.raises(InputError, match=msg):
        kl_search(np.array(counts))


@pytest.mark.parametrize("kw, msg", [({"num_levels": 0}, "num_levels"), ({"start_bin": 0}, "start_bin"), ({"num_levels": 2.5}, "num_levels")])
def test_bad_parameters_are_refused(kw, msg):
    with pytest.raises(InputError, match=msg):
        kl_search(np.ones(10), **kw)
