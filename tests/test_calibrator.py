"""Calibrator: observe/compute, degenerate tensors, state files and merging."""

from __future__ import annotations

import logging
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecal import Calibrator, InputError, StateError, StreamingHistogram, UnknownNameError

RNG = np.random.default_rng(0)


def test_compute_gives_symmetric_int8_entries_with_provenance():
    cal = Calibrator(bins=1024, model_hash="abc")
    x = RNG.standard_normal((4, 100)).astype(np.float32)
    for row in x:
        cal.observe("a", row)
    cal.observe_many({"b": np.array([1.0, -3.0, 0.0]), "a": np.array([0.5])})
    table = cal.compute("minmax")
    a = table["a"]
    assert a.amax == float(np.abs(x).max()) and a.scale == a.amax / 127 and a.zero_point == 0 and a.dtype == "int8"
    assert (a.stats.samples, a.stats.count) == (5, 401)
    assert (table["b"].stats.zeros, table["b"].stats.min, table["b"].stats.max) == (1, -3.0, 1.0)
    assert table.model_hash == "abc" and list(table) == ["a", "b"]


def test_compute_defaults_to_mse_and_records_parameters():
    cal = Calibrator()
    cal.observe("t", RNG.laplace(size=50000))
    entry = cal.compute()["t"]
    assert entry.method == "mse" and entry.params == {"candidates": 512, "clip_weight": 1.0}
    assert 0 < entry.amax < cal.histogram("t").amax  # Laplace tails get clipped
    assert cal.compute("percentile", percentile=99.0)["t"].params == {"percentile": 99.0}


def test_all_zero_tensor_gets_the_documented_safe_scale():
    cal = Calibrator()
    cal.observe("z", np.zeros((3, 3)))
    e = cal.compute()["z"]
    assert (e.amax, e.scale, e.flags) == (1.0, 1.0 / 127, ("all_zero",))


def test_constant_tensor_is_represented_exactly():
    cal = Calibrator()
    cal.observe("c", np.full(10, -2.5, np.float32))
    e = cal.compute()["c"]
    assert e.amax == 2.5 and e.flags == ("constant",)


def test_nonfinite_values_are_excluded_counted_flagged_and_warned(caplog):
    cal = Calibrator()
    cal.observe("n", np.array([1.0, np.nan, np.inf, -np.inf, -2.0, np.nan]))
    with caplog.at_level(logging.WARNING, logger="edgecal"):
        e = cal.compute("minmax")["n"]
    assert e.amax == 2.0 and "nonfinite" in e.flags
    assert (e.stats.nans, e.stats.posinf, e.stats.neginf, e.stats.count) == (2, 1, 1, 6)
    assert "'n': 4 of 6 values are not finite" in caplog.text


def test_tiny_values_keep_a_normal_float32_scale():
    cal = Calibrator()
    cal.observe("tiny", np.array([1e-40, -3e-40]))
    e = cal.compute("minmax")["tiny"]
    assert e.scale >= np.finfo(np.float32).tiny and "fallback" in e.flags


def test_method_that_returns_no_threshold_falls_back_to_max(caplog, monkeypatch):
    from edgecal.methods import registry

    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    registry.register("broken-for-test")(lambda hist: 0.0)
    cal = Calibrator()
    cal.observe("t", np.array([1.0, 4.0]))
    with caplog.at_level(logging.WARNING, logger="edgecal"):
        e = cal.compute("broken-for-test")["t"]
    assert e.amax == 4.0 and e.flags == ("fallback",) and "gave threshold 0.0" in caplog.text


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, array, msg",
    [
        ("e", np.zeros((0, 3)), r"tensor 'e': expected a non-empty array, found shape \(0, 3\)"),
        ("c", np.array([1j]), r"tensor 'c': expected a real-valued array .* found dtype complex128"),
        ("o", np.array([None]), r"tensor 'o': .* found dtype object"),
        ("", np.ones(2), "tensor name must be"),
        ("a\nb", np.ones(2), "tensor name must be"),
    ],
)
def test_bad_observations_are_refused_and_leave_no_trace(name, array, msg):
    cal = Calibrator()
    with pytest.raises(InputError, match=msg):
        cal.observe(name, array)
    assert cal.names() == []


def test_all_nan_tensor_is_an_error_at_compute():
    cal = Calibrator()
    cal.observe("ok", np.ones(3))
    cal.observe("bad", np.full(4, np.nan))
    with pytest.raises(InputError, match=r"tensor 'bad': no finite values \(4 NaN, 0 \+Inf, 0 -Inf\)"):
        cal.compute()


def test_compute_errors():
    with pytest.raises(InputError, match="no tensors observed"):
        Calibrator().compute()
    cal = Calibrator()
    cal.observe("a", np.ones(3))
    with pytest.raises(UnknownNameError, match="unknown method 'nope'"):
        cal.compute("nope")
    with pytest.raises(InputError, match="tensor 'zz' has not been observed; observed: a"):
        cal.compute(names=["zz"])
    with pytest.raises(InputError, match="power of two"):
        Calibrator(bins=1000)


