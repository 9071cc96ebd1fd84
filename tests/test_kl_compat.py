"""kl-onnxruntime, kl-mxnet, kl-ncnn: the tools' searches against literal transcriptions and ONNX Runtime itself."""

from __future__ import annotations

import numpy as np
import pytest

import naive
from edgecal import Calibrator, InputError, StreamingHistogram
from edgecal.methods import get_method
from edgecal.methods.kl_compat import abs_layout, mxnet_search, ncnn_search, ort_search, signed_layout


def hist_of(x, bins=1024) -> StreamingHistogram:
    h = StreamingHistogram(bins)
    h.update(np.asarray(x, dtype=np.float64))
    return h


def random_counts(rng, n):
    kind = rng.integers(4)
    if kind == 0:  # bell-shaped
        c = np.round(1e4 * np.exp(-0.5 * ((np.arange(n) - n / 2) / (n / rng.uniform(6, 30))) ** 2))
    elif kind == 1:  # sparse
        c = rng.integers(0, 20, n) * (rng.random(n) < 0.2)
    elif kind == 2:  # heavy tail on one side
        c = np.round(3e3 * np.exp(-np.abs(np.arange(n) - n // 2) / rng.uniform(2, 20)))
        c[: n // 2] = 0
    else:
        c = rng.integers(0, 5, n)
    c[rng.integers(n)] += 1
    return c.astype(np.int64)


@pytest.mark.parametrize("seed", range(40))
def test_ort_search_matches_its_transcription(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 160))
    nq = int(rng.integers(1, n + 1))
    c = random_counts(rng, n)
    assert ort_search(c, nq) == naive.ort_search(c, nq)


@pytest.mark.parametrize("seed", range(40))
def test_mxnet_search_matches_its_transcription(seed):
    rng = np.random.default_rng(100 + seed)
    n = 2 * int(rng.integers(4, 80)) + 1
    nq = int(rng.integers(1, n + 1))
    c = random_counts(rng, n)
    assert mxnet_search(c, nq) == naive.mxnet_search(c, nq)


@pytest.mark.parametrize("seed", range(30))
def test_ncnn_search_matches_its_transcription(seed):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(6, 300))
    levels = int(rng.integers(2, n))
    c = random_counts(rng, n)
    assert ncnn_search(c, levels) == naive.ncnn_search(c, levels)


def test_ncnn_known_answer_by_hand():
    # t = 2: P = (.5, .5) + eps and its 2-level image are equal, KL 0; t = 3 spreads mass onto bin 2, KL > 0.
    assert ncnn_search([1, 1, 0, 0], levels=2) == 2
    # all mass in the last bin: only t = n-1 keeps it unclipped and every t folds it into P's last bin
    assert naive.ncnn_search([0, 0, 0, 0, 0, 1], 2) == ncnn_search([0, 0, 0, 0, 0, 1], 2)


def test_mxnet_known_answer_by_hand():
    # 7 bins, 3 levels: i = 1 keeps bins 2..4 one per level, Q == P exactly (KL 0) and it is the first candidate.
    c = np.array([0, 0, 5, 9, 5, 0, 0])
    assert mxnet_search(c, 3) == 1
    # mass at the outer bins only: small windows fold it into their ends, which Q cannot copy; the full window can
    assert mxnet_search(np.array([4, 0, 0, 1, 0, 0, 4]), 3) == 3


def test_ort_known_answer_by_hand():
    # 128 bins, 128 levels (ORT's defaults): one candidate, the full range
    assert ort_search(np.arange(128) % 7, 128) == 64
    # 8 bins, 2 levels: i = 1 keeps [3, 5) = 2 bins, each its own level: Q == P, KL 0, the first candidate
    assert ort_search(np.array([0, 0, 0, 6, 6, 0, 0, 0]), 2) == 1


ORT_CASES = {
    "relu": lambda r: np.maximum(r.standard_normal(100000), 0),
    "gauss": lambda r: r.standard_normal(100000),
    "laplace": lambda r: r.laplace(size=100000),
    "skewed": lambda r: np.concatenate([r.standard_normal(80000), r.exponential(3.0, 20000)]),
}


@pytest.mark.parametrize("case", sorted(ORT_CASES))
@pytest.mark.parametrize("bins,nq", [(128, 128), (1024, 64), (2048, 128)])
def test_ort_search_equals_onnxruntime_on_its_own_histogram(case, bins, nq):
    calibrate = pytest.importorskip("onnxruntime.quantization.calibrate")
    x = ORT_CASES[case](np.random.default_rng(7)).astype(np.float32)
    col = calibrate.HistogramCollector("entropy", False, bins, nq, None, None)
    col.collect({"x": x})
    hist = col.histogram_dict["x"]
    lo, hi = col.get_entropy_threshold(hist, nq)
    i = ort_search(hist[0], nq)
    n = hist[0].size
    assert max(hist[1][n // 2 - i], x.min()) == lo
    assert min(hist[1][min(n // 2 + i + 1, n)], x.max()) == hi


def test_where_ort_float32_flips_a_near_tie_both_windows_are_within_float32_noise():
    calibrate = pytest.importorskip("onnxruntime.quantization.calibrate")
    r = np.random.default_rng(0)
    r.standard_normal(600000)  # a seed on which ORT's float32 KL and float64 disagree
    x = np.concatenate([r.standard_normal(200000), [20.0, -20.0] * 10]).astype(np.float32)
    col = calibrate.HistogramCollector("entropy", False, 2048, 128, None, None)
    col.collect({"x": x})
    hist = col.histogram_dict["x"]
    _, hi = col.get_entropy_threshold(hist, 128)
    ort_i = int(np.searchsorted(hist[1], hi)) - 1025
    ours = ort_search(hist[0], 128)
    assert ours != ort_i  # the documented float32 flip of the reference notes
    a, b = naive.ort_candidate_kl(hist[0], ours, 128), naive.ort_candidate_kl(hist[0], ort_i, 128)
    assert a <= b <= a * (1 + 1e-4)


@pytest.mark.parametrize("case", sorted(ORT_CASES))
@pytest.mark.parametrize("bins,nq", [(1024, 64), (2048, 128)])
def test_kl_onnxruntime_from_edgecal_histogram_picks_onnxruntimes_window_on_the_data(case, bins, nq):
    calibrate = pytest.importorskip("onnxruntime.quantization.calibrate")
    x = ORT_CASES[case](np.random.default_rng(3)).astype(np.float32)
    col = calibrate.HistogramCollector("entropy", False, bins, nq, None, None)
    col.collect({"x": x})
    want = col.get_entropy_threshold(col.histogram_dict["x"], nq)
    got = get_method("kl-onnxruntime").fit_range(hist_of(x, 8192), num_bins=bins, num_quantized_bins=nq)
    if (case, bins) == ("laplace", 2048):  # a jagged KL curve: 8192 bins per sign are not ORT's exact counts
        assert got[1] == pytest.approx(want[1], rel=0.04) and got[0] == pytest.approx(want[0], rel=0.04)
    else:
        assert got == pytest.approx((float(want[0]), float(want[1])), rel=1e-6)


def rounded(masses):
    return np.diff(np.round(np.concatenate([[0.0], np.cumsum(masses)])))


@pytest.mark.parametrize("seed", range(6))
def test_signed_layout_is_the_dense_overlap_of_the_density(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.standard_normal(3000) * rng.uniform(0.5, 3), np.zeros(int(rng.integers(0, 50)))])
    h = hist_of(x, 64)
    for n in (7, 8, 129):
        edges = h.amax * (2.0 * np.arange(n + 1) / n - 1.0)
        want = naive.rebin(h.positive_counts(), h.max, h.negative_counts(), -h.min, h.zeros, h.bin_width, edges)
        np.testing.assert_allclose(signed_layout(h, n), rounded(want), rtol=0, atol=1e-9)
        assert signed_layout(h, n).sum() == pytest.approx(h.finite)


def test_abs_layout_folds_the_signs_and_leaves_zeros_out():
    x = np.concatenate([np.random.default_rng(1).laplace(size=5000), np.zeros(40)])
    h = hist_of(x, 64)
    edges = h.amax * np.arange(101) / 100
    none = np.zeros(1)
    want = naive.rebin(h.positive_counts(), h.max, none, 0, 0, h.bin_width, edges) + \
        naive.rebin(h.negative_counts(), -h.min, none, 0, 0, h.bin_width, edges)
    np.testing.assert_allclose(abs_layout(h, 100), rounded(want), rtol=0, atol=1e-9)
    assert abs_layout(h, 100).sum() == pytest.approx(5000)


def test_mxnet_uses_511_levels_and_a_zero_low_end_for_a_never_negative_tensor():
    x = np.maximum(np.random.default_rng(2).standard_normal(50000), 0)
    h = hist_of(x)
    m = get_method("kl-mxnet")
    t = m(h)
    i = mxnet_search(signed_layout(h, 8001), 511)
    assert t == pytest.approx(h.amax * (2 * (4000 + i + 1) / 8001 - 1))
    assert i != mxnet_search(signed_layout(h, 8001), 255)
    assert m.fit_range(h) == (0.0, t)


def test_ncnn_threshold_sits_at_a_bin_centre_below_the_maximum():
    x = np.random.default_rng(4).standard_normal(50000)
    h = hist_of(x)
    t = get_method("kl-ncnn")(h)
    k = t / h.amax * 2048 - 0.5
    assert k == pytest.approx(round(k)) and 128 <= round(k) <= 2047


@pytest.mark.parametrize("method", ["kl-onnxruntime", "kl-mxnet", "kl-ncnn"])
@pytest.mark.parametrize("scheme", ["symmetric", "tflite"])
def test_each_mode_runs_through_calibrate(method, scheme):
    cal = Calibrator(1024)
    r = np.random.default_rng(9)
    cal.observe("a", r.standard_normal(20000))
    cal.observe("b", np.maximum(r.laplace(size=20000), 0))
    table = cal.compute(method, scheme=scheme)
    for name in ("a", "b"):
        e = table[name]
        assert e.method == method and 0 < e.amax <= cal.histogram(name).amax + e.scale  # zero-point rounding
    if scheme == "tflite":
        assert table["b"].zero_point == -128  # never negative: the whole grid above zero


@pytest.mark.parametrize("call,match", [
    (lambda: ort_search(np.zeros((2, 2)), 2), "1-D real array"),
    (lambda: ort_search([1, 2, 3], 4), r"num_quantized_bins must be an integer in \[1, 3\], found 4"),
    (lambda: mxnet_search([1, 2, 3, 4], 1), "odd bin count"),
    (lambda: ncnn_search([0, 0, 0, 0], 2), "all zero"),
    (lambda: ncnn_search([1, -1, 0, 0], 2), "non-negative"),
    (lambda: ncnn_search([1, 1, 1], 3), r"levels must be an integer in \[2, 2\], found 3"),
    (lambda: get_method("kl-onnxruntime")(hist_of([1.0, -2.0]), num_bins=16, num_quantized_bins=32),
     "num_quantized_bins must be at most num_bins"),
    (lambda: get_method("kl-mxnet")(hist_of([1.0, 2.0]), num_bins=101), "here, found 511 levels"),
    (lambda: get_method("kl-mxnet")(hist_of([1.0, -2.0]), num_bins=100, num_quantized_bins=5), "odd bin count"),
    (lambda: get_method("kl-ncnn")(hist_of([1.0, 2.0]), num_bins=64, levels=64), "levels must be below num_bins"),
    (lambda: get_method("kl-ncnn")(hist_of([1.0, 2.0]), num_bins=1 << 16), r"must be in \[3, 32768\]"),
])
def test_bad_input_is_one_clear_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


@pytest.mark.parametrize("method,params", [
    ("kl-onnxruntime", ["-p", "num_bins=512", "-p", "num_quantized_bins=64"]),
    ("kl-mxnet", ["-p", "num_bins=1001"]),
    ("kl-ncnn", []),
    ("kl-refine", ["-p", "max_iter=20", "-p", "tol=1e-7"]),
])
def test_each_new_method_runs_through_the_calibrate_command(tmp_path, method, params):
    from edgecal import CalibrationTable
    from edgecal.cli import main

    x = np.random.default_rng(6).laplace(size=20000)
    np.save(tmp_path / "layer.npy", x)
    out = tmp_path / "t.json"
    assert main(["calibrate", str(tmp_path / "layer.npy"), "-o", str(out), "-m", method, *params]) == 0
    e = CalibrationTable.load(out)["layer"]
    assert e.method == method and 0 < e.amax <= np.abs(x).max()
    for p in params[1::2]:
        key, value = p.split("=")
        assert e.params[key] == pytest.approx(float(value))
    if method == "kl-refine":
        assert e.params["trace"]["iterations"] >= 1 and e.params["trace"]["kl"] <= e.params["trace"]["kl_grid"]
