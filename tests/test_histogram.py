"""StreamingHistogram against the np.histogram twin, and its algebra and serialization."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import naive
from edgecal import InputError, StateError, StreamingHistogram


def assert_matches_naive(h: StreamingHistogram, values: np.ndarray) -> None:
    ref = naive.lattice_histogram(values, h.bins)
    assert h.exponent == ref["exponent"]
    np.testing.assert_array_equal(h.positive_counts(), ref["positive"])
    np.testing.assert_array_equal(h.negative_counts(), ref["negative"])
    for key in ("count", "zeros", "nans", "posinf", "neginf", "min", "max"):
        assert getattr(h, key) == ref[key], key


def filled(values, bins=64) -> StreamingHistogram:
    h = StreamingHistogram(bins)
    h.update(values)
    return h


EDGE_CASES = {
    "zeros only": np.zeros(10, np.float32),
    "negative zero": np.array([-0.0, 0.0, -1.0], np.float32),
    "one value": np.array([3.0], np.float32),
    "powers of two land on edges": np.array([0.5, 1.0, 2.0, 4.0, -4.0, 0.25], np.float32),
    "just below a power of two": np.nextafter(np.float32(8), np.float32(0)) * np.ones(3, np.float32),
    "nan and inf": np.array([np.nan, np.inf, -np.inf, 1.0, -2.0, np.nan], np.float32),
    "only non-finite": np.array([np.nan, np.inf, -np.inf], np.float64),
    "subnormals": np.array([1e-45, -1e-45, 1e-40, 3.0], np.float32),
    "float64 subnormals": np.array([5e-324, 1e-310, -2e-308], np.float64),
    "float32 max": np.array([np.finfo(np.float32).max, -1.0], np.float32),
    "float64 max": np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max, 1.0]),
    "tiny then huge": np.array([1e-30, 1e30], np.float64),
    "negative only": -np.arange(1, 100, dtype=np.float32),
    "rare huge outlier": np.concatenate([np.random.default_rng(1).standard_normal(1000), [1e6]]),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("bins", [2, 64, 4096])
def test_edge_cases_match_naive(case, bins):
    values = EDGE_CASES[case]
    assert_matches_naive(filled(values, bins), values)


@pytest.mark.parametrize("seed", range(30))
def test_random_data_matches_naive(seed):
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-20, 20)
    dist = seed % 3
    x = rng.standard_normal(5000) if dist == 0 else rng.laplace(size=5000) if dist == 1 else rng.standard_t(2, 5000)
    x = (x * scale).astype(np.float32 if seed % 2 else np.float64)
    x[rng.random(x.size) < 0.1] = 0.0
    assert_matches_naive(filled(x, 256), x)


@pytest.mark.parametrize(
    "dtype", ["float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool"]
)
def test_every_real_dtype_counts_like_float64(dtype):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if dtype == "bool":
        x = rng.random(1000) < 0.5
    elif info is not None:
        x = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), size=1000, endpoint=True).astype(dtype)
    else:
        x = rng.standard_normal(1000).astype(dtype)
    assert_matches_naive(filled(x, 128), x.astype(np.float64))


def test_layouts_and_shapes_give_the_same_histogram():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((6, 7, 8)).astype(np.float32)
    views = [base, np.asfortranarray(base), base.transpose(2, 0, 1), base[:, ::2, 1:], base[::-1], base[..., 3]]
    for v in views:
        assert_matches_naive(filled(v, 512), np.ascontiguousarray(v))


def test_scalars_and_lists_are_accepted():
    h = filled(2.5, 16)
    h.update([1.0, -1.0])
    assert (h.count, h.min, h.max) == (3, -1.0, 2.5)


def test_large_non_contiguous_input_is_streamed_in_chunks():
    x = np.random.default_rng(2).standard_normal((300, 1000))[:, ::3]  # 100k strided values
    assert_matches_naive(filled(x, 1024), np.ascontiguousarray(x))


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float32, st.integers(0, 300), elements=st.floats(allow_nan=True, allow_infinity=True, width=32)),
    st.data(),
)
def test_observe_whole_equals_merge_of_parts_in_any_order(x, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, x.size), max_size=4)))
    parts = np.split(x, cuts)
    order = data.draw(st.permutations(range(len(parts))))
    whole = filled(x, 32)
    merged = StreamingHistogram(32)
    for i in order:
        merged.merge(filled(parts[i], 32))
    assert merged == whole
    streamed = StreamingHistogram(32)
    for i in reversed(order):
        streamed.update(parts[i])
    assert streamed == whole


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 200), elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_counts_always_add_up(x):
    h = filled(x, 16)
    binned = int(h.abs_counts().sum())
    assert binned + h.zeros + h.nans + h.posinf + h.neginf == h.count == x.size
    assert h.finite == binned + h.zeros


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 100), elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_serialization_round_trips(x):
    h = filled(x, 8)
    back = StreamingHistogram.from_bytes(h.to_bytes())
    assert back == h
    assert_matches_naive(back, x)


def test_occupied_abs_counts_ends_at_last_nonempty_bin():
    h = filled(np.array([0.1, -0.3, 0.0], np.float32), 64)  # R = 0.5, width 1/128
    occ = h.occupied_abs_counts()
    assert occ.size == math.floor(0.3 * 128) + 1 and occ[-1] == 1 and occ.sum() == 2
    assert filled(np.zeros(3), 8).occupied_abs_counts().size == 0


def test_range_amax_and_repr():
    h = filled(np.array([-6.0, 3.0]), 8)
    assert (h.range, h.bin_width, h.amax) == (8.0, 1.0, 6.0)
    assert "count=2" in repr(h)
    empty = StreamingHistogram(8)
    assert (empty.min, empty.max, empty.amax, empty.count) == (None, None, 0.0, 0)


def test_copy_is_independent():
    h = filled([1.0], 8)
    c = h.copy()
    c.update([2.0])
    assert h.count == 1 and c.count == 2


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bins", [0, 1, 3, 100, 2**25, 2.0, "8"])
def test_bins_must_be_a_power_of_two(bins):
    with pytest.raises(InputError, match="power of two"):
        StreamingHistogram(bins)


@pytest.mark.parametrize("bad", [np.array([1 + 2j]), np.array(["a"]), np.array([object()], dtype=object)])
def test_non_real_dtypes_are_refused(bad):
    h = StreamingHistogram(8)
    with pytest.raises(InputError, match="expected a real-valued array"):
        h.update(bad)
    assert h.count == 0


def test_merge_refuses_other_bin_counts_and_types():
    with pytest.raises(InputError, match="8 and 16 bins"):
        StreamingHistogram(8).merge(StreamingHistogram(16))
    with pytest.raises(InputError, match="can only merge"):
        StreamingHistogram(8).merge([1.0])


def test_every_truncation_and_bit_flip_is_detected():
    data = filled(np.array([1.0, -2.0, 0.0, np.nan]), 4).to_bytes()
    for cut in range(len(data)):
        with pytest.raises(StateError):
            StreamingHistogram.from_bytes(data[:cut])
    for pos in range(len(data)):
        broken = bytearray(data)
        broken[pos] ^= 0x10
        with pytest.raises(StateError):
            StreamingHistogram.from_bytes(bytes(broken))


def _resealed(data: bytes, offset: int, fmt: str, value) -> bytes:
    """Change a header field and recompute the CRC, as a buggy writer might."""
    import struct
    import zlib

    body = bytearray(data[:-4])
    struct.pack_into(fmt, body, offset, value)
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def test_inconsistent_but_checksummed_state_is_refused():
    data = filled(np.array([1.0, -2.0]), 4).to_bytes()
    with pytest.raises(StateError, match="schema 7"):
        StreamingHistogram.from_bytes(_resealed(data, 4, "<H", 7))
    with pytest.raises(StateError, match="bins=5"):
        StreamingHistogram.from_bytes(_resealed(data, 8, "<I", 5))
    with pytest.raises(StateError, match="exponent 2000"):
        StreamingHistogram.from_bytes(_resealed(data, 12, "<i", 2000))
    with pytest.raises(StateError, match="do not add up"):
        StreamingHistogram.from_bytes(_resealed(data, 16, "<Q", 99))


@pytest.mark.parametrize("first", [np.array([1e300]), np.array([1e-300]), np.array([3e-39], np.float32)])
def test_float32_batches_after_ranges_float32_cannot_scale_exactly(first):
    """After float64 extremes (or float32 subnormals) the float32 fast path is not exact; results must not change."""
    rng = np.random.default_rng(4)
    later = [rng.standard_normal(1000).astype(np.float32), np.array([np.finfo(np.float32).max, 1e-45], np.float32)]
    for bins in (2, 4096):
        h = filled(first, bins)
        for x in later:
            h.update(x)
        assert_matches_naive(h, np.concatenate([first.astype(np.float64)] + [x.astype(np.float64) for x in later]))
