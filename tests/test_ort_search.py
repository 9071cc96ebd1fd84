"""The model-guided search: per group of tensors, the method that gives the better output SQNR."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecal import Calibrator, InputError
from edgecal.methods import registry

pytest.importorskip("onnxruntime", reason="the search quantizes and runs the model in ONNX Runtime (test extra)")
pytest.importorskip("onnx", reason="the search reads the ONNX graph (test extra)")

from ort_helpers import batches, build_model, ort_values, run  # noqa: E402

from edgecal.model.ort_quant import quantize_onnx  # noqa: E402
from edgecal.model.ort_search import search_table, searched_entry_methods  # noqa: E402


@pytest.fixture
def crush(monkeypatch):
    """A registered method that keeps 1/50 of max |x|: ruinous wherever it is used."""
    def crush_fn(hist):
        """1/50 of max |x|."""
        return hist.amax / 50

    monkeypatch.setitem(registry._METHODS, "crush", registry.Method("crush", crush_fn, {}, "1/50 of max |x|"))


@pytest.fixture
def setup(tmp_path):
    model = build_model(tmp_path / "m.onnx")
    xs = batches(3)
    cal = Calibrator()
    for x in xs:
        cal.observe_many(ort_values(model, x))
    return model, cal, [{"x": x} for x in xs]


def output_sqnr(model, table, feeds, tmp_path) -> float:
    out = tmp_path / "check.int8.onnx"
    quantize_onnx(model, out, table, activations="s8", missing="float")
    signal = err = 0.0
    for f in feeds:
        ref, got = run(model, f["x"]).astype(np.float64), run(out, f["x"]).astype(np.float64)
        signal, err = signal + float(np.sum(ref ** 2)), err + float(np.sum((ref - got) ** 2))
    return 10 * math.log10(signal / err)


def test_one_group_leaves_a_ruinous_start_for_the_better_method(setup, crush, tmp_path):
    model, cal, feeds = setup
    table, steps = search_table(model, cal, feeds, methods=("crush", "minmax"), groups=1)
    assert searched_entry_methods(table) == {"minmax": len(table)} and [s.chosen for s in steps] == ["minmax"]
    start = output_sqnr(model, cal.compute("crush", scheme="tflite"), feeds, tmp_path)
    found = output_sqnr(model, table, feeds, tmp_path)
    assert found > start + 10 and steps[0].sqnr_db["minmax"] == pytest.approx(found, abs=1e-9)


def test_each_group_moves_exactly_when_the_model_scores_the_other_method_higher(setup, tmp_path):
    model, cal, feeds = setup
    table, steps = search_table(model, cal, feeds, methods=("percentile", "minmax"), groups=3)
    assert len(steps) == 3
    best = steps[0].sqnr_db["percentile"]
    for s in steps:
        assert s.sqnr_db["percentile"] == pytest.approx(best, abs=1e-9)  # each group starts where the last ended
        assert (s.chosen == "minmax") == (s.sqnr_db["minmax"] > best)
        assert all(table[n].method == s.chosen for n in s.tensors)
        best = max(best, s.sqnr_db["minmax"])
    assert output_sqnr(model, table, feeds, tmp_path) == pytest.approx(best, abs=1e-3)


def test_the_search_keeps_a_good_start_against_a_ruinous_alternative(setup, crush):
    model, cal, feeds = setup
    table, steps = search_table(model, cal, feeds, methods=("minmax", "crush"), groups=2)
    assert searched_entry_methods(table) == {"minmax": len(table)} and [s.chosen for s in steps] == ["minmax"] * 2
    assert list(table.values()) == list(cal.compute("minmax", scheme="tflite").values())
    assert sorted(n for s in steps for n in s.tensors) == sorted(table)  # every tensor in exactly one group


@pytest.mark.parametrize("kwargs, message", [
    ({"methods": ()}, "methods must name at least one method"),
    ({"methods": ("mse", "mse")}, "each once"),
    ({"groups": 0}, r"groups must be an integer in \[1, 1024\]"),
    ({"feeds": []}, "at least one calibration input"),
])
def test_bad_search_arguments_are_one_line_errors(setup, kwargs, message):
    model, cal, feeds = setup
    args = {"methods": ("mse", "percentile"), "groups": 2, "feeds": feeds, **kwargs}
    with pytest.raises(InputError, match=message):
        search_table(model, cal, args.pop("feeds"), **args)


def test_calibrate_search_writes_the_searched_table(tmp_path, capsys):
    from edgecal import CalibrationTable
    from edgecal.cli import main

    model = build_model(tmp_path / "m.onnx")
    (tmp_path / "in").mkdir()
    for i, x in enumerate(batches(3)):
        np.save(tmp_path / "in" / f"b{i}.npy", x)
    out = tmp_path / "t.json"
    assert main(["calibrate", "--model", str(model), "--inputs", str(tmp_path / "in"), "--runtime", "onnxruntime",
                 "--scheme", "tflite", "--search", "2", "-m", "minmax", "--search-methods", "mse", "-o", str(out),
                 "-q"]) == 0
    printed = capsys.readouterr().out
    assert "searched 2 groups of tensors over minmax, mse on 3 input files" in printed
    table = CalibrationTable.load(out)
    assert {e.method for e in table.values()} <= {"minmax", "mse"} and len(table) == 5


def test_search_without_an_onnx_model_is_one_line(tmp_path, capsys):
    from edgecal.cli import main

    np.save(tmp_path / "x.npy", np.arange(4.0))
    assert main(["calibrate", str(tmp_path / "x.npy"), "--search", "2", "-o", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--search runs the ONNX model in ONNX Runtime" in err[0]
    assert not (tmp_path / "t.json").exists()


def test_calibrate_with_an_onnx_model_searches_by_default_and_search_0_turns_it_off(tmp_path, capsys):
    from edgecal import CalibrationTable
    from edgecal.cli import main

    model = build_model(tmp_path / "m.onnx")
    (tmp_path / "in").mkdir()
    for i, x in enumerate(batches(2)):
        np.save(tmp_path / "in" / f"b{i}.npy", x)
    searched, plain = tmp_path / "s.json", tmp_path / "p.json"
    base = ["calibrate", "--model", str(model), "--inputs", str(tmp_path / "in"), "--scheme", "tflite", "-q"]
    assert main([*base, "-o", str(searched)]) == 0
    assert "searched 5 groups of tensors over mse, percentile on 2 input files" in capsys.readouterr().out  # 8 asked, 5 tensors
    assert main([*base, "--search", "0", "-o", str(plain)]) == 0
    assert "searched" not in capsys.readouterr().out
    assert {e.method for e in CalibrationTable.load(plain).values()} == {"mse"}
    assert {e.method for e in CalibrationTable.load(searched).values()} <= {"mse", "percentile"}
    assert main([*base, "-p", "candidates=64", "-o", str(plain)]) == 0  # parameters given: the method alone
    assert "searched" not in capsys.readouterr().out