# -- merge and state -----------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 50), st.integers(0, 2**31)), min_size=1, max_size=8), st.data())
def test_merge_of_split_streams_equals_one_stream(batches, data):
    arrays = [(n, np.random.default_rng(s).standard_normal(k)) for n, k, s in batches]
    one = Calibrator(bins=64)
    for name, x in arrays:
        one.observe(name, x)
    split = data.draw(st.integers(0, len(arrays)))
    left, right = Calibrator(bins=64), Calibrator(bins=64)
    for name, x in arrays[:split]:
        left.observe(name, x)
    for name, x in arrays[split:]:
        right.observe(name, x)
    merged = left.merge(right)
    for name in one.names():
        assert merged.histogram(name) == one.histogram(name)
        assert merged.samples(name) == one.samples(name)
    assert list(merged.compute("minmax").values()) == list(one.compute("minmax").values())


def test_merge_refusals():
    a, b = Calibrator(bins=64), Calibrator(bins=128)
    with pytest.raises(InputError, match="64 and 128 bins"):
        a.merge(b)
    with pytest.raises(InputError, match="can only merge a Calibrator"):
        a.merge(StreamingHistogram(64))
    c, d = Calibrator(model_hash="m1"), Calibrator(model_hash="m2")
    with pytest.raises(InputError, match="different models: m1 and m2"):
        c.merge(d)
    e, f = Calibrator(), Calibrator()
    e.consumed.add("file-1")
    f.consumed.add("file-1")
    with pytest.raises(InputError, match="would count it twice"):
        e.merge(f)


def test_state_round_trip(tmp_path):
    cal = Calibrator(bins=256, model_hash="h")
    cal.observe("x", RNG.standard_normal(1000))
    cal.observe("y", np.array([np.nan, 2.0]))
    cal.consumed.add("some-input")
    path = tmp_path / "s.ecst"
    cal.save_state(path)
    back = Calibrator.load_state(path)
    assert back == cal and back.consumed == {"some-input"} and back.model_hash == "h"
    assert back.compute("minmax").model_hash == "h"
    assert back.samples("x") == 1 and back.stats("y").nans == 1


def _small_state() -> bytes:
    cal = Calibrator(bins=4)
    cal.observe("x", np.array([1.0, -2.0, 0.0]))
    return cal.to_bytes()


def test_every_truncation_and_flipped_byte_of_a_state_is_refused():
    data = _small_state()
    for cut in range(len(data)):
        with pytest.raises(StateError):
            Calibrator.from_bytes(data[:cut])
    for pos in range(len(data)):
        broken = bytearray(data)
        broken[pos] ^= 0x01
        with pytest.raises(StateError):
            Calibrator.from_bytes(bytes(broken))


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_incompatible_or_inconsistent_states_are_refused(tmp_path):
    data = bytearray(_small_state()[:-4])
    struct.pack_into("<H", data, 4, 9)
    with pytest.raises(StateError, match="state schema 9 is not supported"):
        Calibrator.from_bytes(_reseal(bytes(data)))
    data = bytearray(_small_state()[:-4])
    struct.pack_into("<I", data, 8, 3)
    with pytest.raises(StateError, match="header is corrupt"):
        Calibrator.from_bytes(_reseal(bytes(data)))
    data = bytearray(_small_state()[:-4])
    struct.pack_into("<I", data, 12, 2)
    with pytest.raises(StateError, match="header says 2"):
        Calibrator.from_bytes(_reseal(bytes(data)))
    head = _small_state()[:20]
    with pytest.raises(StateError, match="payload is corrupt"):
        Calibrator.from_bytes(_reseal(head[:16] + struct.pack("<I", 5) + b"xxxxx"))
    (tmp_path / "s").write_bytes(b"ECSTjunk")
    with pytest.raises(StateError, match="s: state is truncated"):
        Calibrator.load_state(tmp_path / "s")
    with pytest.raises(InputError, match="cannot read state"):
        Calibrator.load_state(tmp_path / "missing")


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda s: "\n" not in s),
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=40),
        max_size=4,
    ),
    st.sets(st.text(max_size=10), max_size=3),
    st.one_of(st.none(), st.text(max_size=8)),
)
def test_state_bytes_round_trip_for_any_content(tensors, consumed, model_hash):
    cal = Calibrator(bins=16, model_hash=model_hash)
    for name, values in tensors.items():
        cal.observe(name, np.array(values))
    cal.consumed |= consumed
    back = Calibrator.from_bytes(cal.to_bytes())
    assert back == cal and back.names() == cal.names() and back.consumed == cal.consumed
    for name in cal.names():
        assert back.stats(name) == cal.stats(name)


def test_a_bad_chunk_leaves_the_tensor_as_it_was():
    cal = Calibrator(bins=64)
    cal.observe("t", np.arange(5.0))
    before = cal.to_bytes()
    with pytest.raises(InputError, match="tensor 't': expected a real-valued array"):
        cal.observe_chunks("t", [np.ones(10), np.array(["x"])])
    assert cal.to_bytes() == before
    cal.observe_chunks("t", [np.ones(10), np.zeros(2)])
    assert (cal.samples("t"), cal.stats("t").count, cal.stats("t").zeros) == (2, 17, 3)
    with pytest.raises(InputError, match="tensor 'u': expected a non-empty array"):
        cal.observe_chunks("u", [np.zeros(0)])
    assert cal.names() == ["t"]
