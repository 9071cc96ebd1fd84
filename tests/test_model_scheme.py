"""The TFLite scheme in tables: never-negative tensors get zero point -128 and 256 levels; writers convert or keep it."""

from __future__ import annotations

import numpy as np
import pytest

from edgecal import Calibrator, CalibrationTable, InputError, TensorCalibration
from edgecal.formats import cheader, ecal, jsonfmt, ncnn, ort, trt
from edgecal.methods import kl_search


def calibrated():
    rng = np.random.default_rng(0)
    cal = Calibrator()
    cal.observe("relu", np.maximum(rng.normal(0, 1, 20000), 0))
    cal.observe("signed", rng.normal(0, 1, 20000))
    cal.observe("zeros", np.zeros(10))
    return cal


def test_tflite_scheme_gives_never_negative_tensors_256_levels():
    cal = calibrated()
    t = cal.compute("kl", scheme="tflite")
    relu, signed = t["relu"], t["signed"]
    h = cal.histogram("relu")
    assert relu.amax == kl_search(h.occupied_abs_counts(), 256, 128) * h.bin_width
    assert (relu.scheme, relu.zero_point, relu.scale, relu.params["num_levels"]) == ("tflite", -128, relu.amax / 255, 256)
    assert (relu.qmin, relu.qmax) == (-128, 127)
    # signed tensors: kl runs on each sign (128 levels each) and the range [lo, hi] gets 256 levels
    hs = cal.histogram("signed")
    nz_pos, nz_neg = np.flatnonzero(hs.positive_counts()), np.flatnonzero(hs.negative_counts())
    hi = kl_search(hs.positive_counts()[: nz_pos[-1] + 1], 128, 128) * hs.bin_width
    lo = -kl_search(hs.negative_counts()[: nz_neg[-1] + 1], 128, 128) * hs.bin_width
    assert signed == TensorCalibration.asymmetric("signed", lo, hi, method="kl", params=signed.params,
                                                  stats=signed.stats, flags=signed.flags)
    assert signed.range[0] == pytest.approx(lo, abs=signed.scale) and signed.range[1] == pytest.approx(hi, abs=signed.scale)
    assert (t["zeros"].amax, t["zeros"].zero_point, t["zeros"].flags) == (1.0, -128, ("all_zero",))
    explicit = cal.compute("kl", scheme="tflite", num_levels=128)["relu"]
    assert explicit.params["num_levels"] == 128 and explicit.amax == kl_search(h.occupied_abs_counts(), 128) * h.bin_width
    assert cal.compute("minmax", scheme="tflite")["relu"].scale == h.amax / 255


def test_unknown_scheme_is_refused():
    with pytest.raises(InputError, match="unknown scheme 'uint8'; known schemes: symmetric, tflite"):
        calibrated().compute("kl", scheme="uint8")


def test_tflite_tables_round_trip_and_convert_by_the_stated_rule():
    t = calibrated().compute("kl", scheme="tflite")
    assert jsonfmt.read_json(jsonfmt.write_json(t)) == t
    assert ecal.read_ecal(ecal.write_ecal(t)) == t
    relu = t["relu"]
    assert relu.as_symmetric().amax == pytest.approx(relu.amax, rel=1e-15) and relu.as_symmetric().zero_point == 0
    assert trt.read_trt(trt.write_trt(t))["relu"].amax == pytest.approx(relu.amax, rel=1e-6)
    assert ort.read_ort(ort.write_ort(t))["relu"].amax == pytest.approx(relu.amax, rel=1e-15)
    assert ncnn.write_ncnn(t).decode().splitlines()[0] == f"relu {np.float32(127 / relu.as_symmetric().amax):.9g}"
    header = cheader.write_c(t).decode()
    zps = header.split("int32_t edgecal_zero_points[EDGECAL_NUM_TENSORS] = {")[1].split("};")[0].split()
    assert zps == [f"{e.zero_point}," for e in t.values()] and zps[0] == zps[2] == "-128,"
    odd = TensorCalibration("x", amax=2.0, scale=2.0 / 255, zero_point=-100, scheme="tflite")
    assert odd.as_symmetric().amax == pytest.approx(227 * 2.0 / 255)  # max(|-128 + 100|, |127 + 100|) steps
    with pytest.raises(InputError, match="zero point in \\[-128, 127\\]"):
        TensorCalibration("x", amax=2.0, scale=0.01, zero_point=-129, scheme="tflite")


def test_calibrate_cli_takes_a_scheme(tmp_path, capsys):
    from edgecal.cli import main

    np.save(tmp_path / "act.npy", np.linspace(0, 4, 1000))
    assert main(["calibrate", str(tmp_path / "act.npy"), "-o", str(tmp_path / "t.json"), "--scheme", "tflite"]) == 0
    assert CalibrationTable.load(tmp_path / "t.json")["act"].zero_point == -128
    assert main(["calibrate", str(tmp_path / "act.npy"), "-o", str(tmp_path / "u.json"), "--scheme", "x"]) == 2
    assert "unknown scheme 'x'" in capsys.readouterr().err and not (tmp_path / "u.json").exists()
