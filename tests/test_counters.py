"""Compact exact counters: uint32 bins that spill into int64 before they could overflow; old states load."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import naive
import numpy as np
import pytest
from crafted_files import histogram_bytes, state_bytes
from golden_state import golden_batches, golden_calibrator
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecal import Calibrator, StreamingHistogram
from edgecal import histogram as histogram_module

GOLDEN_STATE = Path(__file__).parent / "golden" / "state.ecst"
KIB = 1024


def assert_counters(h: StreamingHistogram, ref: dict) -> None:
    """Every counter of ``h`` equals the naive dict's, compared as Python integers."""
    assert h.exponent == ref["exponent"]
    assert [int(c) for c in h.positive_counts()] == [int(c) for c in ref["positive"]]
    assert [int(c) for c in h.negative_counts()] == [int(c) for c in ref["negative"]]
    for key in ("count", "zeros", "nans", "posinf", "neginf", "min", "max"):
        assert getattr(h, key) == ref[key], key


@pytest.fixture
def lane_max(monkeypatch):
    """Lower the uint32 bins' capacity so a few hundred values reach the spill path."""
    def set_to(value: int) -> None:
        monkeypatch.setattr(histogram_module, "_LANE_MAX", value)
    return set_to


def test_a_histogram_of_8192_bins_takes_64_kib_while_streaming():
    h = StreamingHistogram(8192)
    for seed in range(4):  # growth, zeros, NaN: nothing makes it bigger
        h.update(np.random.default_rng(seed).standard_normal(100_000).astype(np.float32) * 10.0**seed)
    h.update(np.array([0.0, np.nan, -np.inf], np.float32))
    assert h.nbytes <= 64 * KIB + 48  # 2 x 8192 uint32 bins, 4 int64 counters, min and max


def test_hundreds_of_tensors_allocate_about_64_kib_each():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    cal = Calibrator(8192)
    cal.observe("warm", x)  # the first call's one-off allocations stay out of the measure
    tracemalloc.start()
    try:
        for k in range(200):
            cal.observe(f"t{k}", x)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current / 200 <= 66 * KIB, f"{current / 200 / KIB:.1f} KiB per tensor"


@pytest.mark.parametrize("limit", [1, 7, 100])
def test_spilling_into_int64_keeps_every_count_exact(lane_max, limit):
    lane_max(limit)
    rng = np.random.default_rng(limit)
    batches = [rng.standard_normal(int(rng.integers(1, 60))).astype(np.float32) * 4.0**k for k in range(12)]
    batches.append(np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45], np.float32))
    h = StreamingHistogram(32)
    for b in batches:
        h.update(b)
    assert h._wide is not None and h.nbytes > 2 * 32 * 4 + 48  # the spill path ran
    assert_counters(h, naive.lattice_histogram(np.concatenate([b.astype(np.float64) for b in batches]), 32))


def test_the_uint32_bins_spill_before_the_real_limit():
    # bin 2 of 16 (width 0.25 at range 4) holds 2**32 - 3 values; ten more would wrap a uint32
    held = (1 << 32) - 3
    state = state_bytes(16, [("a", 1, histogram_bytes(16, 2, [0, 0, held], [], 0, 0.5, 0.5))])
    cal = Calibrator.from_bytes(state)
    cal.observe("a", np.full(10, 0.5, np.float32))
    h = cal.histogram("a")
    assert int(h.positive_counts()[2]) == held + 10 and h.count == held + 10
    back = Calibrator.from_bytes(cal.to_bytes()).histogram("a")
    assert int(back.positive_counts()[2]) == held + 10 and back == h


def test_a_state_with_counts_beyond_uint32_loads_and_merges_exactly():
    big = (1 << 40) + 3
    a = StreamingHistogram.from_bytes(histogram_bytes(16, 2, [0, big], [5], 2, -0.1, 0.25))
    b = StreamingHistogram.from_bytes(histogram_bytes(16, 4, [0, 0, 0, 7], [1 << 33], 0, -0.5, 3.0))
    want = naive.merge_lattice(_as_naive(a), _as_naive(b))
    assert_counters(a.merge(b), want)
    assert int(a.positive_counts()[0]) == big and int(a.negative_counts()[0]) == (1 << 33) + 5


def _as_naive(h: StreamingHistogram) -> dict:
    """A histogram's counters as a naive dict (for inputs crafted as states, which have no value list)."""
    return {"exponent": h.exponent, "positive": h.positive_counts(), "negative": h.negative_counts(),
            **{k: getattr(h, k) for k in ("count", "zeros", "nans", "posinf", "neginf", "min", "max")}}


values = st.lists(st.one_of(st.floats(-1e6, 1e6, width=32), st.sampled_from([0.0, -0.0, float("nan"), float("inf")])),
                  min_size=1, max_size=80)


@settings(max_examples=60, deadline=None)
@given(values, values, st.integers(1, 40))
def test_merge_with_spills_equals_one_stream_and_the_naive_merge(xs, ys, limit):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(histogram_module, "_LANE_MAX", limit)
        a, b, both = StreamingHistogram(16), StreamingHistogram(16), StreamingHistogram(16)
        x, y = np.array(xs, np.float32), np.array(ys, np.float32)
        a.update(x)
        b.update(y)
        both.update(x)
        both.update(y)
        want = naive.merge_lattice(naive.lattice_histogram(x, 16), naive.lattice_histogram(y, 16))
        assert_counters(a.merge(b), want)
        assert a == both


def test_the_golden_state_of_an_earlier_version_loads_with_every_counter_exact():
    cal = Calibrator.load_state(GOLDEN_STATE)
    batches = golden_batches()
    assert sorted(cal.names()) == sorted(batches)
    for name, arrays in batches.items():
        assert_counters(cal.histogram(name), naive.lattice_histogram(np.concatenate(
            [a.astype(np.float64) for a in arrays]), cal.bins))
        assert cal.samples(name) == len(arrays)
    assert golden_calibrator().to_bytes() == GOLDEN_STATE.read_bytes(), (
        "the state layout changed; if on purpose, version it, keep reading the old one, run scripts/regen_golden.py")
