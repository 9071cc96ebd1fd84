"""Bit-exactness of the int8 kernels against real runtimes: the TFLM interpreter
(``tflite-micro``, reference kernels: rounding "tflite") and ONNX Runtime's CPU
provider (rounding "onnx"). Models are built in the test (TFLite schema from
``ai-edge-litert``, ONNX through ``onnx.helper``); every op is compared on at least
1M outputs, tie-heavy runs included, and must match on every one.

Tie-heavy runs use exact power-of-two multipliers 2**-k with small k and small
inputs, so many accumulators sit exactly on a rounding tie (counted from numpy
accumulators); that the other roundings then disagree with the runtime shows the
comparison can tell them apart.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from edgecal import reference as ref

# needs_host: tflite-micro has no aarch64 wheel, onnxruntime's crashes at import under qemu-user
pytestmark = pytest.mark.needs_host

MIN_OUTPUTS = 1_000_000


@pytest.fixture(scope="module")
def tfl():
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (TFLite schema) is not installed; pip install -e '.[test]'")
    pytest.importorskip("tflite_micro", reason="tflite-micro (TFLM interpreter) is not installed; pip install -e '.[test]'")
    import reference_tflite

    return reference_tflite


@pytest.fixture(scope="module")
def onnxrt():
    pytest.importorskip("onnx", reason="onnx is not installed; pip install -e '.[test]'")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed; pip install -e '.[test]'")
    import reference_onnx

    return reference_onnx


def f32(v):
    return np.float32(v)


def scales(rng, channels, ties):
    """(s_in, s_w[channels], s_out): powers of two giving multipliers 2**-1..2**-4 when ``ties``, else random."""
    if ties:
        return f32(2.0**-4), (2.0 ** -rng.integers(4, 8, channels)).astype(np.float32), f32(2.0**-7)
    s_w = (2.0 ** rng.uniform(-10, -6, channels)).astype(np.float32)
    s_w[::2] = 2.0 ** rng.integers(-10, -6, s_w[::2].size)
    return f32(2.0 ** rng.uniform(-6, -3)), s_w, f32(2.0 ** rng.uniform(-4, -1))


def data(rng, shape, ties, lo=-128, hi=127):
    """int8 values; small ones (|v| <= 3) for tie-heavy runs so outputs stay inside int8."""
    return (rng.integers(-3, 4, shape) if ties else rng.integers(lo, hi + 1, shape)).astype(np.int8)


def conv_acc_numpy(x, w_ohwi, bias, zp, stride, pads, dilation):
    """Exact accumulators of a conv (groups=1) by sliding windows over zero-point padding."""
    top, left, bottom, right = pads
    xp = np.pad(x.astype(np.int64) - zp, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = w_ohwi.shape[1:3]
    eh, ew = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    win = sliding_window_view(xp, (eh, ew), axis=(1, 2))[:, :: stride[0], :: stride[1], :, :: dilation[0], :: dilation[1]]
    return np.einsum("nyxcij,oijc->nyxo", win, w_ohwi.astype(np.int64), optimize=True) + bias


def tie_count(acc, mult):
    """Accumulators whose exact product with a 2**-k multiplier (per channel) ends in exactly .5."""
    k = -np.log2(mult.astype(np.float64)).astype(np.int64)
    return int(np.sum(acc % (1 << k) == (1 << (k - 1))))


def assert_other_roundings_differ(expected, compute, own):
    """The roundings other than ``own`` disagree with the runtime somewhere: the data can tell them apart."""
    for other in ref.ROUNDINGS:
        if other != own:
            assert (compute(other) != expected).sum() > 0, f"{other} agrees everywhere with the runtime"


# -- TFLM -------------------------------------------------------------------------------
CONV_RUNS = [  # x shape, oc, kernel, stride, padding, dilation, act, ties
    ((4, 32, 32, 16), 64, (3, 3), (1, 1), "SAME", (1, 1), "relu", False),
    ((4, 32, 32, 16), 64, (3, 3), (1, 1), "SAME", (1, 2), None, True),
    ((16, 33, 65, 8), 32, (3, 3), (2, 2), "VALID", (1, 1), "relu6", False),
    ((8, 32, 64, 8), 32, (2, 3), (2, 1), "SAME", (2, 1), None, True),
]


def test_conv2d_is_bit_exact_with_tflm(tfl):
    rng = np.random.default_rng(100)
    total = ties_seen = 0
    for x_shape, oc, kernel, stride, padding, dilation, act, ties in CONV_RUNS:
        x, w = data(rng, x_shape, ties), data(rng, (oc, *kernel, x_shape[3]), ties, -127)
        bias = rng.integers(-40, 40, oc).astype(np.int32) if ties else rng.integers(-9000, 9000, oc).astype(np.int32)
        s_in, s_w, s_out = scales(rng, oc, ties)
        zp_in, zp_out = (0, 0) if ties else (int(rng.integers(-128, 128)), int(rng.integers(-128, 128)))
        want = tfl.run_tflm(tfl.conv_model(x_shape, w, bias, s_in, zp_in, s_w, s_out, zp_out, stride, padding,
                                           dilation, act), x)
        act_range = ref.activation_range(act, s_out, zp_out)

        def compute(rounding, x=x, w=w, bias=bias, s_in=s_in, s_w=s_w, s_out=s_out, zp_in=zp_in, zp_out=zp_out,
                    stride=stride, padding=padding, dilation=dilation, act_range=act_range):
            rq = ref.op_multipliers("conv", s_in, s_w, s_out, rounding)
            return ref.conv2d(x, w, bias, rq, in_zp=zp_in, out_zp=zp_out, stride=stride, padding=padding,
                              dilation=dilation, act_range=act_range)

        got = compute("tflite")
        assert got.shape == want.shape and int((got != want).sum()) == 0
        if ties:
            assert_other_roundings_differ(want, compute, "tflite")
            pads = ref.Window.of(kernel, stride, dilation, padding).resolve(x_shape[1], x_shape[2])[2]
            acc = conv_acc_numpy(x, w, bias, zp_in, stride, pads, dilation)
            ties_seen += tie_count(acc, (s_in * s_w.astype(np.float64) / s_out))
        total += want.size
    assert total >= MIN_OUTPUTS and ties_seen > 0.1 * total / 2


@pytest.mark.parametrize("ties", [False, True])
def test_depthwise_is_bit_exact_with_tflm(tfl, ties):
    rng = np.random.default_rng(200 + ties)
    x_shape, dm = (4, 64, 64, 16), 4
    x, w = data(rng, x_shape, ties), data(rng, (1, 3, 3, 16 * dm), ties, -127)
    bias = rng.integers(-20, 20, 16 * dm).astype(np.int32) if ties else rng.integers(-5000, 5000, 16 * dm).astype(np.int32)
    s_in, s_w, s_out = scales(rng, 16 * dm, ties)
    zp_in, zp_out = (0, 0) if ties else (-7, 12)
    stride, dilation = ((1, 1), (2, 1)) if ties else ((1, 1), (1, 1))
    want = tfl.run_tflm(tfl.depthwise_model(x_shape, w, bias, s_in, zp_in, s_w, s_out, zp_out, stride, "SAME",
                                            dilation, None if ties else "relu"), x)

    def compute(rounding):
        rq = ref.op_multipliers("conv", s_in, s_w, s_out, rounding)
        return ref.depthwise_conv2d(x, w, bias, rq, in_zp=zp_in, out_zp=zp_out, stride=stride, padding="SAME",
                                    dilation=dilation, act_range=ref.activation_range(None if ties else "relu", s_out, zp_out))

    got = compute("tflite")
    assert got.size >= MIN_OUTPUTS and int((got != want).sum()) == 0
    if ties:
        assert_other_roundings_differ(want, compute, "tflite")


FC_RUNS = [(True, False), (True, True), (False, False), (False, True)]  # per_channel, ties


def fc_scales(rng, n, per_channel, ties):
    s_in, s_w, s_out = scales(rng, n if per_channel else 1, ties)
    if not per_channel and not ties:  # a per-tensor set where the float32 product changes the multiplier
        while True:
            s_in, s_w, s_out = f32(2.0 ** rng.uniform(-6, -3)), (2.0 ** rng.uniform(-10, -6, 1)).astype(np.float32), \
                f32(2.0 ** rng.uniform(-4, -1))
            if ref.op_multipliers("fc", s_in, s_w, s_out).multiplier[0] != \
                    ref.op_multipliers("fc-float32", s_in, s_w, s_out).multiplier[0]:
                return s_in, s_w, s_out
    return s_in, s_w, s_out


def test_fully_connected_is_bit_exact_with_tflm(tfl):
    rng = np.random.default_rng(300)
    total = ties_seen = 0
    for per_channel, ties in FC_RUNS:
        b_n, k, n = 1024, 64, 256
        x, w = data(rng, (b_n, k), ties), data(rng, (n, k), ties, -127)
        bias = rng.integers(-20, 20, n).astype(np.int32) if ties else rng.integers(-20000, 20000, n).astype(np.int32)
        s_in, s_w, s_out = fc_scales(rng, n, per_channel, ties)
        zp_in, zp_out = (0, 0) if ties else (int(rng.integers(-128, 128)), int(rng.integers(-128, 128)))
        want = tfl.run_tflm(tfl.fc_model(x.shape, w, bias, s_in, zp_in, s_w, s_out, zp_out), x)
        op = "fc"
        got = ref.fully_connected(x, w, bias, ref.op_multipliers(op, s_in, s_w, s_out), in_zp=zp_in, out_zp=zp_out)
        assert int((got != want).sum()) == 0, (per_channel, ties)
        if ties:
            acc = (x.astype(np.int64) - zp_in) @ w.astype(np.int64).T + bias
            ties_seen += tie_count(acc, np.broadcast_to(s_in * s_w.astype(np.float64) / s_out, (n,)))
            single = ref.fully_connected(x, w, bias, ref.op_multipliers(op, s_in, s_w, s_out, "tflite-single"),
                                         in_zp=zp_in, out_zp=zp_out)
            assert (single != want).sum() > 0
        total += want.size
    assert total >= MIN_OUTPUTS and ties_seen > 0.1 * total / 2


def test_fully_connected_multiplier_is_built_from_the_double_product_as_tflm_does(tfl):
    """Per-tensor FC with scales whose float32 product is not exact: TFLM builds the multiplier from the double
    product. Each channel's bias puts its 256 accumulators around one rounding tie of the real multiplier, where a
    multiplier one float32 rounding away gives another output."""
    rng = np.random.default_rng(310)
    total = f32_differs = 0
    while total < MIN_OUTPUTS:
        s_in, s_w = f32(2.0 ** rng.uniform(-6, -3)), (2.0 ** rng.uniform(-10, -6, 1)).astype(np.float32)
        if float(np.float32(s_in * s_w[0])) == float(s_in) * float(s_w[0]):
            continue
        s_out = f32(float(s_in) * float(s_w[0]) * 2.0 ** rng.uniform(22.5, 23.5))
        real = float(s_in) * float(s_w[0]) / float(s_out)
        ties = (np.arange(4096) % 250) - 125
        bias = (np.round((ties + 0.5) / real) - 128).astype(np.int32)
        x, w = (np.arange(256) - 128).astype(np.int8).reshape(256, 1), np.ones((4096, 1), np.int8)
        want = tfl.run_tflm(tfl.fc_model(x.shape, w, bias, s_in, 0, s_w, s_out, 0), x)
        got = ref.fully_connected(x, w, bias, ref.op_multipliers("fc", s_in, s_w, s_out))
        assert int((got != want).sum()) == 0
        f32_differs += int((ref.fully_connected(x, w, bias, ref.op_multipliers("fc-float32", s_in, s_w, s_out))
                            != want).sum())
        total += want.size
    assert f32_differs > 100


def test_add_is_bit_exact_with_tflm_exhaustively(tfl):
    rng = np.random.default_rng(400)
    grid = np.arange(-128, 128, dtype=np.int8)
    a, b = np.repeat(grid, 256).reshape(256, 256), np.tile(grid, 256).reshape(256, 256)
    total = single_differs = 0
    for case in range(16):
        if case < 6:  # equal / power-of-two scales: the sum lands on ties
            s1 = s2 = f32(2.0 ** -int(rng.integers(3, 7)))
            so, zs = f32(s1 * 2 ** int(rng.integers(1, 3))), [0, 0, 0]
        else:
            s1, s2, so = (f32(v) for v in 2.0 ** rng.uniform(-7, -2, 3))
            zs = [int(v) for v in rng.integers(-128, 128, 3)]
        act = "relu" if case % 3 == 1 else None
        p1, p2, po = (s1, zs[0]), (s2, zs[1]), (so, zs[2])
        want = tfl.run_tflm(tfl.add_model([1, 256, 256, 1], p1, p2, po, act), a.reshape(1, 256, 256, 1),
                            b.reshape(1, 256, 256, 1)).reshape(256, 256)
        act_range = ref.activation_range(act, so, zs[2])
        got = ref.add(a, b, p1, p2, po, act_range)
        assert int((got != want).sum()) == 0, case
        single_differs += int((ref.add(a, b, p1, p2, po, act_range, "tflite-single") != want).sum())
        total += want.size
    assert total >= MIN_OUTPUTS and single_differs > 0


@pytest.mark.parametrize("average", [False, True])
def test_pools_are_bit_exact_with_tflm(tfl, average):
    rng = np.random.default_rng(500 + average)
    total = rne_differs = 0
    for x_shape, kernel, stride, padding, act in [((4, 64, 64, 64), (2, 2), (1, 1), "SAME", None),
                                                  ((4, 33, 65, 32), (3, 3), (2, 2), "VALID", "relu"),
                                                  ((2, 31, 31, 32), (3, 2), (2, 1), "SAME", "relu6")]:
        x = data(rng, x_shape, False)
        scale, zp = f32(0.05), int(rng.integers(-20, 20))
        want = tfl.run_tflm(tfl.pool_model(x_shape, average, kernel, stride, padding, scale, zp, act), x)
        act_range = ref.activation_range(act, scale, zp)
        fn = ref.avg_pool2d if average else ref.max_pool2d
        got = fn(x, kernel, stride, padding, act_range)
        assert got.shape == want.shape and int((got != want).sum()) == 0
        if average and padding == "SAME" and kernel == (2, 2):  # full windows: all but the last row / column
            mean = sliding_window_view(x.astype(np.float64), kernel, axis=(1, 2)).mean(axis=(-2, -1))
            rne_differs += int((np.clip(np.rint(mean), *act_range) != got[:, :-1, :-1]).sum())
        total += want.size
    assert total >= MIN_OUTPUTS
    assert rne_differs > 0 or not average


def test_quantize_is_bit_exact_with_tflm(tfl):
    rng = np.random.default_rng(600)
    scale, zp = f32(0.03125), -9
    ties = (rng.integers(-150, 150, 500_000) + 0.5) * scale
    x = np.concatenate([ties, rng.normal(0, 2.5, 548_576)]).astype(np.float32)
    want = tfl.run_tflm(tfl.quantize_model([x.size], scale, zp), x)
    got = ref.quantize(x, scale, zp)
    assert x.size >= MIN_OUTPUTS and int((got != want).sum()) == 0
    assert (ref.quantize(x, scale, zp, "onnx") != want).sum() > 0


# -- ONNX Runtime -----------------------------------------------------------------------
@pytest.mark.parametrize("per_column, ties", [(True, False), (False, False), (True, True)])
def test_qlinear_matmul_is_bit_exact_with_onnxruntime(onnxrt, per_column, ties):
    rng = np.random.default_rng(700 + 2 * per_column + ties)
    m, k, n = 4096, 64, 256
    a, b = data(rng, (m, k), ties), data(rng, (k, n), ties, -127)
    s_a, s_b, s_y = scales(rng, n if per_column else 1, ties)
    z_a, z_y = (0, 0) if ties else (int(rng.integers(-128, 128)), int(rng.integers(-128, 128)))
    want = onnxrt.run(onnxrt.qlinear_matmul(a.shape, b, s_a, z_a, s_b if per_column else s_b[0], s_y, z_y), a)
    rq = ref.op_multipliers("conv", s_a, s_b, s_y, "onnx")
    got = ref.fully_connected(a, np.ascontiguousarray(b.T), None, rq, in_zp=z_a, out_zp=z_y)
    assert got.size >= MIN_OUTPUTS and int((got != want).sum()) == 0
    if ties:
        tflite = ref.fully_connected(a, np.ascontiguousarray(b.T), None, ref.op_multipliers("conv", s_a, s_b, s_y),
                                     in_zp=z_a, out_zp=z_y)
        assert (tflite != want).sum() > 0


QLINEAR_CONV_RUNS = [  # depthwise, ties, x shape NHWC, oc, stride, dilation, pads (top, left, bottom, right)
    (False, False, (4, 32, 32, 8), 64, (1, 1), (1, 1), (1, 1, 1, 1)),
    (False, True, (4, 32, 64, 8), 64, (2, 1), (1, 2), (1, 2, 0, 1)),
    (True, False, (4, 64, 64, 16), 64, (1, 1), (1, 1), (1, 1, 1, 1)),
    (True, True, (2, 64, 64, 16), 32, (1, 1), (2, 1), (2, 0, 2, 2)),
]


def test_qlinear_conv_is_bit_exact_with_onnxruntime(onnxrt):
    rng = np.random.default_rng(800)
    total = 0
    for depthwise, ties, (n, h, w_, c), oc, stride, dilation, pads in QLINEAR_CONV_RUNS:
        x = data(rng, (n, h, w_, c), ties)
        s_x, s_w, s_y = scales(rng, oc, ties)
        bias = rng.integers(-20, 20, oc).astype(np.int32) if ties else rng.integers(-9000, 9000, oc).astype(np.int32)
        z_x, z_y = (0, 0) if ties else (int(rng.integers(-128, 128)), int(rng.integers(-128, 128)))
        w_onnx = data(rng, (oc, 1 if depthwise else c, 3, 3), ties, -127)  # depthwise: group = c
        w_ref = np.ascontiguousarray(w_onnx.transpose(1, 2, 3, 0) if depthwise else w_onnx.transpose(0, 2, 3, 1))
        oh, ow, _ = ref.Window.of(3, stride, dilation, pads).resolve(h, w_)
        onnx_pads = (pads[0], pads[1], pads[2], pads[3])
        model = onnxrt.qlinear_conv((n, c, h, w_), w_onnx, bias, s_x, z_x, s_w, s_y, z_y, (n, oc, oh, ow), stride,
                                    onnx_pads, dilation, c if depthwise else 1)
        want = onnxrt.run(model, np.ascontiguousarray(x.transpose(0, 3, 1, 2))).transpose(0, 2, 3, 1)

        def compute(rounding, x=x, w_ref=w_ref, bias=bias, s_x=s_x, s_w=s_w, s_y=s_y, z_x=z_x, z_y=z_y,
                    stride=stride, dilation=dilation, pads=pads, depthwise=depthwise):
            rq = ref.op_multipliers("conv", s_x, s_w, s_y, rounding)
            fn = ref.depthwise_conv2d if depthwise else ref.conv2d
            return fn(x, w_ref, bias, rq, in_zp=z_x, out_zp=z_y, stride=stride, padding=pads, dilation=dilation)

        got = compute("onnx")
        assert got.shape == want.shape and int((got != want).sum()) == 0, (depthwise, ties)
        if ties:
            assert_other_roundings_differ(want, compute, "onnx")
        total += want.size
    assert total >= MIN_OUTPUTS


def test_quantize_linear_is_bit_exact_with_onnxruntime(onnxrt):
    rng = np.random.default_rng(900)
    scale, zp = f32(0.0625), 5
    ties = (rng.integers(-150, 150, 500_000) + 0.5) * scale
    x = np.concatenate([ties, rng.normal(0, 5, 548_576), [np.inf, -np.inf, 1e30]]).astype(np.float32)
    want = onnxrt.run(onnxrt.quantize_linear([x.size], scale, zp), x)
    got = ref.quantize(x, scale, zp, "onnx")
    assert int((got != want).sum()) == 0
    assert (ref.quantize(x, scale, zp) != want).sum() > 0


def test_int8_max_pool_is_bit_exact_with_onnxruntime(onnxrt):
    rng = np.random.default_rng(1000)
    x = data(rng, (4, 64, 64, 64), False)
    pads = (0, 0, 1, 1)
    want = onnxrt.run(onnxrt.max_pool((4, 64, 64, 64), (2, 2), (1, 1), pads, (4, 64, 64, 64)),
                      np.ascontiguousarray(x.transpose(0, 3, 1, 2))).transpose(0, 2, 3, 1)
    got = ref.max_pool2d(x, 2, 1, pads)
    assert got.size >= MIN_OUTPUTS and int((got != want).sum()) == 0
