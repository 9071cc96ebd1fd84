"""Staging of small arrays: a staged calibrator is bit-identical to an unstaged one, whatever is read."""

from __future__ import annotations

import copy
import pickle
import tracemalloc

import naive
import numpy as np
import pytest

from edgecal import Calibrator, InputError, StreamingHistogram
from edgecal import staging
from edgecal.staging import STAGE_MAX_VALUES, StagingBuffer, _gather, _shares

BINS = 1024


@pytest.fixture(autouse=True)
def stage_every_small_array(monkeypatch):
    """Stage a small array however many tensors share the block, so small blocks flush often; the rule that
    stages an array only while the block holds two of it per tensor has its own test."""
    monkeypatch.setattr(staging, "ROUNDS_PER_FLUSH", 0)
    monkeypatch.setattr(staging, "ROUNDS_WANTED", 1 << 40)  # and make every block its full capacity at once
SIZES = (1, 2, 3, 7, 100, 1024, 4097, STAGE_MAX_VALUES, STAGE_MAX_VALUES + 1)


def _values(rng: np.random.Generator, size: int, dtype: type, step: int) -> np.ndarray:
    """Normal values whose scale grows over the stream (tiny to huge), with zeros, -0.0, NaN and Inf sprinkled in."""
    exponent = -40 + step // 4 if dtype is np.float32 else -300 + step
    x = rng.standard_normal(size) * 2.0 ** min(exponent, 120)
    for special in (0.0, -0.0, np.nan, np.inf, -np.inf):
        if rng.random() < 0.1:
            x[rng.integers(size)] = special
    return x.astype(dtype)


