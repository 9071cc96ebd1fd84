"""`edgecal report`: the page, its images, what it says of each tensor, its errors, and how a browser shows it."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import naive
import numpy as np
import pytest

from edgecal.calibrator import Calibrator
from edgecal.cli import main
from edgecal.histogram import StreamingHistogram
from edgecal.methods import get_method, method_names
from edgecal.metrics import sqnr_db
from edgecal.report import expected_sqnr_db
from edgecal.report.views import density, kl_curve
from edgecal.table import CalibrationTable, TensorCalibration, TensorStats

# Drawing needs the report extra; the arithmetic and the missing-extra error are tested without it.
needs_mpl = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                               reason="the report extra (matplotlib) is not installed: pip install -e '.[report]'")
SIZE = (800, 600)  # every image of the report, in pixels
CHROMIUM = "/usr/bin/chromium"
ODD = "block/0:out <b>&\"$x$\""  # a name with HTML, path and mathtext characters
NAMES = ["relu", "gauss", "heavy", "zeros", "const", "nan", ODD]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    """(state path, every value fed per tensor): one tensor of each kind a report must show, seeded."""
    rng = np.random.default_rng(7)
    cal, seen = Calibrator(1024), {name: [] for name in NAMES}
    for _ in range(4):
        batch = {"relu": np.maximum(rng.normal(size=2000), 0.0), "gauss": rng.normal(0.5, 2.0, size=2000),
                 "heavy": np.concatenate([rng.laplace(size=1960), rng.uniform(10, 200, size=40)]),
                 "zeros": np.zeros(100), "const": np.full(100, 3.5),
                 "nan": np.concatenate([rng.normal(size=500), [np.nan, np.inf]]), ODD: rng.uniform(-1, 1, size=300)}
        for name, x in batch.items():
            cal.observe(name, x)
            seen[name].append(x)
    path = tmp_path_factory.mktemp("state") / "cal.ecst"
    cal.save_state(path)
    return path, {name: np.concatenate(xs) for name, xs in seen.items()}


@pytest.fixture(scope="module")
def state(fed):
    return fed[0]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A table whose entries carry every flag a table can hold."""
    stats = TensorStats(samples=3, count=1000, zeros=10, nans=2, min=-1.5, max=4.0)
    entries = [TensorCalibration.symmetric("a", 2.0, method="kl", stats=stats, flags=("clipped_heavy",)),
               TensorCalibration.asymmetric("b", -1.0, 3.0, method="mse", stats=stats, flags=("nonfinite",)),
               TensorCalibration.symmetric("c", 1.0, method="mse", flags=("all_zero",)),
               TensorCalibration.symmetric("d", 0.5, method="minmax", flags=("constant", "fallback")),
               TensorCalibration.symmetric(ODD, 1.0, method="mse")]
    path = tmp_path_factory.mktemp("table") / "t.json"
    CalibrationTable(entries).save(path)
    return path


