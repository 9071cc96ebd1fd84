#!/usr/bin/env python3
"""Activation quantization alone on the real models: uniform int8 methods beside 8-bit codebooks (LUTs).

The models and inputs are those of ``accuracy_study.py`` (``study_ocr.py``: three
PP-OCR models from a PyPI wheel, rendered real text). ONNX Runtime has no LUT
activation type, so every method is measured on a *fake-quantized float model*: the
float model with nodes inserted after every calibrated activation tensor (graph
inputs included) that replace it by its quantized value, run in ONNX Runtime:

* uniform methods (``mse``, ``percentile``, ``minmax``, ``kl``, ``kl-refine``;
  asymmetric ``tflite`` scheme): QuantizeLinear -> DequantizeLinear with the entry's
  scale and int8 zero point;
* ``codebook`` (objective ``mse``, Lloyd-Max, and ``kl``): x -> Clip to [lowest,
  highest level] -> fine index floor((x - lo) / fine_step) (Cast to int64) -> Gather
  from a table mapping each of 2^16 fine cells (plus one for x = hi) to the level
  nearest the cell's centre (a cell holding a level maps to it). A decision boundary is thereby placed to within one fine
  cell of the exact midpoint; the study measures what that changes by comparing the
  Gather result with `edgecal.reference`'s exact LUT quantization on every tensor of
  one held-out input (the "LUT approximation" line of the output).

Weights stay float in every row: this isolates the activation quantization. The
rows of ``accuracy_study.py`` use int8 weights through ONNX Runtime's QDQ quantizer,
so the two studies' tables are not comparable row to row.

Reported per model and method: the task metric of the fake-quantized model against
float, its output SQNR (mean over held-out inputs), the mean over tensors of the
round-trip SQNR (float activations of the first held-out inputs quantized with the
entry, tensors quantized exactly excluded) and the compute time per tensor
(`Calibrator.compute` for the whole model divided by its tensor count; JIT
compilation excluded by a warm-up on three tensors).

Run: ``.venv/bin/python scripts/lut_study.py --cache .cache/study`` (13 minutes on 2
busy cores) or ``--quick`` (about 35 s with ``--tasks cls``). Needs the ``study`` extra (onnx, onnxruntime, Pillow).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import accuracy_study  # noqa: E402
import study_ocr  # noqa: E402

from edgecal import CalibrationTable, Calibrator, TensorCalibration  # noqa: E402
from edgecal.reference import lut_dequantize, lut_quantize  # noqa: E402

METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "mse": ("mse", {}), "percentile": ("percentile", {}), "minmax": ("minmax", {}), "kl": ("kl", {}),
    "kl-refine": ("kl-refine", {}), "codebook (mse)": ("codebook", {"objective": "mse"}),
    "codebook (kl)": ("codebook", {"objective": "kl"}),
}
FINE_BITS = 16
HELD = {"det": 16, "rec": 150, "cls": 300}
HELD_QUICK = {"det": 2, "rec": 12, "cls": 24}


@dataclass
class Row:
    """One method on one model."""

    method: str
    metric: float = float("nan")  # task metric against float, in [0, 1]
    sqnr: float = float("nan")  # output SQNR, dB, mean over held-out inputs
    tensor_sqnr: float = float("nan")  # mean round-trip SQNR over the tensors, dB
    ms_per_tensor: float = float("nan")
    tensors: int = 0


# -- graph surgery -----------------------------------------------------------------------------
def fine_index(x: np.ndarray, lo: np.float32, hi: np.float32, step: np.float32) -> np.ndarray:
    """floor((clip(x, lo, hi) - lo) / step) in float32, as the inserted Clip/Sub/Div/Floor/Cast nodes compute it."""
    c = np.clip(np.asarray(x, np.float32), lo, hi)
    return np.floor((c - lo) / step).astype(np.int64)


def fine_table(levels: tuple[float, ...], fine_bits: int = FINE_BITS) -> tuple[np.float32, np.float32, np.ndarray]:
    """(lo, fine step, table) of a codebook: 2**fine_bits + 1 fine cells from the lowest level.

    A cell maps to the level nearest its centre, except that a cell holding a level
    maps to that level (the lowest, the highest and 0 written last): values clipped
    to an end and exact zeros then stay exact even where levels lie closer together
    than one fine cell.
    """
    lo, hi = np.float32(levels[0]), np.float32(levels[-1])
    n = 1 << fine_bits
    step = np.float32((np.float64(hi) - np.float64(lo)) / n)
    centres = np.float64(lo) + (np.arange(n + 1) + 0.5) * np.float64(step)
    table = lut_dequantize(lut_quantize(centres, levels), levels)
    lv = np.asarray(levels, np.float32)
    last = [i for i in range(lv.size) if lv[i] == 0.0] + [0, lv.size - 1]
    for i in [*range(lv.size), *last]:
        table[min(int(fine_index(lv[i], lo, hi, step)), n)] = lv[i]
    return lo, step, table


def quant_nodes(src: str, dst: str, entry: TensorCalibration, fine_bits: int = FINE_BITS) -> tuple[list, list]:
    """(nodes, initializers) computing ``dst``, the quantized value of ``src``, for one table entry."""
    from onnx import TensorProto, helper, numpy_helper

    p = f"{dst}::fq"
    if entry.lut is None:
        inits = [numpy_helper.from_array(np.array(entry.scale, np.float32), f"{p}_scale"),
                 numpy_helper.from_array(np.array(entry.zero_point, np.int8), f"{p}_zp")]
        return [helper.make_node("QuantizeLinear", [src, f"{p}_scale", f"{p}_zp"], [f"{p}_q"]),
                helper.make_node("DequantizeLinear", [f"{p}_q", f"{p}_scale", f"{p}_zp"], [dst])], inits
    lo, step, table = fine_table(entry.lut, fine_bits)
    inits = [numpy_helper.from_array(np.array(lo, np.float32), f"{p}_lo"),
             numpy_helper.from_array(np.array(entry.lut[-1], np.float32), f"{p}_hi"),
             numpy_helper.from_array(np.array(step, np.float32), f"{p}_step"),
             numpy_helper.from_array(table.astype(np.float32), f"{p}_table")]
    nodes = [helper.make_node("Clip", [src, f"{p}_lo", f"{p}_hi"], [f"{p}_c"]),
             helper.make_node("Sub", [f"{p}_c", f"{p}_lo"], [f"{p}_s"]),
             helper.make_node("Div", [f"{p}_s", f"{p}_step"], [f"{p}_d"]),
             helper.make_node("Floor", [f"{p}_d"], [f"{p}_f"]),
             helper.make_node("Cast", [f"{p}_f"], [f"{p}_i"], to=TensorProto.INT64),
             helper.make_node("Gather", [f"{p}_table", f"{p}_i"], [dst], axis=0)]
    return nodes, inits


def fake_quantize(model: Any, table: CalibrationTable, fine_bits: int = FINE_BITS) -> Any:
    """A copy of ``model`` in which every tensor of ``table`` is replaced by its quantized value.

    A node output keeps its name for its consumers (the producer writes ``name::float``
    and the inserted nodes write ``name``); a graph input's consumers read its
    quantized copy. Node order stays topological.
    """
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name for i in g.initializer}
    nodes, added = [], []
    for name in (i.name for i in g.input if i.name not in inits and i.name in table):
        qn, qi = quant_nodes(name, f"{name}::in", table[name], fine_bits)
        nodes += qn
        added += qi
    renamed = {i.name: f"{i.name}::in" for i in g.input if i.name not in inits and i.name in table}
    for node in g.node:
        for k, inp in enumerate(node.input):
            node.input[k] = renamed.get(inp, inp)
        nodes.append(node)
        for k, out in enumerate(node.output):
            if out in table:
                node.output[k] = f"{out}::float"
                qn, qi = quant_nodes(f"{out}::float", out, table[out], fine_bits)
                nodes += qn
                added += qi
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(added)
    return m


def session(model: Any):
    """A CPU session, graph optimizations off: no transformer rewrites or fuses the inserted nodes."""
    ort = accuracy_study._ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(model: Any, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The first output of ``model`` per feed."""
    sess = session(model)
    out = sess.get_outputs()[0].name
    return [sess.run([out], f)[0] for f in feeds]


