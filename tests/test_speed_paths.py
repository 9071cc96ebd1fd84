"""The fast paths of the histogram against their naive twins: growth that folds only the occupied
bins and looks ahead for the range, and a young histogram's first batch."""

from __future__ import annotations

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_counters import assert_counters

from edgecal import Calibrator, InputError, StreamingHistogram, lattice_kernels
from edgecal import histogram as histogram_module
from edgecal.lattice_kernels import _fold, _max_finite_abs
from edgecal.methods.kl import kl_divergences, kl_search

SPECIALS = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 1e-40], np.float32)


@pytest.mark.parametrize("dtype", [np.uint32, np.int64])
@pytest.mark.parametrize("k", [1, 3, 6, 40])
def test_fold_of_the_occupied_bins_matches_the_naive_fold(dtype, k):
    rng = np.random.default_rng(k)
    nb, log2b = 64, 6
    tops = (int(rng.integers(0, nb + 1)), int(rng.integers(0, nb + 1)))
    counts = np.zeros(2 * nb, dtype)
    counts[: tops[0]] = rng.integers(0, 1000, tops[0])
    counts[nb : nb + tops[1]] = rng.integers(0, 1000, tops[1])
    want = np.concatenate([naive.fold_counts(counts[:nb], k), naive.fold_counts(counts[nb:], k)])
    _fold(counts, k, log2b, *tops)
    assert [int(c) for c in counts] == [int(c) for c in want]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_max_finite_abs_matches_naive(dtype, seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.standard_normal(50) * 10.0 ** rng.integers(-30, 30), SPECIALS]).astype(dtype)
    rng.shuffle(x)
    start, stop = sorted(int(v) for v in rng.integers(0, x.size, 2))
    assert _max_finite_abs(x, start, stop) == naive.max_finite_abs(x[start:stop])
    assert _max_finite_abs(x, 0, x.size) == naive.max_finite_abs(x)
    assert _max_finite_abs(SPECIALS[2:5].astype(dtype), 0, 3) == 0.0  # NaN and infinities only


def test_growth_across_the_lookahead_window_matches_naive(monkeypatch):
    monkeypatch.setattr(histogram_module, "_LOOKAHEAD", 5)  # many windows in a small array
    x = (np.random.default_rng(3).standard_normal(300) * np.geomspace(1e-20, 1e20, 300)).astype(np.float32)
    x[::40] = SPECIALS[: x[::40].size]
    h = StreamingHistogram(128)
    h.update(x)
    assert_counters(h, naive.lattice_histogram(x, 128))


def test_a_young_histogram_grows_once_per_batch_not_once_per_new_maximum(monkeypatch):
    folds = []
    real = histogram_module._fold
    monkeypatch.setattr(histogram_module, "_fold", lambda *a: folds.append(a[1]) or real(*a))
    x = np.arange(1, 1001, dtype=np.float64)  # a new maximum at every value
    h = StreamingHistogram(8192)
    h.update(x)
    assert len(folds) == 1
    assert_counters(h, naive.lattice_histogram(x, 8192))


@pytest.mark.parametrize("first", [[1.0, 3.0], [0.0, np.nan, 2.5e-3], [1e-45, 0.0], [3e38, -1.0], [0.0, -0.0]])
def test_a_first_float32_batch_is_binned_in_float32_when_its_range_allows(monkeypatch, first):
    converted = []
    real = histogram_module._chunks
    monkeypatch.setattr(histogram_module, "_chunks", lambda *a: converted.append(a[1]) or real(*a))
    x = np.array(first * 700, np.float32)
    h = StreamingHistogram(8192)
    h.update(x)
    biggest = naive.max_finite_abs(x)  # no range, or one below 2**-114, is not exact in float32 arithmetic
    assert converted == ([np.dtype(np.float64)] if biggest < 2.0**-100 else [])
    later = np.array([7.0, -1e-30, 0.0], np.float32)
    h.update(later)
    assert_counters(h, naive.lattice_histogram(np.concatenate([x, later]), 8192))


finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
values = st.lists(st.one_of(finite32, st.sampled_from([0.0, -0.0, float("nan"), float("inf"), float("-inf")])),
                  min_size=1, max_size=60)


@settings(max_examples=80, deadline=None)
@given(st.lists(values, min_size=1, max_size=6), st.sampled_from([2, 16, 8192]))
def test_any_batching_into_any_tensor_order_matches_naive(batches, bins):
    cal = Calibrator(bins)
    for k, b in enumerate(batches):
        cal.observe("a" if k % 2 else "b", np.array(b, np.float32))
    for name, parts in (("b", batches[0::2]), ("a", batches[1::2])):
        if parts:
            assert_counters(cal.histogram(name), naive.lattice_histogram(np.array([v for p in parts for v in p], np.float32), bins))


def run_kernel(kernel, x, start, exp, nb, *extra):
    """Run a fill kernel on fresh counters at lattice exponent ``exp``; every output, comparable with ==."""
    lane, special = np.zeros(2 * nb, np.uint32), np.zeros(4, np.int64)
    ext = np.array([np.inf, -np.inf])
    rng = np.float32(np.inf) if exp >= 128 else np.float32(2.0**exp)
    stop = kernel(x, start, lane, special, ext, np.float32(nb * 2.0**-exp), rng, *extra)
    return stop, lane.tolist(), special.tolist(), ext.tobytes()


anything32 = st.one_of(finite32, st.sampled_from([0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e-45,
                                                  -1e-45, 3.4e38, 2.0, -2.0, 1.9999999]))


@settings(max_examples=300, deadline=None)
@given(st.lists(anything32, min_size=0, max_size=70), st.integers(0, 10), st.integers(-20, 128),
       st.sampled_from([1, 2, 3, 8, 16]))
def test_the_block_kernel_equals_the_per_value_kernel(xs, start, exp, block):
    x = np.array(xs, np.float32)
    start = min(start, x.size)
    nb = 16
    assert run_kernel(lattice_kernels._fill_blocks, x, start, exp, nb, block) == \
        run_kernel(lattice_kernels._fill, x, start, exp, nb, nb)


@pytest.mark.parametrize("block", [3, 64, 2048])
@pytest.mark.parametrize("seed", range(3))
def test_block_path_histograms_match_naive_through_update(monkeypatch, block, seed):
    monkeypatch.setattr(histogram_module, "_BLOCK", block)
    rng = np.random.default_rng(seed)
    batches = [rng.standard_normal(int(rng.integers(1, 9000))).astype(np.float32) * 2.0 ** float(rng.integers(-3, 4))
               for _ in range(6)]
    batches[1] = np.maximum(batches[1], 0.0)  # post-ReLU: half exact zeros
    batches[2][::97] = np.nan
    batches[3][::89] = -0.0
    batches[4][5] = np.inf
    batches[5][::50] = rng.standard_normal(batches[5][::50].size).astype(np.float32) * 1e-41  # subnormals
    h = StreamingHistogram(2048)
    for b in batches:
        h.update(b)
    assert_counters(h, naive.lattice_histogram(np.concatenate(batches), 2048))


