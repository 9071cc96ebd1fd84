"""int8 reference kernels against their naive twins, the golden values of the
reference note (shared/reference/int8-semantics.md, section 3), and hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

import naive
from edgecal import InputError
from edgecal import reference as ref
from edgecal.reference.requant import Requant, quantize_multiplier

ROUNDINGS = ("tflite", "tflite-single", "onnx")

# acc, real multiplier, (q, shift), tflite double, single (half up), f32 RNE (ORT/XNNPACK)
GOLDEN = [
    (5, 0.5, (2**30, 0), 3, 3, 2),
    (-5, 0.5, (2**30, 0), -2, -2, -2),
    (-3, 0.5, (2**30, 0), -1, -1, -2),
    (5, 0.25, (2**30, -1), 2, 1, 1),
    (-6, 0.25, (2**30, -1), -2, -1, -2),
    (-10, 0.25, (2**30, -1), -3, -2, -2),
    (10, 0.25, (2**30, -1), 3, 3, 2),
    (511, 2**-10, (2**30, -9), 1, 0, 0),
    (-512, 2**-10, (2**30, -9), -1, 0, 0),
    (512, 2**-10, (2**30, -9), 1, 1, 0),
    (-1536, 2**-10, (2**30, -9), -2, -1, -2),
]


@pytest.mark.parametrize("acc, m, qs, double, single, f32", GOLDEN)
def test_golden_requantization_values(acc, m, qs, double, single, f32):
    assert quantize_multiplier(m) == qs
    for rounding, want in zip(ROUNDINGS, (double, single, f32)):
        got = ref.requantize(np.array([acc]), Requant.from_real([m], rounding))
        assert int(got[0]) == want, rounding
        q, s = qs
        assert naive.requantize_one(acc, q, s, m, 0, -128, 127, rounding) == want, rounding


def test_quantize_multiplier_corner_cases():
    assert quantize_multiplier(0.999999999999) == (2**30, 1)  # mantissa rounds up to 1.0
    assert quantize_multiplier(2.0**-40) == (0, 0)  # flushed, every output is the zero point
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0**31) == (2**30, 32)
    assert quantize_multiplier(2.0**31, "tflite-single") == (2**31 - 1, 30)
    with pytest.raises(InputError, match="finite and >= 0"):
        quantize_multiplier(-1.0)


def test_quantize_multiplier_matches_naive_on_random_multipliers():
    rng = np.random.default_rng(0)
    ms = np.concatenate([2.0 ** rng.uniform(-40, 34, 3000), rng.random(1000), [1 - 2**-53, 0.5 - 2**-54, 2**-32]])
    for m in ms:
        for single in (False, True):
            assert quantize_multiplier(m, "tflite-single" if single else "tflite") == naive.quantize_multiplier(m, single)


def tie_accumulators(rng, shift, n):
    """Accumulators that land on or next to a rounding tie of a power-of-two multiplier 2**shift."""
    r = max(-shift, 1)
    base = rng.integers(-(2**30) >> r, (2**30) >> r, n) << r
    return np.clip(base + (1 << (r - 1)) + rng.integers(-1, 2, n), -(2**31), 2**31 - 1)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_requantize_matches_naive_on_random_and_tie_data(rounding):
    rng = np.random.default_rng(1)
    for trial in range(60):
        if trial % 2:
            m = 2.0 ** int(rng.integers(-20, 0))  # exact power of two: ties are reachable
            acc = tie_accumulators(rng, int(math.log2(m)), 64)
        else:
            m = float(2.0 ** rng.uniform(-24, -0.01))
            acc = rng.integers(-(2**31), 2**31, 64) if trial % 4 == 0 else rng.integers(-(2**20), 2**20, 64)
        zp = int(rng.integers(-128, 128))
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        rq = Requant.from_real([m], rounding)
        got = ref.requantize(acc, rq, zp, (lo, hi))
        q, s = naive.quantize_multiplier(m, rounding == "tflite-single")
        want = [naive.requantize_one(int(a), q, s, np.float32(m), zp, lo, hi, rounding) for a in acc]
        assert got.tolist() == want


def test_requantize_refuses_to_wrap_where_tflite_would():
    rq = Requant.from_real([4.0])  # shift 3: x << 3 leaves int32 for |x| >= 2**28
    assert ref.requantize(np.array([2**27]), rq, 0, (-128, 127)).tolist() == [127]
    with pytest.raises(OverflowError, match="overflows int32 in tflite requantization"):
        ref.requantize(np.array([2**30]), rq)
    with pytest.raises(OverflowError, match="tflite-single"):
        ref.requantize(np.array([2**30]), Requant.from_real([4.0], "tflite-single"))
    assert ref.requantize(np.array([2**30]), Requant.from_real([4.0], "onnx")).tolist() == [127]


@pytest.mark.parametrize(
    "call, msg",
    [
        (lambda: ref.requantize(np.array([2**31]), Requant.from_real([0.5])), "must fit int32"),
        (lambda: ref.requantize(np.array([1.5]), Requant.from_real([0.5])), "integer array"),
        (lambda: ref.requantize(np.zeros((2, 3), np.int32), Requant.from_real([0.5, 0.5])), "for 3 channels"),
        (lambda: ref.requantize(np.array([1]), Requant.from_real([0.5]), 128), "zero point"),
        (lambda: ref.requantize(np.array([1]), Requant.from_real([0.5]), 0, (5, 4)), "activation range"),
        (lambda: Requant.from_real([0.5], "gemmlowp"), "known roundings: tflite, tflite-single, onnx"),
        (lambda: Requant.from_real([0.5, 0.25], scale=[0.5]), "one per channel"),
        (lambda: ref.op_multipliers("conv", 0.0, [1.0], 1.0), "input scale"),
        (lambda: ref.op_multipliers("pool", 1.0, [1.0], 1.0), "unknown op"),
        (lambda: ref.activation_range("gelu", 0.1, 0), "unknown activation"),
        (lambda: ref.activation_range((5.0, 6.0), 1.0, 127), "is empty"),
    ],
)
def test_requant_bad_input_is_refused(call, msg):
    with pytest.raises(InputError, match=msg):
        call()


def test_op_multipliers_follow_each_ops_derivation():
    # TFLM multiplies s_in * s_w in double for every op; "fc-float32" in float32 first. Pick scales where it shows.
    rng = np.random.default_rng(2)
    differ = 0
    for _ in range(2000):
        s_in, s_w, s_out = (float(np.float32(v)) for v in 2.0 ** rng.uniform(-12, 0, 3))
        f32 = ref.op_multipliers("fc-float32", s_in, [s_w], s_out)
        for op in ("fc", "conv", "depthwise"):
            rq = ref.op_multipliers(op, s_in, [s_w], s_out)
            assert (int(rq.multiplier[0]), int(rq.shift[0])) == quantize_multiplier(s_in * s_w / s_out)
        assert (int(f32.multiplier[0]), int(f32.shift[0])) == quantize_multiplier(float(np.float32(s_in * s_w)) / s_out)
        assert f32.scale[0] == np.float32(np.float32(np.float32(s_in) * np.float32(s_w)) / np.float32(s_out))
        differ += int(f32.multiplier[0] != ref.op_multipliers("fc", s_in, [s_w], s_out).multiplier[0])
    assert differ > 0


def test_per_channel_fc_multipliers_are_the_conv_ones():
    s_w = np.float32([0.013, 0.0071, 0.5])
    fc, conv = ref.op_multipliers("fc", 0.021, s_w, 0.17), ref.op_multipliers("conv", 0.021, s_w, 0.17)
    assert fc.multiplier.tolist() == conv.multiplier.tolist() and fc.shift.tolist() == conv.shift.tolist()
    assert [(int(q), int(s)) for q, s in zip(fc.multiplier, fc.shift)] == [
        quantize_multiplier(float(np.float32(0.021)) * float(w) / float(np.float32(0.17))) for w in s_w]


@pytest.mark.parametrize("kind", ["relu", "relu6", None])
def test_activation_range_matches_naive(kind):
    rng = np.random.default_rng(3)
    for _ in range(300):
        scale, zp = float(2.0 ** rng.uniform(-8, 0)), int(rng.integers(-128, 100))
        assert ref.activation_range(kind, scale, zp) == naive.activation_range(kind, scale, zp)
    assert ref.activation_range("relu6", 6 / 255, -128) == (-128, 127)
    assert ref.activation_range((-math.inf, 1.0), 0.5, 0) == (-128, 2)


# -- quantize ---------------------------------------------------------------------------
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_quantize_matches_naive_including_ties(rounding):
    rng = np.random.default_rng(4)
    scale, zp = 0.0625, -3  # ties k + 1/2 exactly representable
    ties = (rng.integers(-200, 200, 500) + 0.5) * scale
    x = np.concatenate([ties, rng.normal(0, 4, 500), [np.inf, -np.inf, 1e30, -0.0]]).astype(np.float32)
    got = ref.quantize(x, scale, zp, rounding)
    assert got.tolist() == [naive.quantize_value(v, scale, zp, rounding) for v in x]
    back = ref.dequantize(got, scale, zp)
    assert np.array_equal(back, ((got.astype(np.float64) - zp) * scale).astype(np.float32))


def test_quantize_refuses_nan_and_bad_parameters():
    with pytest.raises(InputError, match="cannot quantize NaN"):
        ref.quantize(np.array([1.0, np.nan]), 0.1)
    with pytest.raises(InputError, match="scale must be"):
        ref.quantize(np.array([1.0]), 0.0)
    with pytest.raises(InputError, match="real array"):
        ref.quantize(np.array(["a"]), 0.1)
    with pytest.raises(InputError, match="expects int8"):
        ref.dequantize(np.array([1]), 0.1)


# -- layers against the naive twins -----------------------------------------------------
def random_requant(rng, channels, rounding, s_in=None):
    s_in = float(np.float32(s_in or 2.0 ** rng.uniform(-6, -2)))
    s_w = (2.0 ** rng.uniform(-9, -5, channels)).astype(np.float32)
    s_w[::2] = 2.0 ** rng.integers(-9, -5, s_w[::2].size)  # exact powers: tie-prone multipliers
    s_out = float(np.float32(2.0 ** rng.integers(-5, -1)))
    rq = ref.op_multipliers("conv", s_in, s_w, s_out, rounding)
    return rq, [(int(q), int(s), f) for q, s, f in zip(rq.multiplier, rq.shift, rq.scale)]


def int8(rng, shape, lo=-128):
    return rng.integers(lo, 128, shape).astype(np.int8)


CONV_CASES = [  # (n, h, w, c), (oc, kh, kw), stride, padding, dilation, groups
    ((2, 7, 6, 3), (4, 3, 3), (1, 1), "SAME", (1, 1), 1),
    ((1, 9, 8, 4), (6, 3, 2), (2, 3), "VALID", (1, 1), 2),
    ((1, 8, 8, 2), (3, 3, 3), (2, 2), "SAME", (2, 1), 1),
    ((1, 5, 7, 4), (4, 2, 3), (1, 2), (1, 0, 2, 1), (1, 2), 4),
    ((1, 6, 6, 1), (2, 5, 5), (1, 1), "SAME_LOWER", (1, 1), 1),
]


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d_matches_naive(case, rounding):
    xs, (oc, kh, kw), stride, padding, dilation, groups = CONV_CASES[case]
    rng = np.random.default_rng(10 + case)
    x, w = int8(rng, xs), int8(rng, (oc, kh, kw, xs[3] // groups), -127)
    bias = rng.integers(-5000, 5000, oc).astype(np.int32)
    rq, rq_list = random_requant(rng, oc, rounding)
    in_zp, out_zp = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
    act = ref.activation_range("relu", 0.05, out_zp)
    got = ref.conv2d(x, w, bias, rq, in_zp=in_zp, out_zp=out_zp, stride=stride, padding=padding, dilation=dilation,
                     act_range=act)
    pads = ref.Window.of((kh, kw), stride, dilation, padding).resolve(xs[1], xs[2])[2]
    want = naive.conv2d(x, w, bias, in_zp, rq_list, out_zp, act, stride, pads, dilation, rounding)
    assert got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("dm, stride, padding, dilation", [(1, 1, "SAME", 1), (2, 2, "VALID", 1), (3, (1, 2), "SAME", 2)])
def test_depthwise_matches_naive(dm, stride, padding, dilation, rounding):
    rng = np.random.default_rng(dm)
    x, w = int8(rng, (2, 7, 8, 3)), int8(rng, (1, 3, 3, 3 * dm), -127)
    bias = rng.integers(-3000, 3000, 3 * dm).astype(np.int32)
    rq, rq_list = random_requant(rng, 3 * dm, rounding)
    got = ref.depthwise_conv2d(x, w, bias, rq, in_zp=5, out_zp=-7, stride=stride, padding=padding, dilation=dilation)
    win = ref.Window.of(3, stride, dilation, padding)
    want = naive.depthwise_conv2d(x, w, bias, 5, rq_list, -7, (-128, 127), win.stride, win.resolve(7, 8)[2],
                                  win.dilation, rounding)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("per_channel", [True, False])
def test_fully_connected_matches_naive(per_channel, rounding):
    rng = np.random.default_rng(20 + per_channel)
    x, w = int8(rng, (9, 40)), int8(rng, (7, 40), -127)
    bias = rng.integers(-20000, 20000, 7).astype(np.int32)
    rq, rq_list = random_requant(rng, 7 if per_channel else 1, rounding)
    got = ref.fully_connected(x, w, bias, rq, in_zp=-128, out_zp=3, act_range=(-100, 120))
    assert np.array_equal(got, naive.fully_connected(x, w, bias, -128, rq_list, 3, (-100, 120), rounding))


@pytest.mark.parametrize("single", [False, True])
def test_add_matches_naive_exhaustively_on_one_scale_set(single):
    rng = np.random.default_rng(30 + single)
    grid = np.arange(-128, 128, dtype=np.int8)
    for _ in range(3):
        s1, s2, so = (float(np.float32(v)) for v in 2.0 ** rng.uniform(-7, -2, 3))
        z1, z2, zo = (int(v) for v in rng.integers(-128, 128, 3))
        a, b = np.repeat(grid, 256), np.tile(grid, 256)
        sub = rng.choice(a.size, 4000, replace=False)
        got = ref.add(a, b, (s1, z1), (s2, z2), (so, zo), (-120, 127), "tflite-single" if single else "tflite")
        want = naive.add(a[sub], b[sub], (s1, z1), (s2, z2), (so, zo), (-120, 127), single)
        assert np.array_equal(got[sub], want)


def test_add_broadcasts_and_refuses_bad_scales():
    x = np.arange(-6, 6, dtype=np.int8).reshape(3, 4)
    got = ref.add(x, np.array([1, 2, 3, 4], np.int8), (0.5, 0), (0.5, 0), (0.5, 0))
    assert np.array_equal(got, x + np.array([1, 2, 3, 4], np.int8))
    with pytest.raises(InputError, match="do not broadcast"):
        ref.add(x, np.zeros(3, np.int8), (0.5, 0), (0.5, 0), (0.5, 0))
    with pytest.raises(InputError, match="output scale"):
        ref.add(x, x, (1.0, 0), (1.0, 0), (1e-7, 0))
    with pytest.raises(InputError, match="int8 inputs"):
        ref.add(x.astype(np.int16), x, (1.0, 0), (1.0, 0), (1.0, 0))


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, "VALID"), (3, 2, "SAME"), ((3, 2), (1, 2), (1, 0, 2, 1))])
def test_pools_match_naive(kernel, stride, padding, average):
    rng = np.random.default_rng(40)
    x = int8(rng, (2, 7, 9, 3))
    act = (-100, 127)
    fn = ref.avg_pool2d if average else ref.max_pool2d
    got = fn(x, kernel, stride, padding, act)
    win = ref.Window.of(kernel, stride, 1, padding)
    assert np.array_equal(got, naive.pool2d(x, win.kernel, win.stride, win.resolve(7, 9)[2], act, average))


def test_average_pool_rounds_half_away_not_to_even():
    x = np.array([[1, 2], [3, 4]], np.int8).reshape(1, 2, 2, 1)  # 10 / 4 = 2.5 -> 3 (rint gives 2)
    assert ref.avg_pool2d(x, 2).item() == 3
    assert ref.avg_pool2d(-x, 2).item() == -3


# -- bad input to the layers ------------------------------------------------------------
def test_accumulator_overflow_is_an_error_not_a_wrapped_result():
    k = 2**31 // (255 * 127) + 1  # every tap contributes (127 - (-128)) * 127
    x, w = np.full((1, k), 127, np.int8), np.full((1, k), 127, np.int8)
    rq = Requant.from_real([2.0**-20])
    with pytest.raises(OverflowError, match=r"fully connected: accumulator of output \(0, 0\) overflows int32"):
        ref.fully_connected(x, w, None, rq, in_zp=-128)
    ok = ref.fully_connected(x[:, :-1], w[:, :-1], None, rq, in_zp=-128)  # one tap fewer fits
    assert ok.item() == 127
    with pytest.raises(OverflowError, match="conv: accumulator"):
        ref.conv2d(np.full((1, 1, 1, 8), 1, np.int8), np.full((1, 1, 1, 8), 1, np.int8),
                   np.array([2**31 - 4], np.int32), rq)
    with pytest.raises(OverflowError, match="depthwise: accumulator"):
        ref.depthwise_conv2d(np.full((1, 1, 1, 1), -128, np.int8), np.full((1, 1, 1, 1), 127, np.int8),
                             np.array([-(2**31)], np.int32), rq, in_zp=127)


@pytest.mark.parametrize(
    "call, msg",
    [
        (lambda rq: ref.fully_connected(np.zeros((1, 4), np.int8), np.full((2, 4), -128, np.int8), None, rq),
         r"-128; symmetric int8 weights must lie in \[-127, 127\]"),
        (lambda rq: ref.fully_connected(np.zeros((1, 4), np.int8), np.zeros((2, 5), np.int8), None, rq),
         "input has 4 features"),
        (lambda rq: ref.fully_connected(np.zeros((1, 4), np.float32), np.zeros((2, 4), np.int8), None, rq),
         "must be a 2-D int8 array"),
        (lambda rq: ref.fully_connected(np.zeros((1, 4), np.int8), np.zeros((2, 4), np.int8), np.zeros(3, np.int32), rq),
         r"bias must be an integer array of shape \(2,\)"),
        (lambda rq: ref.fully_connected(np.zeros((1, 4), np.int8), np.zeros((2, 4), np.int8),
                                        np.array([2**31, 0]), rq), "bias must fit int32"),
        (lambda rq: ref.fully_connected(np.zeros((1, 4), np.int8), np.zeros((3, 4), np.int8), None,
                                        Requant.from_real([0.1, 0.1])), "2 multipliers for 3 output channels"),
        (lambda rq: ref.conv2d(np.zeros((1, 4, 4, 3), np.int8), np.zeros((2, 3, 3, 2), np.int8), None, rq),
         "input has 3 channels"),
        (lambda rq: ref.conv2d(np.zeros((1, 2, 2, 1), np.int8), np.zeros((2, 3, 3, 1), np.int8), None, rq),
         "does not fit an input of 2"),
        (lambda rq: ref.conv2d(np.zeros((1, 4, 4, 1), np.int8), np.zeros((1, 3, 3, 1), np.int8), None, rq,
                               padding="FULL"), "padding 'FULL'"),
        (lambda rq: ref.conv2d(np.zeros((1, 4, 4, 1), np.int8), np.zeros((1, 3, 3, 1), np.int8), None, rq,
                               stride=0), "stride must be"),
        (lambda rq: ref.conv2d(np.zeros((1, 4, 4, 1), np.int8), np.zeros((1, 3, 3, 1), np.int8), None, rq,
                               padding=(1, 1, -1, 0)), "explicit padding"),
        (lambda rq: ref.depthwise_conv2d(np.zeros((1, 4, 4, 2), np.int8), np.zeros((1, 3, 3, 3), np.int8), None, rq),
         "depthwise: input has 2 channels"),
        (lambda rq: ref.max_pool2d(np.zeros((4, 4), np.int8), 2), "4-D NHWC int8"),
        (lambda rq: ref.avg_pool2d(np.zeros((1, 4, 4, 1), np.int8), 2, 1, (2, 0, 0, 0)), "smaller than the window"),
    ],
)
def test_layer_bad_input_is_refused(call, msg):
    with pytest.raises(InputError, match=msg):
        call(Requant.from_real([0.1]))
