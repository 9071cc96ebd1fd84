#!/usr/bin/env python3
"""Accuracy of int8 tables on real pretrained models: edgecal's methods beside ONNX Runtime's calibrators.

For each model of the study (see ``study_ocr.py``: three PP-OCR models that ship in a
PyPI wheel, with rendered real text as inputs), on the same calibration inputs:

* edgecal streams every float tensor of the model (run by ONNX Runtime) into one
  `Calibrator` and computes a table per method;
* ONNX Runtime's own calibrators (MinMax, Entropy with its defaults, Entropy with 2048
  bins, Percentile) compute their ranges;
* every set of ranges goes through the same code, ONNX Runtime's QDQ quantizer
  (per-channel int8 weights, activations int8 "S8S8" or uint8 "U8S8"), and the int8
  model runs in ONNX Runtime on held-out inputs.

Reported per model and method: the task metric of int8 against float, the output
SQNR, the worst tensor's round-trip SQNR (float activations of the first held-out
inputs quantized with the method's ranges), calibration time and the calibration's
peak memory (RSS growth of a forked process doing only that calibration).

Run: ``.venv/bin/python scripts/accuracy_study.py`` (the full study, about 15 minutes on
2 cores) or ``--quick`` (the small version CI runs). Needs the ``study`` extra
(``pip install -e '.[study]'``; ``./scripts/test`` installs it with the test extras).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_ocr  # noqa: E402

from edgecal import Calibrator  # noqa: E402
from edgecal.methods import DEFAULT_METHOD  # noqa: E402
from edgecal.metrics import sqnr_between as sqnr_db  # noqa: E402

EDGECAL_METHODS = list(dict.fromkeys([DEFAULT_METHOD, "kl", "minmax", "percentile", "mse", "auto"]))
SEARCH = "search mse/percentile on the model"  # edgecal.model.ort_search: per group of tensors, the model's choice
ORT_METHODS = {"ORT MinMax": ("MinMax", {}), "ORT Entropy": ("Entropy", {}),
               "ORT Entropy 2048": ("Entropy", {"num_bins": 2048}), "ORT Percentile": ("Percentile", {})}
Ranges = dict[str, tuple[float, float]]
SYMMETRIC = f"{DEFAULT_METHOD} (symmetric table)"  # the same default, zero point 0: what a TensorRT-style table gives


@dataclass
class Row:
    """One method on one model."""

    method: str
    metric: dict[str, float] = field(default_factory=dict)  # activations "s8"/"u8" -> task metric
    sqnr: dict[str, float] = field(default_factory=dict)  # activations -> output SQNR (dB)
    worst: tuple[str, float] = ("", float("nan"))  # (tensor, round-trip SQNR dB)
    seconds: float = float("nan")
    rss_mib: float = float("nan")


# -- ONNX Runtime plumbing -----------------------------------------------------------------
def _ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    return ort


def session(model: Any, all_tensors: bool = False):
    """A CPU session; with ``all_tensors`` every float node output is a graph output, nothing fused."""
    import onnx

    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if all_tensors:
        m = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
        inferred = onnx.shape_inference.infer_shapes(m)
        floats = {vi.name for vi in inferred.graph.value_info if vi.type.tensor_type.elem_type == 1}
        present = {o.name for o in m.graph.output}
        for n in m.graph.node:
            for o in n.output:
                if o in floats and o not in present and n.op_type != "Constant":
                    m.graph.output.add().name = o
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def float_activations(model: Path, feeds: list[dict[str, np.ndarray]]):
    """Yield ``{tensor: array}`` of every float tensor (inputs included) per input."""
    sess = session(model, all_tensors=True)
    names = [o.name for o in sess.get_outputs()]
    for feed in feeds:
        values = dict(zip(names, sess.run(names, feed)))
        values.update(feed)
        yield {k: v for k, v in values.items() if isinstance(v, np.ndarray) and v.dtype == np.float32 and v.size}


def quantize(model: Path, ranges: Ranges, out: Path, activations: str, symmetric: bool = False) -> None:
    """QDQ model through `edgecal.model.ort_quant.quantize_onnx` (ONNX Runtime's quantizer, per-channel weights).

    Every method's ranges take this one path; a peer's (lo, hi) becomes the table
    entry whose scale and zero point ONNX Runtime itself would derive from it.
    """
    from edgecal import CalibrationTable, TensorCalibration
    from edgecal.model.ort_quant import quantize_onnx

    if symmetric:  # a symmetric table stays one: zero point 0 (see quantize_onnx)
        entries = [TensorCalibration.symmetric(k, max(-lo, hi)) for k, (lo, hi) in ranges.items()]
    else:
        entries = [TensorCalibration.asymmetric(k, lo, hi) if hi - min(lo, 0.0) > 1e-30 else
                   TensorCalibration.symmetric(k, 1.0) for k, (lo, hi) in ranges.items()]
    quantize_onnx(model, out, CalibrationTable(entries), activations=activations, per_channel=True, missing="float")


def run_model(model: Path, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    sess = session(model)
    out = sess.get_outputs()[0].name
    return [sess.run([out], f)[0] for f in feeds]


# -- calibration jobs (each in a forked process: time and peak RSS of that job alone) ---------
def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _in_child(job: Callable[[], Any], conn) -> None:
    start_rss = _rss_mib()
    t0 = time.perf_counter()
    try:
        result = job()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        conn.send((result, time.perf_counter() - t0, peak - start_rss, None))
    except Exception as err:  # reported by the parent
        conn.send((None, 0.0, 0.0, f"{type(err).__name__}: {err}"))


def measured(job: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak RSS growth MiB) of ``job`` run in a forked process."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_in_child, args=(job, child))
    proc.start()
    result, seconds, rss, err = parent.recv()
    proc.join()
    if err:
        raise RuntimeError(err)
    return result, seconds, rss


def edgecal_job(model: Path, feeds: list[dict[str, np.ndarray]], methods: list[str]) -> Callable[[], dict]:
    def job() -> dict[str, Ranges]:
        from edgecal.model.ort_quant import table_ranges

        cal = Calibrator()
        for values in float_activations(model, feeds):
            cal.observe_many(values)
        out = {m: table_ranges(cal.compute(m, scheme="tflite")) for m in methods}
        out[SYMMETRIC] = table_ranges(cal.compute(DEFAULT_METHOD, scheme="symmetric"))
        return out

    return job


def search_job(model: Path, feeds: list[dict[str, np.ndarray]], groups: int) -> Callable[[], Ranges]:
    def job() -> Ranges:
        from edgecal.model.ort_quant import table_ranges
        from edgecal.model.ort_search import search_table

        cal = Calibrator()
        for values in float_activations(model, feeds):
            cal.observe_many(values)
        return table_ranges(search_table(model, cal, feeds, groups=groups)[0])

    return job


def ort_job(model: Path, feeds: list[dict[str, np.ndarray]], method: str, options: dict) -> Callable[[], Ranges]:
    def job() -> Ranges:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
        from onnxruntime.quantization.calibrate import create_calibrator

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(feeds)

            def get_next(self):
                return next(self.it, None)

        with tempfile.TemporaryDirectory() as tmp:
            cal = create_calibrator(model, None, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                    calibrate_method=getattr(CalibrationMethod, method), extra_options=options)
            cal.collect_data(Reader())
            data = cal.compute_data()
        return {k: (float(np.asarray(v.range_value[0]).min()), float(np.asarray(v.range_value[1]).max()))
                for k, v in data.data.items()}

    return job


# -- evaluation ---------------------------------------------------------------------------------
def worst_tensor(activations: list[dict[str, np.ndarray]], ranges: Ranges) -> tuple[str, float]:
    """The tensor whose uint8 round trip through ``ranges`` has the lowest SQNR."""
    worst = ("", float("inf"))
    for name, (lo, hi) in ranges.items():
        parts = [a[name] for a in activations if name in a]
        if not parts:
            continue
        x = np.concatenate([p.ravel() for p in parts]).astype(np.float64)
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (hi - lo) / 255 if hi > lo else 1.0
        zp = np.round(-lo / scale)
        q = np.clip(np.round(x / scale) + zp, 0, 255)
        s = sqnr_db(x, (q - zp) * scale)
        if s < worst[1]:
            worst = (name, s)
    return worst


def study_task(task: study_ocr.Task, methods: list[str], ort_methods: dict, tmp: Path, log,
               groups: int = 8) -> list[Row]:
    reference = run_model(task.model, task.held_out)
    probe = list(float_activations(task.model, task.held_out[:2]))
    rows: list[tuple[Row, Ranges]] = []
    tables, seconds, rss = measured(edgecal_job(task.model, task.calib, methods))
    log(f"  edgecal: {len(methods)} tables in {seconds:.1f} s, +{rss:.0f} MiB")
    for m in [*methods, SYMMETRIC]:
        rows.append((Row(f"edgecal {m}", seconds=seconds, rss_mib=rss), tables[m]))
    if groups:
        ranges, seconds, rss = measured(search_job(task.model, task.calib, groups))
        log(f"  edgecal {SEARCH}: {seconds:.1f} s, +{rss:.0f} MiB")
        rows.append((Row(f"edgecal {SEARCH}", seconds=seconds, rss_mib=rss), ranges))
    for label, (method, options) in ort_methods.items():
        ranges, seconds, rss = measured(ort_job(task.model, task.calib, method, options))
        log(f"  {label}: {seconds:.1f} s, +{rss:.0f} MiB")
        rows.append((Row(label, seconds=seconds, rss_mib=rss), ranges))
    for row, ranges in rows:
        for act in ("s8", "u8"):
            out = tmp / f"{task.name}-{act}.onnx"
            quantize(task.model, ranges, out, act, symmetric=row.method == f"edgecal {SYMMETRIC}")
            got = run_model(out, task.held_out)
            row.metric[act] = task.metric(reference, got)
            row.sqnr[act] = float(np.mean([sqnr_db(r, g) for r, g in zip(reference, got)]))
        row.worst = worst_tensor(probe, ranges)
        log(f"  {row.method:<22} {task.metric_name} s8 {100 * row.metric['s8']:.1f} % u8 {100 * row.metric['u8']:.1f} %"
            f"  SQNR {row.sqnr['s8']:.1f}/{row.sqnr['u8']:.1f} dB  worst {row.worst[1]:.1f} dB ({row.worst[0][:40]})")
    return [r for r, _ in rows]


def markdown(task: study_ocr.Task, rows: list[Row]) -> str:
    lines = [f"**{task.kind}** — {task.metric_name} of int8 against float, {len(task.held_out)} held-out inputs, "
             f"{len(task.calib)} calibration inputs",
             "",
             f"| method | {task.metric_name} S8S8 / U8S8 | output SQNR S8 / U8 | worst tensor SQNR | calibration time | peak RSS |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {100 * r.metric['s8']:.1f} / {100 * r.metric['u8']:.1f} % | "
                     f"{r.sqnr['s8']:.1f} / {r.sqnr['u8']:.1f} dB | {r.worst[1]:.1f} dB | {r.seconds:.1f} s | "
                     f"+{r.rss_mib:.0f} MiB |")
    return "\n".join(lines)


def combine(draws: list[dict[str, Any]]) -> str:
    """Each method's task metric and output SQNR, mean and range over several draws of the inputs.

    One draw of 24 calibration inputs moves a method's score by a point or more on
    these models, and the ranking of methods with it; the mean over draws is what a
    method is judged by. The last lines compare the default with the best other row.
    """
    out = [f"{len(draws)} draws (seeds {', '.join(str(d.get('seed', 0)) for d in draws)}); "
           f"machines: {'; '.join(sorted({d['machine'] for d in draws}))}", ""]
    names = dict.fromkeys(k for d in draws for k in d if isinstance(d[k], dict) and "rows" in d[k])
    for name in names:
        tasks = [d[name] for d in draws if name in d]
        out += [f"**{tasks[0]['kind']}**: {tasks[0]['metric']}, mean [min - max] over {len(tasks)} draws", "",
                f"| method | {tasks[0]['metric']} S8S8 | U8S8 | output SQNR S8 / U8 |", "|---|---|---|---|"]
        means: dict[str, tuple[float, float, float, float]] = {}
        for method in [r["method"] for r in tasks[0]["rows"]]:
            rows = [r for t in tasks for r in t["rows"] if r["method"] == method]
            if len(rows) != len(tasks):
                continue
            cell = {}
            for act in ("s8", "u8"):
                v = 100 * np.array([r["metric"][act] for r in rows])
                cell[act] = f"{v.mean():.1f} [{v.min():.1f} - {v.max():.1f}] %"
            sq = [float(np.mean([r["sqnr"][a] for r in rows])) for a in ("s8", "u8")]
            means[method] = (*(100 * float(np.mean([r["metric"][a] for r in rows])) for a in ("s8", "u8")), *sq)
            out.append(f"| {method} | {cell['s8']} | {cell['u8']} | {sq[0]:.1f} / {sq[1]:.1f} dB |")
        out += ["", *bound_lines(means), ""]
    return "\n".join(out)


def bound_lines(means: dict[str, tuple[float, float, float, float]]) -> list[str]:
    """How far the default's mean lies below the best other row's, per activation type."""
    default = f"edgecal {DEFAULT_METHOD}"
    if default not in means or len(means) < 2:
        return []
    lines = []
    for i, act in enumerate(("S8S8", "U8S8")):
        others = {m: v for m, v in means.items() if m != default}
        best_m = max(others, key=lambda m: others[m][i])
        best_s = max(others, key=lambda m: others[m][2 + i])
        lines.append(f"{act}: default {means[default][i]:.2f} %, best other {others[best_m][i]:.2f} % ({best_m}): "
                     f"{means[default][i] - others[best_m][i]:+.2f} pt; output SQNR {means[default][2 + i]:.2f} dB, "
                     f"best other {others[best_s][2 + i]:.2f} dB ({best_s}): "
                     f"{means[default][2 + i] - others[best_s][2 + i]:+.2f} dB")
    return lines


def machine() -> str:
    """Where and when the figures were measured."""
    import datetime
    import platform

    import onnxruntime

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    return (f"{datetime.date.today()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"ONNX Runtime {onnxruntime.__version__}, 1 intra-op thread")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sets and fewer peers (the CI version)")
    p.add_argument("--tasks", default="det,rec,cls", help="comma-separated: det, rec, cls")
    p.add_argument("--calib", type=int, help="calibration inputs per model (default 24, quick 4)")
    p.add_argument("--held-out", type=int, help="held-out inputs per model (default det 48, rec 300, cls 600)")
    p.add_argument("--methods", help=f"edgecal methods (default: {','.join(EDGECAL_METHODS)})")
    p.add_argument("--no-ort", action="store_true", help="leave out ONNX Runtime's calibrators")
    p.add_argument("--groups", type=int, help="groups of the model-guided search (default 8, quick 4; 0: no search)")
    p.add_argument("--cache", default=".cache/study", help="where the models are downloaded")
    p.add_argument("--json", help="write every figure to this JSON file")
    p.add_argument("--seed", type=int, default=0, help="which draw of calibration and held-out inputs (default 0)")
    p.add_argument("--combine", nargs="+", metavar="JSON",
                   help="do not run: read --json files of several draws and print each method's mean over them")
    args = p.parse_args(argv)
    if args.combine:
        print(combine([json.loads(Path(f).read_text()) for f in args.combine]))
        return 0
    missing = study_ocr.missing_study_module()
    if missing:
        print(f"accuracy study skipped: {missing} is missing; install the study extra: pip install -e '.[study]'")
        return 0
    models = study_ocr.fetch_models(Path(args.cache))
    calib = args.calib or (4 if args.quick else 24)
    methods = args.methods.split(",") if args.methods else ([DEFAULT_METHOD, "kl", "minmax"] if args.quick else
                                                            EDGECAL_METHODS)
    ort_methods = {} if args.no_ort else ({"ORT MinMax": ORT_METHODS["ORT MinMax"], "ORT Percentile":
                                           ORT_METHODS["ORT Percentile"]} if args.quick else ORT_METHODS)
    wanted = args.tasks.split(",")
    results: dict[str, Any] = {"machine": machine(), "seed": args.seed}
    print(f"{results['machine']}\n", flush=True)
    held = ({"det": 4, "rec": 24, "cls": 48} if args.quick else {"det": 48, "rec": 300, "cls": 600})
    if args.held_out:
        held = dict.fromkeys(held, args.held_out)
    for task in study_ocr.make_tasks(models, calib, held, wanted, seed=args.seed):
        print(f"{task.kind}: {len(task.calib)} calibration / {len(task.held_out)} held-out inputs", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            groups = args.groups if args.groups is not None else (4 if args.quick else 8)
            rows = study_task(task, methods, ort_methods, Path(tmp), lambda s: print(s, flush=True), groups)
        print("\n" + markdown(task, rows) + "\n", flush=True)
        results[task.name] = {"kind": task.kind, "metric": task.metric_name, "rows": [asdict(r) for r in rows]}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