# -- measurements -------------------------------------------------------------------------------
def exact(x: np.ndarray, entry: TensorCalibration) -> np.ndarray:
    """``x`` through the entry exactly: nearest LUT level, or int8 QDQ (round half to even, saturate)."""
    if entry.lut is not None:
        return lut_dequantize(lut_quantize(x, entry.lut), entry.lut)
    s = np.float32(entry.scale)
    q = np.clip(np.rint(x.astype(np.float32) / s) + entry.zero_point, -128, 127)
    return ((q - entry.zero_point) * s).astype(np.float32)


def lut_agreement(table: CalibrationTable, values: dict[str, np.ndarray]) -> dict[str, float]:
    """How far the fine-cell Gather (run in ONNX Runtime) is from the exact LUT quantization, every codebook tensor.

    ``differ``: share of all values whose result differs; ``worst_large``: the largest
    such share on a tensor of at least 1000 values; ``sqnr_change``: the largest change
    of such a tensor's round-trip SQNR (dB). Tensors of a few values (a classifier's
    two outputs) get levels packed closer than one fine cell, so the shares are given
    for tensors large enough to fill their levels.
    """
    names = [n for n in values if n in table and table[n].lut is not None]
    got = _run_quant_nodes(table, {n: values[n] for n in names})
    diff, change = [], [0.0]
    for g, n in zip(got, names):
        x, e = values[n], exact(values[n], table[n])
        diff.append(int(np.sum(g != e)))
        a, b = accuracy_study.sqnr_db(x, e), accuracy_study.sqnr_db(x, g)
        if np.isfinite(a) and np.isfinite(b) and x.size >= 1000:
            change.append(abs(a - b))
    total = sum(values[n].size for n in names)
    large = [d / values[n].size for d, n in zip(diff, names) if values[n].size >= 1000]
    return {"tensors": len(names), "values": total, "differ": sum(diff) / max(total, 1),
            "worst_large": max(large, default=0.0), "sqnr_change": max(change)}


