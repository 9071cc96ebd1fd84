"""`demo` and `check`: the bundled examples, and what a table costs a model."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..formats import load_table
from ..reference.requant import ROUNDINGS
from .common import db, fmt, pct, print_rows, terminal_safe
from .jsonout import emit
from .onnx import add_quantize_options


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    report = run_demo(Path(args.out))
    METHODS = report.methods  # every registered method, the default first
    print("edgecal demo: bundled activations streamed one sample at a time, thresholds per method\n")
    rows = [("tensor", "values", *[f"amax {m}" for m in METHODS], f"scale {METHODS[0]}", f"clipped {METHODS[0]}",
             *[f"SQNR {m}" for m in METHODS])]
    for r in report.rows:
        rows.append((r.name, str(r.values), *[f"{r.amax[m]:.4g}" for m in METHODS], f"{r.scale:.4g}",
                     f"{100 * r.clipped[METHODS[0]]:.3f}%", *[db(r.sqnr[m]) for m in METHODS]))
    print_rows(rows)
    print(f"\n{METHODS[0]} table written in every format to {args.out}/:")
    for name, path in report.written.items():
        print(f"  {name:<5} {path}")
    _print_digits_demo()
    from ..link.demo_stage import run_serial_stage

    print("\n" + "\n".join(run_serial_stage().lines()))
    return 0


def _print_digits_demo() -> None:
    from ..model import MissingExtraError
    from ..model.digits import run_digits_demo

    try:
        demo = run_digits_demo()
    except MissingExtraError as err:
        print(f"\ndigits CNN check skipped: {err}")
        return
    print(f"\ndigits CNN (bundled ONNX, scikit-learn digits): calibrated from its own activations on "
          f"{demo.calib_samples} images, scheme {demo.scheme}; top-1 on {demo.eval_samples} held-out images\n")
    rows: list[tuple[str, ...]] = [("method", "float top-1", "int8 top-1", "change", "agreement", "worst SQNR",
                                    "median SQNR")]
    for method, r in demo.reports.items():
        worst = r.worst(1)[0]
        median = statistics.median(t.sqnr_db for t in r.tensors)
        change = 100 * ((r.int8_accuracy or 0.0) - (r.float_accuracy or 0.0))  # the demo's digits carry labels
        rows.append((method, pct(r.float_accuracy), pct(r.int8_accuracy), f"{change:+.2f} pt", pct(r.top1_agreement),
                     f"{db(worst.sqnr_db)} ({worst.name})", db(median)))
    print_rows(rows)
    names = [t.name for t in next(iter(demo.reports.values())).tensors]
    print("\nper-tensor SQNR of the int8 model against float:\n")
    rows = [("tensor", *demo.reports)]
    for i, name in enumerate(names):
        rows.append((name, *[db(r.tensors[i].sqnr_db) for r in demo.reports.values()]))
    print_rows(rows)


def cmd_check(args: argparse.Namespace) -> int:
    from ..model import check_model
    from ..model.activations import feeds_from, load_arrays
    from .onnx import cmd_check_onnxruntime, pick_runtime

    if (args.data is None) == (args.inputs is None):
        raise InputError("expected the model inputs in exactly one of --data D.npz or --inputs DIR")
    if args.inputs is not None and args.runtime == "edgecal":
        raise InputError("--inputs DIR is read with --runtime onnxruntime; edgecal's runner reads --data D.npz")
    runtime, graph = pick_runtime(args.model, "onnxruntime" if args.inputs is not None else args.runtime)
    codebook = any(e.lut is not None for e in load_table(args.table).values())
    if runtime == "onnxruntime":
        if codebook:  # a QDQ model holds uniform scales only
            raise InputError(f"{args.table} has codebook (LUT) entries; check them with --runtime edgecal --data D.npz")
        return cmd_check_onnxruntime(args)
    if graph is None:
        raise InputError(f"check compares ONNX models; {args.model} is for {runtime}, expected an .onnx model")
    table = load_table(args.table)
    arrays = load_arrays(args.data)
    labels = None
    if args.labels is not None:
        if args.labels not in arrays:
            raise InputError(f"{args.data}: no array {args.labels!r} for --labels; it holds {', '.join(sorted(arrays))}")
        labels = arrays.pop(args.labels)
    feeds = feeds_from(graph, arrays, args.data)
    if codebook:  # integer kernels take uniform scales: the float graph with LUT-quantized activations instead
        from ..model.lut_check import check_codebook

        report = check_codebook(graph, table, feeds, labels)
    else:
        report = check_model(graph, table, feeds, labels, args.rounding)
    if args.json:
        emit("check", model=args.model, table=args.table, runtime="edgecal", **report.to_dict())
        return 0
    print(f"edgecal check: {args.model} with {args.table}, {report.samples} samples, rounding {report.rounding}")
    if report.float_accuracy is not None and report.int8_accuracy is not None:
        change = 100 * (report.int8_accuracy - report.float_accuracy)
        print(f"top-1 accuracy: float {pct(report.float_accuracy)}, int8 {pct(report.int8_accuracy)} ({change:+.2f} points)")
    print(f"top-1 agreement float vs int8: {pct(report.top1_agreement)}\n")
    rows = [("tensor", "op", "scale", "zp", "SQNR")]
    for t in report.tensors:
        rows.append((t.name, t.op, fmt(t.scale), str(t.zero_point), db(t.sqnr_db)))
    print_rows(rows)
    print("\n" + terminal_safe("worst: " + ", ".join(f"{t.name} ({db(t.sqnr_db)})" for t in report.worst())))
    return 0


def add_parsers(sub: Any, writer: argparse.ArgumentParser) -> None:
    k = sub.add_parser("check", help="run a float ONNX model in float and in int8 with a table, compare accuracy",
                       description="Runtimes: edgecal (its own runner: bit-exact TFLite int8 kernels for its op "
                       "subset) or onnxruntime (any ONNX model: quantized by ONNX Runtime with the table's ranges, "
                       "in a temporary folder). Default: edgecal when it runs every op of the model and the inputs "
                       "come from --data, else onnxruntime.")
    k.add_argument("--model", required=True, metavar="M.onnx", help="float ONNX model")
    k.add_argument("--table", required=True, help="calibration table of the model's activations")
    k.add_argument("--data", metavar="D.npz", help="model inputs (named after them) and labels, one batch")
    k.add_argument("--inputs", metavar="DIR", help="folder of .npy/.npz model input batches (onnxruntime)")
    k.add_argument("--labels", metavar="KEY|L.npy",
                   help="integer labels: the array KEY in --data, or with --inputs a .npy file (one per sample)")
    k.add_argument("--runtime", default="auto", choices=("auto", "edgecal", "onnxruntime"),
                   help="who runs float and int8 (default auto, see above)")
    k.add_argument("--rounding", default="tflite", choices=ROUNDINGS,
                   help="edgecal runtime: requantization semantics (default tflite)")
    add_quantize_options(k)
    k.add_argument("--json", action="store_true", help="machine-readable report")
    k.set_defaults(func=cmd_check)
    d = sub.add_parser("demo", help="calibrate the bundled sample and compare methods")
    d.add_argument("-o", "--out", default="edgecal-demo", help="folder for the tables (default ./edgecal-demo)")
    d.set_defaults(func=cmd_demo)
