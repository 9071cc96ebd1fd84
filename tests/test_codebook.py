"""codebook: Lloyd-Max and KL levels against dense-integration twins, the LUT in tables, formats, C and the check."""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import naive
from edgecal import Calibrator, CalibrationTable, InputError, StateError, StreamingHistogram
from edgecal.formats import get_format
from edgecal.formats.ecal import read_ecal, write_ecal
from edgecal.methods import get_method
from edgecal.methods.codebook import _prefix, fit_levels, kl_level_gradient, kl_of, lloyd, mse_of, pieces
from edgecal.reference import lut_bounds, lut_dequantize, lut_quantize
from edgecal.table import TensorCalibration

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware_interface"


def hist_of(x, bins=512) -> StreamingHistogram:
    h = StreamingHistogram(bins)
    h.update(np.asarray(x, dtype=np.float64))
    return h


SAMPLES = {
    "gauss": lambda r: r.standard_normal(100000),
    "student-t3": lambda r: r.standard_t(3, 100000),
    "bimodal": lambda r: np.concatenate([r.normal(1, 0.2, 50000), r.normal(6, 0.5, 50000)]),
    "relu": lambda r: np.maximum(r.standard_normal(100000), 0),
    "laplace, one-sided": lambda r: -np.abs(r.laplace(size=100000)),
}


def density_of(dist, bins=64):
    xs, ds, zeros = pieces(hist_of(SAMPLES[dist](np.random.default_rng(1)), bins))
    return xs, ds, zeros, _prefix(xs, ds)


def sqnr_lut(x, levels):
    q = lut_dequantize(lut_quantize(x, levels), levels).astype(np.float64)
    return 10 * np.log10(np.sum(x * x) / np.sum((x - q) ** 2))


def sqnr_uniform(x, amax):
    s = amax / 127
    q = np.clip(np.rint(x / s), -127, 127) * s
    return 10 * np.log10(np.sum(x * x) / np.sum((x - q) ** 2))