@pytest.mark.parametrize("size", [0, 5, 8, 61, 2048])
def test_taking_back_zeros_subtracts_the_zeros_at_k_from_bin_k_mod_8(size):
    rng = np.random.default_rng(size)
    values = np.where(rng.random(size) < 0.5, 0.0, rng.standard_normal(size)).astype(np.float32)
    values[::7] = -0.0
    lane = rng.integers(size, 10 * size + 10, 64).astype(np.uint32)
    want = [int(c) for c in lane]
    for k, v in enumerate(values.tolist()):  # the naive rule, value by value
        want[k % 8] -= v == 0
    lattice_kernels._take_back_zeros(values, lane)
    assert lane.tolist() == want


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_threads_give_the_same_histogram_as_one(monkeypatch, threads):
    monkeypatch.setattr(histogram_module, "_PER_THREAD", 100)  # threads for a few hundred values
    rng = np.random.default_rng(threads)
    batches = [rng.standard_normal(int(rng.integers(150, 900))).astype(np.float32) * 10.0 ** float(k)
               for k in range(-3, 4)]
    batches[1][::31] = np.nan
    batches[2][::17] = 0.0
    batches[3][-1] = -np.inf
    batches.append(rng.standard_normal(700))  # float64
    one, many = Calibrator(256), Calibrator(256, threads=threads)
    for b in batches:
        one.observe("t", b)
        many.observe("t", b)
    assert many.to_bytes() == one.to_bytes()
    assert_counters(many.histogram("t"), naive.lattice_histogram(np.concatenate(
        [b.astype(np.float64) for b in batches]), 256))


def test_threads_split_big_batches_only(monkeypatch):
    calls = []
    real = histogram_module.StreamingHistogram._ingest_parallel
    monkeypatch.setattr(histogram_module.StreamingHistogram, "_ingest_parallel",
                        lambda self, flat, parts: calls.append((flat.size, parts)) or real(self, flat, parts))
    h = StreamingHistogram(64)
    h.update(np.ones(2 * histogram_module._PER_THREAD - 1, np.float32), threads=4)  # too small to split
    h.update(np.ones(3 * histogram_module._PER_THREAD, np.float32), threads=4)  # three slices, not four
    assert calls == [(3 * histogram_module._PER_THREAD, 3)]
    assert h.count == 5 * histogram_module._PER_THREAD - 1 == h.positive_counts().sum()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_threads_must_be_a_positive_integer(bad):
    with pytest.raises(InputError, match=r"threads must be a positive integer, found"):
        Calibrator(threads=bad)
    with pytest.raises(InputError, match=r"threads must be a positive integer, found"):
        StreamingHistogram(8).update(np.ones(3), threads=bad)


def full_search(counts: np.ndarray, levels: int, start: int) -> int:
    """The winner by definition: the last smallest of every candidate's KL (no early give-up)."""
    d = kl_divergences(counts, levels, start)
    return min(start, counts.size) + int(np.flatnonzero(d == d.min())[-1])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=90), st.integers(1, 9), st.integers(1, 40))
def test_kl_search_with_its_cutoff_picks_the_full_searchs_winner(counts, levels, start):
    c = np.array(counts, np.float64)
    if not c.any():
        c[-1] = 1.0
    assert kl_search(c, levels, start) == full_search(c, levels, start)


@pytest.mark.parametrize("kind", ["gaussian", "relu", "laplace", "uniform", "two spikes"])
@pytest.mark.parametrize("bins", [2048, 8192])
def test_kl_search_with_its_cutoff_matches_the_full_search_on_real_shapes(kind, bins):
    rng = np.random.default_rng(bins)
    x = {"gaussian": rng.standard_normal(200_000), "relu": np.maximum(rng.standard_normal(200_000), 0),
         "laplace": rng.laplace(size=200_000), "uniform": rng.random(200_000),
         "two spikes": np.repeat([0.1, 3.0], 1000)}[kind]
    h = StreamingHistogram(bins)
    h.update(x.astype(np.float32))
    counts = h.occupied_abs_counts()
    for levels in (128, 256):
        assert kl_search(counts, levels, 128) == full_search(counts, levels, 128)


def test_a_read_only_float32_batch_takes_the_block_path_with_the_same_result():
    x = np.random.default_rng(9).standard_normal(5000).astype(np.float32)
    frozen = np.frombuffer(x.tobytes(), np.float32)  # read-only, as arrays from sockets and files often are
    a, b = StreamingHistogram(256), StreamingHistogram(256)
    a.update(frozen)
    b.update(x)
    assert not frozen.flags.writeable and a == b
    assert_counters(a, naive.lattice_histogram(x, 256))
