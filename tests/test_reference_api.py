"""The public surface of `edgecal.reference`: names that do not shadow each other, one way to pass the rounding,
multipliers per op that cannot be mixed up, and dequantize without numpy's warnings."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings

import numpy as np
import pytest

from edgecal import InputError
from edgecal import reference as ref


def test_no_submodule_is_hidden_by_a_public_function_of_the_same_name():
    submodules = {m.name for m in pkgutil.iter_modules(ref.__path__)}
    assert submodules and not submodules & set(ref.__all__)
    module = importlib.import_module("edgecal.reference.quantization")
    assert inspect.ismodule(module) and ref.quantize is module.quantize and callable(ref.quantize)


def test_dequantize_beyond_float32_is_inf_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ref.dequantize(np.array([127, -128, 0, 1], np.int8), 3e38)
    assert np.isposinf(got[0]) and np.isneginf(got[1]) and got[2] == 0 and got[3] == np.float32(3e38)


X = np.array([[10, -20, 30]], np.int8)
W = np.array([[100, 50, -127]], np.int8)
X4 = np.arange(-8, 8, dtype=np.int8).reshape(1, 4, 2, 2)


def kernels(rq, **kw):
    return {
        "fully connected": lambda: ref.fully_connected(X, W, None, rq, in_zp=-1, **kw),
        "conv": lambda: ref.conv2d(X4, np.ones((1, 2, 2, 2), np.int8), None, rq, **kw),
        "depthwise": lambda: ref.depthwise_conv2d(X4, np.ones((1, 2, 2, 2), np.int8), None,
                                                  ref.Requant.from_real([0.3, 0.3], rq.rounding), **kw),
        "requantize": lambda: ref.requantize(np.array([5, -6, -10, 10]), rq, **kw),
    }


@pytest.mark.parametrize("what", ["fully connected", "conv", "depthwise", "requantize"])
@pytest.mark.parametrize("rounding", ["tflite", "tflite-single", "onnx"])
def test_every_kernel_takes_rounding_and_it_must_match_the_requant(what, rounding):
    rq = ref.Requant.from_real([0.3], rounding)
    plain = kernels(rq)[what]()
    assert np.array_equal(kernels(rq, rounding=rounding)[what](), plain)
    other = "onnx" if rounding != "onnx" else "tflite"
    with pytest.raises(InputError, match=f"{what}: rounding '{other}' but the Requant was built for '{rounding}'"):
        kernels(rq, rounding=other)[what]()
    assert np.array_equal(ref.add(X, X, (0.5, 0), (0.5, 0), (0.5, 0), rounding=rounding),
                          ref.add(X, X, (0.5, 0), (0.5, 0), (0.5, 0), (-128, 127), rounding))


def test_unknown_multiplier_op_lists_the_known_ones():
    with pytest.raises(InputError, match="unknown op 'fc_f32' for multipliers; expected one of conv, depthwise, fc, "
                                         "fc-float32"):
        ref.op_multipliers("fc_f32", 0.5, [0.01], 0.25)