def random_stream(seed: int, steps: int = 400, tensors: int = 30) -> list[tuple[str, np.ndarray]]:
    """(name, array) pairs: many tensors in turn, sizes 1 to past the staging threshold, float32 and float64,
    2-D and strided arrays, integer arrays, and one tensor first seen at the end."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(steps):
        size = int(rng.choice(SIZES, p=[0.1, 0.1, 0.1, 0.1, 0.2, 0.25, 0.07, 0.04, 0.04]))
        dtype = np.float32 if rng.random() < 0.7 else np.float64
        x = _values(rng, size, dtype, step)
        shape = rng.random()
        if shape < 0.1 and size % 4 == 0:
            x = x.reshape(4, -1)
        elif shape < 0.15 and size > 1:
            x = x[::2]  # not C-contiguous: binned at once
        elif shape < 0.2:
            x = np.clip(np.nan_to_num(x), -1000, 1000).astype(np.int16)  # not a float: binned at once
        out.append((f"t{rng.integers(tensors)}", x))
    out.append(("late", np.array([3.5, -0.0], np.float32)))
    return out


def fed(stream, **kwargs) -> Calibrator:
    cal = Calibrator(BINS, **kwargs)
    for name, x in stream:
        cal.observe(name, x)
    return cal


def entries(table) -> list:
    return [table[name] for name in table]


@pytest.fixture(scope="module")
def stream():
    return random_stream(1)


@pytest.fixture(scope="module")
def unstaged(stream):
    return fed(stream, stage_bytes=0)


@pytest.mark.parametrize("stage_bytes", [64, 5000, 1 << 16, 4 << 20])
def test_staged_state_is_bit_identical_to_unstaged(stream, unstaged, stage_bytes):
    cal = fed(stream, stage_bytes=stage_bytes)
    assert cal.to_bytes() == unstaged.to_bytes()
    assert cal.names() == unstaged.names()
    for name in unstaged.names():
        assert cal.histogram(name).to_bytes() == unstaged.histogram(name).to_bytes(), name
        assert cal.samples(name) == unstaged.samples(name)


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse", "kl"])
def test_staged_tables_equal_unstaged(stream, unstaged, method):
    cal = fed(stream, stage_bytes=5000)
    names = [n for n in unstaged.names() if unstaged.histogram(n).finite]
    assert entries(cal.compute(method, names)) == entries(unstaged.compute(method, names))
    assert entries(cal.compute(method, names, scheme="tflite")) == entries(unstaged.compute(method, names, scheme="tflite"))


def test_staged_histograms_equal_the_naive_twin(stream):
    cal = fed(stream, stage_bytes=5000)
    values: dict[str, list[np.ndarray]] = {}
    for name, x in stream:
        values.setdefault(name, []).append(np.asarray(x, np.float64).ravel())
    for name, parts in values.items():
        h, ref = cal.histogram(name), naive.lattice_histogram(np.concatenate(parts), BINS)
        assert h.exponent == ref["exponent"], name
        np.testing.assert_array_equal(h.positive_counts(), ref["positive"])
        np.testing.assert_array_equal(h.negative_counts(), ref["negative"])
        for key in ("count", "zeros", "nans", "posinf", "neginf", "min", "max"):
            assert getattr(h, key) == ref[key], (name, key)


def test_many_flushes_happen_and_the_block_never_exceeds_stage_bytes(stream):
    cal = Calibrator(BINS, stage_bytes=5003)
    flushes, flush = [], cal._stage.flush
    cal._stage.flush = lambda threads=1: flushes.append(cal._stage.staged_values) or flush(threads)  # type: ignore[method-assign]
    for name, x in stream:
        cal.observe(name, x)
        assert cal._stage.nbytes <= 5003 and cal._stage._used <= 5003
    assert cal._stage.nbytes == 5000  # rounded down to whole float64 values
    assert len(flushes) > 20 and max(flushes) <= 5000 // 4


def test_no_block_until_a_tensor_gets_a_second_small_float_array():
    cal = Calibrator(BINS)
    cal.observe("big", np.ones(STAGE_MAX_VALUES + 1, np.float32))
    cal.observe("ints", np.arange(10, dtype=np.int32))
    cal.observe("strided", np.arange(20.0)[::2])
    cal.observe("small", np.ones(10, np.float32))  # a tensor's first array: binned at once
    assert cal._stage.nbytes == 0 and cal._stage.staged_values == 0
    cal.observe("small", np.ones(10, np.float32))
    assert cal._stage.nbytes == cal.stage_bytes == 8 << 20 and cal._stage.staged_values == 10


def test_a_flush_gathers_through_a_quarter_of_the_block():
    cal = Calibrator(BINS, stage_bytes=1 << 20)
    x = np.random.default_rng(4).standard_normal(1024).astype(np.float32)
    for k in range(250):  # 1000 KiB staged, all for one tensor but a few
        cal.observe("a" if k % 50 else f"b{k}", x)
    fed([("a", x)]).flush()  # kernels loaded (or compiled) before memory is traced
    tracemalloc.start()
    cal.flush()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert cal.histogram("a").count == 245 * 1024
    assert peak < (1 << 18) + x.nbytes + (64 << 10)  # the scratch (a quarter of the block and one array), the index


def test_arrays_bigger_than_the_block_go_straight_in():
    cal = Calibrator(BINS, stage_bytes=64)
    for _ in range(2):
        cal.observe("a", np.ones(17, np.float32))  # 68 bytes
        cal.observe("b", np.ones(9, np.float64))  # 72 bytes
    assert cal._stage.nbytes == 0
    assert cal.histogram("a").count == 34 and cal.histogram("b").count == 18


def test_stage_bytes_zero_never_stages():
    cal = Calibrator(BINS, stage_bytes=0)
    cal.observe("a", np.ones(1, np.float32))
    cal.observe("a", np.ones(1, np.float32))
    assert cal.stage_bytes == 0 and cal._stage.nbytes == 0 and cal._tensors["a"].count == 2


def test_later_changes_to_an_observed_array_do_not_reach_the_histogram():
    x = np.array([1.0, -2.0, 3.0], np.float32)
    cal = Calibrator(BINS)
    cal.observe("a", x)
    cal.observe("a", x)
    assert cal._stage.staged_values == 3
    x[:] = 1000.0
    ref = Calibrator(BINS, stage_bytes=0)
    ref.observe("a", np.array([1.0, -2.0, 3.0] * 2, np.float32))
    assert cal.histogram("a") == ref.histogram("a")


# -- every read sees the staged values --------------------------------------------------------------
def _pending(stream) -> Calibrator:
    cal = fed(stream[:60])
    assert cal._stage.staged_values > 0
    return cal


READS = {
    "histogram": lambda cal: [cal.histogram(n).to_bytes() for n in cal.names()],
    "stats": lambda cal: [cal.stats(n) for n in cal.names()],
    "samples": lambda cal: [cal.samples(n) for n in cal.names()],
    "names": lambda cal: cal.names(),
    "compute": lambda cal: entries(cal.compute("minmax", [n for n in cal.names() if cal.histogram(n).finite])),
    "to_bytes": lambda cal: cal.to_bytes(),
    "repr": repr,
    "merged into another": lambda cal: Calibrator(BINS, stage_bytes=0).merge(cal).to_bytes(),
    "merging another in": lambda cal: cal.merge(fed([("t1", np.ones(3))], stage_bytes=0)).to_bytes(),
    "deepcopy": lambda cal: copy.deepcopy(cal).to_bytes(),
    "pickle": lambda cal: pickle.loads(pickle.dumps(cal)).to_bytes(),
}


@pytest.mark.parametrize("read", READS, ids=list(READS))
def test_every_read_sees_the_staged_values(stream, read):
    want = READS[read](fed(stream[:60], stage_bytes=0))
    assert READS[read](_pending(stream)) == want


def test_equality_sees_the_staged_values(stream):
    assert _pending(stream) == fed(stream[:60], stage_bytes=0)
    assert _pending(stream) != fed(stream[:59], stage_bytes=0)


def test_save_state_holds_the_staged_values(stream, tmp_path):
    _pending(stream).save_state(tmp_path / "staged.ecst")
    fed(stream[:60], stage_bytes=0).save_state(tmp_path / "direct.ecst")
    assert (tmp_path / "staged.ecst").read_bytes() == (tmp_path / "direct.ecst").read_bytes()


def test_copies_get_an_empty_block_of_the_same_size(stream):
    cal = _pending(stream)
    twin = copy.deepcopy(cal)
    assert twin._stage.staged_values == 0 and twin._stage.nbytes == 0 and twin.stage_bytes == cal.stage_bytes
    name = cal.names()[0]
    twin.observe(name, np.ones(4, np.float32))  # the copy stages on its own, with its own lock
    assert twin._stage.staged_values == 4 and twin.histogram(name).count == cal.histogram(name).count + 4


def test_a_buffer_holding_values_refuses_to_be_copied():
    stage = StagingBuffer(64)
    stage.stage(StreamingHistogram(16), np.ones(2, np.float32))
    with pytest.raises(RuntimeError, match="flush it first"):
        copy.deepcopy(stage)


# -- errors -------------------------------------------------------------------------------------------
BAD = {
    "empty": ("a", np.zeros(0, np.float32)),
    "complex": ("a", np.ones(3, np.complex64)),
    "strings": ("a", np.array(["x", "y"])),
    "empty name": ("", np.ones(3, np.float32)),
    "name with a newline": ("a\nb", np.ones(3, np.float32)),
    "name not a string": (3, np.ones(3, np.float32)),
}


@pytest.mark.parametrize("bad", BAD, ids=list(BAD))
def test_bad_input_raises_as_unstaged_and_changes_nothing(stream, bad):
    name, x = BAD[bad]
    with pytest.raises(InputError) as direct:
        Calibrator(BINS, stage_bytes=0).observe(name, x)
    cal = _pending(stream)
    staged_before = cal._stage.staged_values
    with pytest.raises(InputError) as staged:
        cal.observe(name, x)
    assert str(staged.value) == str(direct.value)
    assert cal._stage.staged_values == staged_before
    assert cal.to_bytes() == fed(stream[:60], stage_bytes=0).to_bytes()


@pytest.mark.parametrize("value", [-1, 1.5, True, "4M"])
def test_stage_bytes_must_be_a_non_negative_integer(value):
    with pytest.raises(InputError, match=f"stage_bytes must be a non-negative integer, found {value!r}"):
        Calibrator(BINS, stage_bytes=value)


# -- threads ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage_bytes", [5000, 4 << 20])
def test_a_flush_over_two_threads_equals_one_thread(stream, unstaged, stage_bytes):
    cal = fed(stream, stage_bytes=stage_bytes, threads=2)
    assert cal.to_bytes() == fed(stream, stage_bytes=stage_bytes, threads=1).to_bytes() == unstaged.to_bytes()


def test_one_tensor_staged_with_two_threads_equals_one_thread():
    x = np.random.default_rng(2).standard_normal(1 << 12).astype(np.float32)
    one, two = Calibrator(BINS, threads=1), Calibrator(BINS, threads=2)
    for cal in (one, two):
        for _ in range(200):  # 3.2 MiB staged, binned in updates of 256K values or more
            cal.observe("a", x)
    assert one == two and two.histogram("a").count == 200 * x.size


def test_shares_keep_each_histogram_whole_and_balance_the_values():
    hists = [StreamingHistogram(16) for _ in range(7)]
    sizes = [10, 10, 10, 10, 50, 5, 5]
    groups = [(h, np.ones(n, np.float32)) for h, n in zip(hists, sizes)]
    shares = _shares(groups, 2)
    assert [id(g) for share in shares for g in share] == [id(g) for g in groups]  # every group once, in order
    assert [sum(g[1].size for g in share) for share in shares] == [40, 60]
    assert _shares(groups[:1], 4) == [groups[:1]]
    assert len(_shares(groups, 3)) == 3


# -- the gather kernel -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_equals_the_naive_twin(dtype):
    rng = np.random.default_rng(3)
    src = rng.standard_normal(5000).astype(dtype)
    src[[0, 17, 4999]] = [-0.0, np.nan, np.inf]
    counts = rng.integers(1, 300, size=40)
    firsts = np.array([rng.integers(0, src.size - c + 1) for c in counts])  # in any order, overlapping
    firsts[:3], counts[:3] = (0, 4999, 17), (1, 1, 5)
    dst = np.full(counts.sum() + 3, 7.0, dtype)
    _gather(src, firsts.astype(np.int64), counts.astype(np.int64), dst)
    want = naive.gather(src, firsts, counts)
    assert dst[: want.size].tobytes() == want.tobytes()  # bit for bit: -0.0 and NaN included
    assert (dst[want.size :] == 7.0).all()


def test_a_tensors_first_array_is_binned_at_once():
    cal = Calibrator(BINS)
    cal.observe_many({"a": np.ones(3, np.float32), "b": np.ones(2)})
    assert cal._stage.staged_values == 0 and cal._tensors["a"].count == 3 and cal._tensors["b"].count == 2
    cal.observe_many({"a": np.ones(3, np.float32), "b": np.ones(2)})
    assert cal._stage.staged_values == 5 and cal._tensors["a"].count == 3 and cal._tensors["b"].count == 2


def test_changing_the_block_size_bins_what_is_staged_first():
    rng = np.random.default_rng(11)
    arrays = [(f"t{i % 7}", rng.standard_normal(50).astype(np.float32)) for i in range(60)]
    staged, direct = Calibrator(256, stage_bytes=1 << 16), Calibrator(256, stage_bytes=0)
    for k, (name, x) in enumerate(arrays):
        staged.observe(name, x)
        direct.observe(name, x)
        if k == 30:
            assert staged._stage.staged_values > 0
            staged.stage_bytes = 512
            assert staged._stage.staged_values == 0 and staged.stage_bytes == 512
    assert staged.to_bytes() == direct.to_bytes()
    with pytest.raises(InputError, match=r"stage_bytes must be a non-negative integer, found -1"):
        staged.stage_bytes = -1


def test_an_array_is_staged_only_while_the_block_holds_two_of_it_per_tensor(monkeypatch):
    monkeypatch.setattr(staging, "ROUNDS_PER_FLUSH", 2)
    block = StagingBuffer(64 << 10)
    one_k = np.ones(1024, np.float32)  # 4 KiB: two per tensor for up to 8 tensors
    assert [block.takes(one_k, t) for t in (1, 8, 9)] == [True, True, False]
    assert block.takes(np.ones(STAGE_MAX_VALUES + 1, np.float32), 1) is False  # big arrays go straight in
    cal = Calibrator(BINS, stage_bytes=64 << 10)
    for t in range(9):
        cal.observe(f"t{t}", one_k)  # first arrays: binned at once
    cal.observe("t0", one_k)
    assert cal._stage.staged_values == 0  # nine tensors take turns: the block would hold fewer than two each
    small = Calibrator(BINS, stage_bytes=64 << 10)
    for t in range(8):
        small.observe(f"t{t}", one_k)
    small.observe("t0", one_k)
    assert small._stage.staged_values == 1024


def test_the_block_is_sized_by_the_tensors_taking_turns_and_grows_at_a_flush(monkeypatch):
    monkeypatch.setattr(staging, "ROUNDS_PER_FLUSH", 2)
    monkeypatch.setattr(staging, "ROUNDS_WANTED", 4)
    rng = np.random.default_rng(5)
    cal, direct = Calibrator(BINS, stage_bytes=1 << 20), Calibrator(BINS, stage_bytes=0)
    sizes = []
    for tensors in (3, 10, 40, 400):
        for _ in range(6):
            for t in range(tensors):
                x = rng.standard_normal(1024).astype(np.float32)
                cal.observe(f"t{t}", x)
                direct.observe(f"t{t}", x)
                assert cal._stage.nbytes <= 1 << 20
        sizes.append(cal._stage.nbytes)
    # 4 arrays of 4 KiB per tensor, at least 256 KiB: 256 KiB for 3 and for 10 tensors, 640 KiB for 40; 400
    # tensors would need 6.4 MiB, more than the 1 MiB allowed, and two arrays each do not fit either: not staged
    assert staging.MIN_BLOCK_BYTES == 256 << 10
    assert sizes == [256 << 10, 256 << 10, 4 * 40 * 4096, 4 * 40 * 4096]
    assert cal.to_bytes() == direct.to_bytes()