@pytest.mark.parametrize("dist", sorted(SAMPLES))
def test_error_and_one_lloyd_round_match_dense_integration(dist):
    xs, ds, zeros, pre = density_of(dist)
    levels = np.sort(np.random.default_rng(2).uniform(xs[0], xs[-1], 8))
    dense = 100_000  # midpoint rule: exact but for the grid cells a density jump crosses
    assert mse_of(xs, ds, pre, zeros, levels) == pytest.approx(naive.codebook_mse(xs, ds, zeros, levels, dense), rel=1e-5)
    assert kl_of(xs, ds, pre, levels) == pytest.approx(naive.codebook_kl_part(xs, ds, levels), rel=1e-9, abs=1e-9)
    stepped = levels.copy()
    lloyd(xs, ds, pre, zeros, stepped, 1, 0.0)
    np.testing.assert_allclose(stepped, naive.lloyd_step(xs, ds, zeros, levels), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dist", ["gauss", "student-t3", "bimodal"])
def test_kl_gradient_matches_central_differences(dist):
    xs, ds, _, pre = density_of(dist)
    rng = np.random.default_rng(3)
    levels = np.sort(rng.uniform(xs[0] * 0.8, xs[-1] * 0.8, 16)) + 1e-3 * rng.random()
    g = np.empty(16)
    kl_level_gradient(xs, ds, pre, levels, g)
    h = 1e-6
    for k in range(16):
        up, down = levels.copy(), levels.copy()
        up[k] += h
        down[k] -= h
        fd = (kl_of(xs, ds, pre, up) - kl_of(xs, ds, pre, down)) / (2 * h)
        assert g[k] == pytest.approx(fd, rel=1e-4, abs=1e-4 * max(1.0, abs(fd)))


@pytest.mark.parametrize("objective", ["mse", "kl"])
@pytest.mark.parametrize("dist", sorted(SAMPLES))
def test_the_optimiser_lowers_its_objective_and_keeps_zeros_exact(dist, objective):
    h = hist_of(SAMPLES[dist](np.random.default_rng(4)), 1024)
    levels, rec = fit_levels(h, 6, objective)
    assert levels.size == 64 and np.all(np.diff(levels) > 0)
    assert rec["end"] < rec["start"] and rec["rounds"] >= 2 and rec["last_move"] >= 0
    if h.zeros:
        assert 0.0 in levels
    assert h.min - 1e-9 <= levels[0] and levels[-1] <= h.max + 1e-9


@pytest.mark.parametrize("dist,gain", [("student-t3", 1.0), ("bimodal", 5.0), ("gauss", 1.0)])
def test_lloyd_max_codebook_beats_uniform_int8_on_sqnr(dist, gain):
    x = SAMPLES[dist](np.random.default_rng(5))
    h = hist_of(x, 2048)
    levels = get_method("codebook")(h).lut
    assert sqnr_lut(x, levels) > sqnr_uniform(x, get_method("mse")(h)) + gain


def test_reference_quantize_is_the_literal_nearest_level_rule():
    rng = np.random.default_rng(6)
    levels = tuple(np.sort(rng.normal(size=32)))
    b = lut_bounds(levels)
    x = np.concatenate([rng.normal(size=500) * 2, b, np.nextafter(b, -np.inf), [np.nan, np.inf, -np.inf, 0.0]])
    codes = lut_quantize(x, levels)
    assert codes.tolist() == [naive.lut_code(v, levels) for v in x]
    finite = np.isfinite(x) & ~np.isin(x.astype(np.float32), b)
    near = np.abs(x[finite, None] - np.array(levels)[None, :]).argmin(axis=1)
    assert np.mean(near == codes[finite]) > 0.98  # nearest level, but for values within float32 rounding of a bound


def test_calibrate_puts_the_levels_in_the_entry_and_json_and_ecal_keep_them(tmp_path):
    cal = Calibrator(1024)
    cal.observe("t", SAMPLES["student-t3"](np.random.default_rng(7)))
    cal.observe("r", SAMPLES["relu"](np.random.default_rng(7)))
    for scheme in ("symmetric", "tflite"):
        table = cal.compute("codebook", scheme=scheme, bits=5)
        e = table["t"]
        assert len(e.lut) == 32 and e.amax == pytest.approx(max(abs(e.lut[0]), abs(e.lut[-1])), rel=1e-9) or scheme == "tflite"
        assert e.params["trace"]["objective"] == "mse" and "clipped_heavy" not in e.flags
        for suffix in (".json", ".ecal"):
            table.save(tmp_path / f"t{suffix}")
            back = CalibrationTable.load(tmp_path / f"t{suffix}")
            assert back == table and back["t"].lut == e.lut


def test_an_ecal_entry_appends_the_lut_where_old_readers_skip_it():
    plain = TensorCalibration.symmetric("x", 2.0, method="codebook")
    coded = TensorCalibration.symmetric("x", 2.0, method="codebook", lut=(-2.0, -0.5, 0.5, 2.0))
    a = write_ecal(CalibrationTable([plain], created="2026-01-01T00:00:00Z", edgecal_version="1"))
    b = write_ecal(CalibrationTable([coded], created="2026-01-01T00:00:00Z", edgecal_version="1"))
    start = 16 + struct.unpack_from("<I", a, 12)[0]
    la, lb = struct.unpack_from("<H", a, start)[0], struct.unpack_from("<H", b, start)[0]
    assert lb == la + 4 + 2 + 4 * 8  # tag, count and four f64 levels appended
    assert a[start + 2:start + la] == b[start + 2:start + la]  # everything an old reader reads is unchanged
    assert struct.unpack_from("<4sH4d", b, start + la) == (b"LUT1", 4, -2.0, -0.5, 0.5, 2.0)
    assert read_ecal(b)["x"].lut == coded.lut and read_ecal(a)["x"].lut is None


def test_a_truncated_appended_lut_is_refused():
    coded = TensorCalibration.symmetric("x", 2.0, lut=(-2.0, -0.5, 0.5, 2.0))
    data = bytearray(write_ecal(CalibrationTable([coded], created="2026-01-01T00:00:00Z", edgecal_version="1")))
    start = 16 + struct.unpack_from("<I", data, 12)[0]
    length = struct.unpack_from("<H", data, start)[0]
    struct.pack_into("<H", data, start + length - 34, 9)  # claims 9 levels where 4 are stored
    import zlib
    struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    with pytest.raises(StateError, match="codebook of 34 bytes after its tag; expected a level count and 9 f64 levels"):
        read_ecal(bytes(data))


@pytest.mark.parametrize("lut,match", [
    ((1.0, 2.0, 3.0), "has 3 levels; expected a power of two"),
    ((1.0, 1.0), "strictly ascending"),
    ((0.0, math.inf), "finite"),
    (("a", "b"), "sequence of numbers"),
])
def test_bad_luts_are_refused(lut, match):
    with pytest.raises(InputError, match=match):
        TensorCalibration.symmetric("x", 1.0, lut=lut)


@pytest.mark.parametrize("fmt,what", [("trt", "a TensorRT cache"), ("ncnn", "an ncnn table"),
                                      ("ort", "an ONNX Runtime table")])
def test_formats_without_a_lut_refuse_codebook_entries_in_one_line(fmt, what):
    table = CalibrationTable([TensorCalibration.symmetric("x", 2.0, lut=(-2.0, 2.0))])
    with pytest.raises(InputError, match=f"tensor 'x' has a codebook \\(2-level LUT\\); {what} holds uniform int8 "
                                         "scales only; write json, ecal or c"):
        get_format(fmt).write(table)


def test_c_header_holds_levels_and_boundaries_only_when_there_is_a_codebook():
    lut = (-1.5, -0.25, 0.1, 3.0)
    table = CalibrationTable([TensorCalibration.symmetric("a:0", 3.0, lut=lut), TensorCalibration.symmetric("b", 1.0)])
    text = get_format("c").write(table).decode()
    levels = np.float32([v.rstrip("f,") for v in text.split("edgecal_lut_A_0[4] = {")[1].split("};")[0].split()])
    bounds = np.float32([v.rstrip("f,") for v in text.split("edgecal_bounds_A_0[3] = {")[1].split("};")[0].split()])
    assert levels.tolist() == np.float32(lut).tolist() and bounds.tolist() == lut_bounds(lut).tolist()  # as C reads them
    assert "edgecal_lut_A_0,\n    NULL," in text and "edgecal_lut_sizes[EDGECAL_NUM_TENSORS] = {\n    4,\n    0," in text
    plain = get_format("c").write(CalibrationTable([TensorCalibration.symmetric("b", 1.0)])).decode()
    assert "lut" not in plain


@pytest.fixture(scope="module")
def lut_exe(tmp_path_factory):
    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("gcc not installed: the C codebook routine is not built")
    out = tmp_path_factory.mktemp("lut") / "test_ecal_lut"
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-D_POSIX_C_SOURCE=199309L",
                    f"-I{FIRMWARE / 'include'}", str(FIRMWARE / "src/ecal_lut.c"), str(FIRMWARE / "tests/test_ecal_lut.c"),
                    "-o", str(out)], check=True)
    return out