class Page(HTMLParser):
    """The sections (by data-tensor), images, attributes of <body> and every URL-bearing attribute of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.body: dict[str, str] = {}
        self.urls: list[str] = []
        self.rows: dict[str, list[list[str]]] = {}
        self._section: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "body":
            self.body = a
        elif tag == "section":
            self._section = a.get("data-tensor")
            self.sections.append(self._section)
            self.rows[self._section] = []
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "tr" and self._section is not None:
            self.rows[self._section].append([])
        elif tag in ("td", "th") and self._section is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._section is not None:
            self.rows[self._section][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def methods(self, tensor: str) -> dict[str, dict[str, str]]:
        """The per-method table of a tensor's section: method -> column -> cell."""
        head, *rows = self.rows[tensor]
        return {r[0]: dict(zip(head, r)) for r in rows}


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG whose every chunk has a correct CRC and whose image data inflates."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks.append(kind)
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and idat
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    assert len(zlib.decompress(idat)) == height * (1 + width * channels * depth // 8)
    return width, height


def report(args, out: Path, capsys) -> tuple[int, str, str]:
    code = main(["report", *map(str, args), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@needs_mpl
def test_state_report_names_every_tensor_and_draws_each_as_a_valid_png(state, tmp_path, capsys):
    code, out, err = report([state], tmp_path / "r", capsys)
    assert code == 0, err
    page = Page((tmp_path / "r" / "index.html").read_text(encoding="utf-8"))
    assert page.sections == NAMES
    assert len(page.images) == len(NAMES) and len(set(page.images)) == len(NAMES)
    for src in page.images:
        assert "/" not in src and (tmp_path / "r" / src).is_file()
        assert png_size(tmp_path / "r" / src) == SIZE
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted([*page.images, "index.html"])
    assert f"{len(NAMES)} tensors" in out


@needs_mpl
def test_state_report_shows_every_method_with_its_threshold_clipping_and_sqnr(fed, tmp_path, capsys):
    state, data = fed
    assert report([state], tmp_path / "r", capsys)[0] == 0
    page = Page((tmp_path / "r" / "index.html").read_text(encoding="utf-8"))
    cal = Calibrator.load_state(state)
    for name in NAMES:
        assert sorted(page.methods(name)) == method_names()
    gauss = page.methods("gauss")
    assert float(gauss["minmax"]["hi"]) == pytest.approx(np.abs(data["gauss"]).max(), rel=1e-3)
    assert gauss["minmax"]["clipped (at most)"] == "0%"
    assert float(gauss["kl"]["hi"]) == pytest.approx(get_method("kl")(cal.histogram("gauss")), rel=1e-3)
    x = data["heavy"]
    for method, row in page.methods("heavy").items():
        lo, hi, step = float(row["lo"]), float(row["hi"]), float(row["scale"])
        outside = np.mean((x < lo - step / 2) | (x > hi + step / 2))
        edge = np.mean(np.abs(np.abs(x) - hi) < 2 * cal.histogram("heavy").bin_width)  # the bin the cut falls in
        shown = float(row["clipped (at most)"].rstrip("%")) / 100  # shown to 3 significant digits
        assert outside * (1 - 5e-3) <= shown <= (outside + edge) * (1 + 5e-3), method
    sqnr = {m: float(r["expected SQNR"].split()[0]) for m, r in page.methods("gauss").items()}
    assert sqnr["mse"] >= max(sqnr.values()) - 0.01  # mse maximises this very quantity
    assert abs(sqnr["minmax"] - sqnr_db(data["gauss"], TensorCalibration.symmetric("g", np.abs(data["gauss"]).max()))) < 0.2


@needs_mpl
def test_state_report_flags_what_the_tables_flag(state, tmp_path, capsys):
    assert report([state], tmp_path / "r", capsys)[0] == 0
    page = Page((tmp_path / "r" / "index.html").read_text(encoding="utf-8"))
    cal = Calibrator.load_state(state)
    for method in method_names():
        table = cal.compute(method)
        for name in NAMES:
            assert page.methods(name)[method]["flags"] == (" ".join(table[name].flags) or "-"), (name, method)
    assert {r["flags"] for r in page.methods("zeros").values()} == {"all_zero"}
    assert {r["flags"] for r in page.methods("const").values()} == {"constant"}
    assert all("nonfinite" in r["flags"] for r in page.methods("nan").values())
    assert any("clipped_heavy" in r["flags"] for r in page.methods("heavy").values())


@needs_mpl
def test_table_report_shows_its_own_ranges_stats_and_flags(table, tmp_path, capsys):
    code, _, err = report([table], tmp_path / "r", capsys)
    assert code == 0, err
    text = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    page = Page(text)
    assert page.sections == ["a", "b", "c", "d", ODD]
    assert list(page.methods("a")) == ["kl"]  # a table alone: its own entry, no other method
    a, b, d = page.methods("a")["kl"], page.methods("b")["mse"], page.methods("d")["minmax"]
    assert (a["lo"], a["hi"], a["clipped (at most)"], a["expected SQNR"]) == ("-2", "2", "-", "-")
    # [-1, 3] in 255 steps of 4/255: zero point round(-128 + 63.75) = -64, range [-64, 191] * 4/255
    assert (b["lo"], b["hi"], b["zero point"], b["scale"]) == ("-1.004", "2.996", "-64", "0.01569")
    assert a["flags"] == "clipped_heavy" and b["flags"] == "nonfinite" and d["flags"] == "constant fallback"
    assert page.methods("c")["mse"]["flags"] == "all_zero"
    assert "1000 values in 3 arrays; 10 exact zeros, 2 NaN" in text
    for src in page.images:
        assert png_size(tmp_path / "r" / src) == SIZE


@needs_mpl
def test_a_tensor_without_finite_values_is_shown_without_ranges(tmp_path, capsys):
    cal = Calibrator(256)
    cal.observe("ok", np.linspace(-1, 1, 101))
    cal.observe("broken", np.array([np.nan, np.inf, np.nan]))
    cal.save_state(tmp_path / "s.ecst")
    code, _, err = report([tmp_path / "s.ecst"], tmp_path / "r", capsys)
    assert code == 0, err
    text = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    page = Page(text)
    assert page.sections == ["ok", "broken"] and page.methods("broken") == {}
    assert "3 values in 1 arrays; 0 exact zeros, 2 NaN, 1 +Inf, 0 -Inf" in text and "No finite value" in text
    assert sorted(page.methods("ok")) == method_names()
    assert png_size(tmp_path / "r" / page.images[1]) == SIZE
    only = Calibrator(256)
    only.observe("broken", np.array([np.nan]))
    only.save_state(tmp_path / "n.ecst")
    code, _, err = report([tmp_path / "n.ecst"], tmp_path / "n", capsys)
    assert code == 2
    _one_line_error(err, "none of the 1 tensors has a finite value")


def test_expected_sqnr_is_the_naive_integral_over_the_density():
    rng = np.random.default_rng(3)
    data = {"signed": rng.normal(0.3, 1.5, size=20000), "relu": np.maximum(rng.laplace(size=20000), 0),
            "tail": np.concatenate([rng.normal(size=5000), [30.0, -12.0]]), "few": np.array([0.0, 0.25, -1.0, 2.0])}
    for name, x in data.items():
        cal = Calibrator(256)
        cal.observe(name, x)
        h = cal.histogram(name)
        for scheme in ("symmetric", "tflite"):
            for method in ("minmax", "kl", "mse", "percentile"):
                e = cal.compute(method, scheme=scheme)[name]
                want = naive.expected_sqnr_db(h.positive_counts(), h.negative_counts(), h.bin_width, h.min, h.max,
                                              e.scale, e.zero_point, e.qmin, e.qmax)
                assert expected_sqnr_db(h, e) == pytest.approx(want, abs=1e-6), (name, scheme, method)


def test_expected_sqnr_is_close_to_the_sqnr_measured_on_the_data():
    x = np.random.default_rng(5).normal(size=200000)
    h = StreamingHistogram(8192)
    h.update(x)
    for amax in (1.0, 3.0, 5.0):
        entry = TensorCalibration.symmetric("x", amax)
        assert expected_sqnr_db(h, entry) == pytest.approx(sqnr_db(x, entry), abs=0.1)


def test_expected_sqnr_of_an_exact_grid_is_infinite():
    h = StreamingHistogram(256)
    h.update(np.zeros(10))
    assert expected_sqnr_db(h, TensorCalibration.symmetric("x", 1.0)) == float("inf")


def test_kl_curve_is_least_where_the_kl_method_cuts():
    x = np.concatenate([np.random.default_rng(1).laplace(size=50000), [40.0]])
    h = StreamingHistogram(2048)
    h.update(x)
    thresholds, kl = kl_curve(h)
    assert thresholds[-1] == pytest.approx(h.occupied_abs_counts().size * h.bin_width)
    best = np.flatnonzero(kl == kl[np.isfinite(kl)].min())[-1]
    assert thresholds[best] == get_method("kl")(h)
    assert kl_curve(StreamingHistogram(256)) is None


def test_density_keeps_every_count_over_the_occupied_signs():
    x = np.concatenate([np.random.default_rng(2).exponential(size=30000), np.zeros(7)])
    h = StreamingHistogram(8192)
    h.update(x)
    d = density(h, display_bins=100)
    assert d.edges[0] == 0.0 and d.edges[-1] >= x.max() and len(d.edges) == len(d.counts) + 1 <= 101
    assert d.counts.sum() == np.count_nonzero(x) and d.zeros == 7
    inside = [(x > lo) & (x < hi) for lo, hi in zip(d.edges[:-1], d.edges[1:])]
    assert [int(m.sum()) for m in inside] == pytest.approx(d.counts.tolist(), abs=1)  # edges: lattice bins
    h.update(np.array([-1.0]))
    assert density(h, display_bins=100).edges[0] < 0


@needs_mpl
def test_an_earlier_report_is_replaced_and_a_folder_of_other_files_refused(state, table, tmp_path, capsys):
    out = tmp_path / "r"
    assert report([state], out, capsys)[0] == 0
    assert report([table], out, capsys)[0] == 0
    assert Page((out / "index.html").read_text(encoding="utf-8")).sections == ["a", "b", "c", "d", ODD]
    assert len(list(out.iterdir())) == 6  # the state report's images went with it
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = report([state], other, capsys)
    assert code == 2 and "not an edgecal report" in err
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def _one_line_error(err: str, *words: str) -> None:
    """One error line, last (warnings about the data may come before it), naming ``words``."""
    lines = err.splitlines()
    assert lines and lines[-1].startswith("edgecal: error: "), err
    assert all(line.startswith("edgecal: warning: ") for line in lines[:-1]), err
    for w in words:
        assert w in lines[-1], err


def _nothing_written(parent: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{out.name}.edgecal-")]


@needs_mpl
@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped", "garbage_table", "folder"])
def test_bad_input_is_one_line_exit_2_and_no_output(state, tmp_path, capsys, damage):
    bad = tmp_path / "in.ecst"
    data = state.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        bad.write_bytes(data[:40] + bytes([data[40] ^ 1]) + data[41:])
    elif damage == "garbage_table":
        bad = tmp_path / "in.json"
        bad.write_text("{not json")
    elif damage == "folder":
        bad.mkdir()
    code, _, err = report([bad], tmp_path / "r", capsys)
    assert code == 2
    _one_line_error(err, str(bad))
    _nothing_written(tmp_path, tmp_path / "r")


@needs_mpl
@pytest.mark.parametrize("args, words", [
    (["--methods", "kl,nope"], ["unknown method 'nope'", "minmax"]),
    (["--model", "m.onnx"], ["--model", "--data"]),
])
def test_bad_arguments_are_one_line_exit_2_and_no_output(state, tmp_path, capsys, args, words):
    code, _, err = report([state, *args], tmp_path / "r", capsys)
    assert code == 2
    _one_line_error(err, *words)
    _nothing_written(tmp_path, tmp_path / "r")


@needs_mpl
def test_labels_missing_from_the_data_are_refused_before_the_model_runs(state, tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 3), np.float32))
    code, _, err = report([state, "--model", tmp_path / "m.onnx", "--data", tmp_path / "d.npz", "--labels", "y"],
                          tmp_path / "r", capsys)
    assert code == 2
    _one_line_error(err, "no array 'y' for --labels", "it holds x")
    _nothing_written(tmp_path, tmp_path / "r")


@needs_mpl
def test_an_out_path_that_is_a_file_is_refused_and_kept(state, tmp_path, capsys):
    (tmp_path / "r").write_text("mine")
    code, _, err = report([state], tmp_path / "r", capsys)
    assert code == 2
    _one_line_error(err, "is not a folder")
    assert (tmp_path / "r").read_text() == "mine"


@needs_mpl
def test_a_table_refuses_state_options(table, tmp_path, capsys):
    code, _, err = report([table, "--methods", "kl"], tmp_path / "r", capsys)
    assert code == 2
    _one_line_error(err, "is a table", "--methods")


@needs_mpl
def test_an_out_folder_whose_parent_is_missing_is_refused(state, tmp_path, capsys):
    code, _, err = report([state], tmp_path / "no" / "r", capsys)
    assert code == 2
    _one_line_error(err, "does not exist")


@needs_mpl
def test_a_failure_while_drawing_leaves_no_partial_folder(state, tmp_path, capsys, monkeypatch):
    from edgecal.report import write

    drawn = []

    def fail_second(view, path):
        if drawn:
            raise OSError(28, "No space left on device")
        drawn.append(path)
        Path(path).write_bytes(b"x")

    monkeypatch.setattr(write, "tensor_png", fail_second)
    code, _, err = report([state], tmp_path / "r", capsys)
    assert code == 2 and drawn
    _one_line_error(err, "No space left on device")
    _nothing_written(tmp_path, tmp_path / "r")


def test_without_matplotlib_the_error_names_the_extra_and_its_install_command(state, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    code, _, err = report([state], tmp_path / "r", capsys)
    assert code == 2
    _one_line_error(err, "matplotlib", "pip install -e '.[report]'")
    _nothing_written(tmp_path, tmp_path / "r")


@needs_mpl
def test_accuracy_check_is_what_edgecal_check_reports(tmp_path, capsys):
    pytest.importorskip("onnx", reason="the accuracy check reads ONNX models: pip install -e '.[onnx]'")
    from edgecal.model import load_graph
    from edgecal.model.activations import feeds_from, observe_model
    from edgecal.model.digits import load_digits_split

    model = tmp_path / "digits.onnx"
    shutil.copyfile(Path(__file__).resolve().parent.parent / "edgecal" / "data" / "digits_cnn.onnx", model)
    split = load_digits_split()
    np.savez(tmp_path / "eval.npz", x=split["eval_x"][:150], y=split["eval_y"][:150])
    cal, graph = Calibrator(2048), load_graph(model)
    observe_model(cal, graph, feeds_from(graph, {"x": split["calib_x"]}, "calib_x"))
    cal.save_state(tmp_path / "d.ecst")
    cal.compute("kl").save(tmp_path / "kl.json")
    args = ["--model", model, "--data", tmp_path / "eval.npz", "--labels", "y"]
    assert report([tmp_path / "d.ecst", "--methods", "mse,kl", *args], tmp_path / "r", capsys)[0] == 0
    page = Page((tmp_path / "r" / "index.html").read_text(encoding="utf-8"))
    assert main(["check", "--table", str(tmp_path / "kl.json"), "--json", *map(str, args)]) == 0
    want = json.loads(capsys.readouterr().out)
    assert {t["name"] for t in want["tensors"]} <= set(page.sections)
    for t in want["tensors"]:
        assert page.methods(t["name"])["kl"]["model SQNR"] == f"{t['sqnr_db']:.4g} dB"
    text = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    row = re.search(r"<tr><td>kl</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>", text)
    assert row.groups() == (f"{100 * want['top1_agreement']:.2f}%", f"{100 * want['float_accuracy']:.2f}%",
                            f"{100 * want['int8_accuracy']:.2f}%")


@needs_mpl
def test_a_model_outside_edgecal_runner_is_checked_in_onnx_runtime(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the check of such models needs: pip install -e '.[onnxruntime]'")
    pytest.importorskip("onnx", reason="the check of such models needs: pip install -e '.[onnxruntime]'")
    from ort_helpers import TENSORS, batches, build_model, ort_values

    model = build_model(tmp_path / "leaky.onnx")  # LeakyRelu: edgecal's runner refuses it
    cal = Calibrator(2048)
    for x in batches(3):
        cal.observe_many(ort_values(model, x))
    cal.save_state(tmp_path / "s.ecst")
    cal.compute("minmax", scheme="tflite").save(tmp_path / "t.json")
    np.savez(tmp_path / "d.npz", x=np.concatenate(batches(2, seed=9)))
    args = ["--model", model, "--data", tmp_path / "d.npz"]
    code, _, err = report([tmp_path / "s.ecst", "--methods", "minmax", "--scheme", "tflite", *args],
                          tmp_path / "r", capsys)
    assert code == 0, err
    text = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    page = Page(text)
    assert main(["check", "--table", str(tmp_path / "t.json"), "--json", *map(str, args)]) == 0
    want = json.loads(capsys.readouterr().out)
    assert want["runtime"] == "onnxruntime" and "runtime onnxruntime" in text
    assert {t["name"] for t in want["tensors"]} == set(TENSORS) == set(page.sections)
    for t in want["tensors"]:
        assert page.methods(t["name"])["minmax"]["model SQNR"] == f"{t['sqnr_db']:.4g} dB"


# -- in a browser ------------------------------------------------------------------------------------
def chromium_dom(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after load, as headless Chromium (offline flags, fresh profile) sees it."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: Debian package chromium (scripts/ci-apt-chromium installs it)")
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@needs_mpl
@pytest.mark.parametrize("kind", ["state", "table"])
@pytest.mark.needs_host  # runs the host's Chromium
def test_chromium_shows_every_section_and_image_and_fetches_nothing_remote(state, table, tmp_path, capsys, kind):
    source, names = (state, NAMES) if kind == "state" else (table, ["a", "b", "c", "d", ODD])
    assert report([source], tmp_path / "r", capsys)[0] == 0
    index = tmp_path / "r" / "index.html"
    text = index.read_text(encoding="utf-8")
    assert not re.search(r"https?:", text, flags=re.IGNORECASE)
    dom = Page(chromium_dom(index, tmp_path / "profile"))
    assert dom.sections == names
    assert dom.body.get("data-images") == f"{len(names)}/{len(names)}"
    assert dom.body.get("data-remote") == "0"
    assert all(not re.match(r"[a-z]+:", u) for u in dom.urls), dom.urls  # every link and image relative
    assert html.escape(ODD) in text


@needs_mpl
@pytest.mark.needs_host  # runs the host's Chromium
def test_chromium_check_sees_a_broken_image(state, tmp_path, capsys):
    assert report([state], tmp_path / "r", capsys)[0] == 0
    images = Page((tmp_path / "r" / "index.html").read_text(encoding="utf-8")).images
    (tmp_path / "r" / images[1]).write_bytes(b"not a png")
    dom = Page(chromium_dom(tmp_path / "r" / "index.html", tmp_path / "profile"))
    assert dom.body.get("data-images") == f"{len(NAMES) - 1}/{len(NAMES)}"