def _run_quant_nodes(table: CalibrationTable, values: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Each array of ``values`` through its entry's inserted nodes alone, in ONNX Runtime."""
    import onnx
    from onnx import helper

    nodes, inits, ins, outs = [], [], [], []
    for i, n in enumerate(values):
        qn, qi = quant_nodes(f"in{i}", f"out{i}", table[n])
        nodes += qn
        inits += qi
        ins.append(helper.make_tensor_value_info(f"in{i}", onnx.TensorProto.FLOAT, None))
        outs.append(helper.make_tensor_value_info(f"out{i}", onnx.TensorProto.FLOAT, None))
    model = helper.make_model(helper.make_graph(nodes, "lut", ins, outs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what opset 13 needs; older ONNX Runtimes refuse the newest IR
    sess = session(model)
    return sess.run(None, {f"in{i}": v for i, v in enumerate(values.values())})


def tensor_sqnr(table: CalibrationTable, probe: list[dict[str, np.ndarray]]) -> float:
    """Mean over tensors of the round-trip SQNR (dB); tensors quantized exactly (infinite SQNR) left out."""
    out = []
    for name, entry in table.items():
        parts = [p[name].ravel() for p in probe if name in p]
        if parts:
            x = np.concatenate(parts)
            out.append(accuracy_study.sqnr_db(x, exact(x, entry)))
    finite = [s for s in out if np.isfinite(s)]
    return float(np.mean(finite)) if finite else float("inf")


def timed_table(cal: Calibrator, method: str, params: dict[str, Any]) -> tuple[CalibrationTable, float]:
    """(table, ms per tensor); a warm-up on three tensors first (JIT)."""
    cal.compute(method, names=cal.names()[:3], scheme="tflite", **params)
    t0 = time.perf_counter()
    table = cal.compute(method, scheme="tflite", **params)
    return table, 1000 * (time.perf_counter() - t0) / len(table)


def study_task(task: study_ocr.Task, log) -> tuple[list[Row], dict[str, float]]:
    """Calibrate once on the task's calibration inputs, then measure every method's table; (rows, LUT check)."""
    import onnx

    model = onnx.load(str(task.model))
    reference = accuracy_study.run_model(task.model, task.held_out)
    probe = list(accuracy_study.float_activations(task.model, task.held_out[:2]))
    cal = Calibrator()
    for values in accuracy_study.float_activations(task.model, task.calib):
        cal.observe_many(values)
    rows, check = [], {}
    for label, (method, params) in METHODS.items():
        table, ms = timed_table(cal, method, params)
        if label == "codebook (mse)":
            check = lut_agreement(table, probe[0])
            log("  " + approximation_line(check))
        got = run(fake_quantize(model, table), task.held_out)
        row = Row(label, task.metric(reference, got),
                  float(np.mean([accuracy_study.sqnr_db(r, g) for r, g in zip(reference, got)])),
                  tensor_sqnr(table, probe), ms, len(table))
        log(f"  {label:<15} {task.metric_name} {100 * row.metric:.2f} %  output SQNR {row.sqnr:.2f} dB  "
            f"tensor SQNR {row.tensor_sqnr:.2f} dB  {row.ms_per_tensor:.2f} ms/tensor")
        rows.append(row)
    return rows, check


def approximation_line(check: dict[str, float]) -> str:
    return (f"LUT approximation (2^{FINE_BITS} fine cells, codebook mse, one held-out input): "
            f"{100 * check['differ']:.4f} % of {check['values']} values over {check['tensors']} tensors differ from "
            f"exact LUT quantization (worst tensor of >= 1000 values {100 * check['worst_large']:.4f} %); "
            f"largest change of its round-trip SQNR {check['sqnr_change']:.4f} dB")


def markdown(task: study_ocr.Task, rows: list[Row], check: dict[str, float]) -> str:
    lines = [(f"**{task.kind}**: {len(task.calib)} calibration / {len(task.held_out)} held-out inputs, "
              f"{rows[0].tensors} activation tensors fake-quantized, weights float"), "",
             f"| method | {task.metric_name} vs float | output SQNR | mean tensor SQNR | compute ms / tensor |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {100 * r.metric:.2f} % | {r.sqnr:.2f} dB | {r.tensor_sqnr:.2f} dB | "
                     f"{r.ms_per_tensor:.2f} |")
    if check:
        lines += ["", approximation_line(check)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sets (the CI version)")
    p.add_argument("--tasks", default="det,rec,cls", help="comma-separated: det, rec, cls")
    p.add_argument("--calib", type=int, help="calibration inputs per model (default 24, quick 4)")
    p.add_argument("--held-out", type=int, help=f"held-out inputs per model (default {HELD}, quick {HELD_QUICK})")
    p.add_argument("--cache", default=".cache/study", help="where the models are downloaded")
    p.add_argument("--json", help="write every figure to this JSON file")
    args = p.parse_args(argv)
    missing = study_ocr.missing_study_module()
    if missing:
        print(f"LUT study skipped: {missing} is missing; install the study extra: pip install -e '.[study]'")
        return 0
    models = study_ocr.fetch_models(Path(args.cache))
    calib = args.calib or (4 if args.quick else 24)
    held = dict(HELD_QUICK if args.quick else HELD)
    if args.held_out:
        held = dict.fromkeys(held, args.held_out)
    results: dict[str, Any] = {"machine": accuracy_study.machine(), "fine_bits": FINE_BITS}
    print(f"{results['machine']}\n", flush=True)
    for task in study_ocr.make_tasks(models, calib, held, args.tasks.split(",")):
        print(f"{task.kind}: {len(task.calib)} calibration / {len(task.held_out)} held-out inputs", flush=True)
        rows, check = study_task(task, lambda s: print(s, flush=True))
        print("\n" + markdown(task, rows, check) + "\n", flush=True)
        results[task.name] = {"kind": task.kind, "metric": task.metric_name, "calib": len(task.calib),
                              "held_out": len(task.held_out), "lut_check": check, "rows": [asdict(r) for r in rows]}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