def c_input(levels, values=()):
    b = lut_bounds(levels)
    nums = [str(len(levels)), *(f"{np.float32(v):.9e}" for v in levels), *(f"{v:.9e}" for v in b)]
    return "\n".join(nums + ["nan" if np.isnan(v) else f"{np.float32(v):.9e}" for v in values]) + "\n"


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_c_routine_gives_the_reference_codes_and_values(lut_exe, bits):
    rng = np.random.default_rng(bits)
    levels = tuple(np.sort(rng.standard_t(3, 1 << bits)).tolist())
    if len(set(levels)) < len(levels):
        pytest.fail("draw gave equal levels")
    b = lut_bounds(levels)
    x = np.concatenate([rng.standard_t(3, 3000), b, np.nextafter(b, -np.inf), [np.nan, 1e30, -1e30]]).astype(np.float32)
    out = subprocess.run([str(lut_exe)], input=c_input(levels, x), capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    assert [int(r[0]) for r in rows] == lut_quantize(x, levels).tolist()
    assert np.float32([r[1] for r in rows]).tolist() == lut_dequantize(lut_quantize(x, levels), levels).tolist()


def test_check_codebook_runs_the_model_with_snapped_activations(tmp_path):
    pytest.importorskip("onnx")
    import source_models as sm
    from edgecal.model.graph import load_graph
    from edgecal.model.lut_check import check_codebook

    x = np.random.default_rng(9).normal(size=(64, 4)).astype(np.float32)
    ref = sm.reference(x)
    cal = Calibrator(1024)
    for name, v in ref.items():
        cal.observe(name, v)
    table = cal.compute("codebook", bits=3)
    report = check_codebook(load_graph(sm.onnx_model(tmp_path / "m.onnx")), table, {"x": x},
                            labels=np.argmax(ref["y"], axis=1))

    def snap(name, v):
        return lut_dequantize(lut_quantize(v, table[name].lut), table[name].lut).astype(np.float32)

    xs = snap("x", x)
    h = snap("h", xs @ sm.W.T + sm.B)
    r = snap("r", np.maximum(h, 0))
    y = snap("y", r + sm.C)
    want = {"x": xs, "h": h, "r": r, "y": y}
    assert [t.name for t in report.tensors] == ["x", "h", "r", "y"]
    for t in report.tensors:
        f = ref[t.name].astype(np.float64)
        assert t.sqnr_db == pytest.approx(10 * np.log10(np.sum(f * f) / np.sum((f - want[t.name]) ** 2)), rel=1e-5)
    assert report.top1_agreement == pytest.approx(np.mean(y.argmax(1) == ref["y"].argmax(1)))
    assert report.float_accuracy == 1.0 and report.rounding == "lut"


def test_codebook_runs_through_the_calibrate_command(tmp_path):
    from edgecal.cli import main

    np.save(tmp_path / "layer.npy", SAMPLES["bimodal"](np.random.default_rng(10)))
    out = tmp_path / "t.ecal"
    assert main(["calibrate", str(tmp_path / "layer.npy"), "-o", str(out), "-m", "codebook",
                 "-p", "bits=4", "-p", "objective=kl"]) == 0
    e = CalibrationTable.load(out)["layer"]
    assert len(e.lut) == 16 and e.params["objective"] == "kl" and e.params["trace"]["end"] < e.params["trace"]["start"]


@pytest.mark.parametrize("params,match", [({"objective": "l1"}, "objective must be 'mse' or 'kl'"),
                                          ({"bits": 9}, r"parameter 'bits' must be in \[1, 8\]")])
def test_bad_codebook_parameters_are_refused(params, match):
    with pytest.raises(InputError, match=match):
        get_method("codebook")(hist_of([1.0, 2.0, -3.0]), **params)


def test_a_histogram_of_zeros_only_has_no_codebook():
    with pytest.raises(InputError, match="no non-zero finite value"):
        fit_levels(hist_of([0.0, 0.0]))


@pytest.fixture(scope="module")
def digits(digits_files, tmp_path_factory):
    """The packaged digits CNN, its calibration and evaluation files, and a 4-bit codebook table of it."""
    from importlib import resources

    from edgecal.cli import main

    model = str(resources.files("edgecal").joinpath("data/digits_cnn.onnx"))
    tables = tmp_path_factory.mktemp("digits-codebook")
    assert main(["calibrate", "--model", model, "--inputs", str(digits_files / "calib"), "-o", str(tables / "cb4.json"),
                 "-m", "codebook", "-p", "bits=4", "-q"]) == 0
    return model, tables, digits_files


def test_check_command_runs_a_codebook_table_with_snapped_activations(digits, capsys):
    from edgecal.cli import main

    model, tables, data = digits
    capsys.readouterr()
    assert main(["check", "--model", model, "--table", str(tables / "cb4.json"), "--data", str(data / "eval.npz"),
                 "--labels", "y", "--runtime", "edgecal", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rounding"] == "lut" and report["samples"] == 597 and report["top1_agreement"] > 0.9
    assert {t["op"] for t in report["tensors"]} == {"codebook"} and "image" in {t["name"] for t in report["tensors"]}


def test_check_refuses_a_codebook_table_on_onnxruntime(digits, capsys):
    from edgecal.cli import main

    model, tables, data = digits
    assert main(["check", "--model", model, "--table", str(tables / "cb4.json"), "--data", str(data / "eval.npz"),
                 "--runtime", "onnxruntime"]) == 2
    assert "has codebook (LUT) entries; check them with --runtime edgecal --data D.npz" in capsys.readouterr().err


def test_levels_that_meet_at_zero_stay_apart_after_scaling_to_real_units():
    """A post-ReLU float32 tensor with many zeros: the KL codebook's levels must ascend strictly in real units."""
    from edgecal import Calibrator

    x = np.maximum(np.random.default_rng(0).normal(-0.2, 1, 10**6), 0).astype(np.float32)
    cal = Calibrator()
    cal.observe("t", x)
    for scheme in ("symmetric", "tflite"):
        lut = np.array(cal.compute("codebook", scheme=scheme, objective="kl")["t"].lut)
        assert lut.size == 256 and np.all(np.diff(lut) > 0) and 0.0 in lut
