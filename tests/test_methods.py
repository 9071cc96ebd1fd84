"""Every registered method against its naive twin, and the registry's errors."""

from __future__ import annotations

import numpy as np
import pytest

import naive
from edgecal import InputError, StreamingHistogram, UnknownNameError
from edgecal.methods import get_method, method_names


def hist_of(x, bins=256) -> StreamingHistogram:
    h = StreamingHistogram(bins)
    h.update(np.asarray(x))
    return h


SAMPLES = {
    "gauss": lambda r: r.standard_normal(20000),
    "relu": lambda r: np.maximum(r.standard_normal(20000), 0),
    "laplace+outliers": lambda r: np.concatenate([r.laplace(size=20000), [80.0, -95.0]]),
    "uniform": lambda r: r.uniform(-3, 3, 20000),
    "ten values": lambda r: r.standard_normal(10),
    "mostly zeros": lambda r: np.concatenate([np.zeros(99995), r.standard_normal(5)]),
}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
@pytest.mark.parametrize("seed", range(3))
def test_kl_method_is_kl_search_over_occupied_bins(sample, seed):
    h = hist_of(SAMPLES[sample](np.random.default_rng(seed)))
    occupied = h.abs_counts()[: np.flatnonzero(h.abs_counts())[-1] + 1]
    i, _ = naive.kl_search(occupied, 128, 128)
    assert get_method("kl")(h) == i * h.bin_width


@pytest.mark.parametrize("sample", sorted(SAMPLES))
@pytest.mark.parametrize("pct", [50.0, 99.0, 99.99, 100.0])
def test_percentile_matches_naive(sample, pct):
    h = hist_of(SAMPLES[sample](np.random.default_rng(5)))
    want = naive.percentile_amax(h.abs_counts(), h.zeros, h.bin_width, pct, h.amax)
    assert get_method("percentile")(h, percentile=pct) == want


def test_minmax_is_the_exact_largest_magnitude():
    x = np.array([0.3, -7.25, 7.0, np.nan, np.inf], np.float32)
    assert get_method("minmax")(hist_of(x)) == 7.25


def test_percentile_100_is_max_and_lower_percentiles_clip():
    x = np.random.default_rng(0).standard_normal(10000)
    h = hist_of(x)
    assert get_method("percentile")(h, percentile=100) == h.amax
    assert get_method("percentile")(h, percentile=90) < h.amax


def test_registry_lists_methods_and_rejects_unknown_names():
    assert {"auto", "kl", "minmax", "percentile", "mse"} <= set(method_names())
    with pytest.raises(UnknownNameError, match="unknown method 'entropy'; known methods: auto, codebook, kl, kl-mxnet, kl-ncnn, kl-onnxruntime, kl-refine, minmax, mse"):
        get_method("entropy")


def test_unknown_parameters_are_refused_with_the_accepted_ones():
    with pytest.raises(InputError, match="method 'kl' has no parameter 'bins'; accepted: num_levels, start_bin"):
        get_method("kl")(hist_of([1.0, 2.0]), bins=3)
    with pytest.raises(InputError, match="accepted: none"):
        get_method("minmax").resolve({"x": 1})


@pytest.mark.parametrize("pct", [0, -1, 100.5])
def test_percentile_out_of_range_is_refused(pct):
    with pytest.raises(InputError, match=r"parameter 'percentile' must be in \[1e-09, 100\], found"):
        get_method("percentile")(hist_of([1.0, 2.0]), percentile=pct)


def test_the_functions_check_their_parameters_when_called_directly():
    from edgecal.methods.basic import percentile
    from edgecal.methods.mse import mse, mse_range

    h = hist_of([1.0, 2.0])
    with pytest.raises(InputError, match="percentile must be in"):
        percentile(h, percentile=0.0)
    for fn in (mse, mse_range):
        with pytest.raises(InputError, match="candidates must be an integer in"):
            fn(h, candidates=0)


@pytest.mark.parametrize("method, params, message", [
    ("kl", {"num_levels": 1_000_000_000}, r"'num_levels' must be in \[1, 65536\]"),
    ("kl", {"start_bin": True}, "'start_bin' must be int, found bool"),
    ("percentile", {"percentile": "99"}, "'percentile' must be float, found str"),
    ("mse", {"clip_weight": -1.0}, r"'clip_weight' must be in \[0, 1e\+06\]"),
])
def test_parameters_are_typed_and_bounded_before_any_work(method, params, message):
    with pytest.raises(InputError, match=message):
        get_method(method).resolve(params)
