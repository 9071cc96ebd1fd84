"""`quantize`, and the runtime choice of `calibrate --model` and `check`: any ONNX model through ONNX Runtime.

Runtimes: ``edgecal`` is edgecal's own numpy runner (bit-exact TFLite int8 kernels,
for its op subset, `edgecal.model.OPS`); ``onnxruntime`` runs any ONNX model (the
``onnxruntime`` extra); ``litert`` runs .tflite models (calibrate only). ``auto``
(the default) takes litert for a .tflite file, edgecal's runner when it supports
every op of the model, else ONNX Runtime.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..calibrator import Calibrator
from ..errors import InputError, MissingExtraError
from ..formats import load_table
from .common import db, fmt, pct, print_rows, say, terminal_safe
from .jsonout import emit

if TYPE_CHECKING:
    from ..model.graph import Graph



def _has_onnxruntime() -> bool:
    from ..model.ort_quant import import_ort

    try:
        import_ort()
    except MissingExtraError:
        return False
    return True


def pick_runtime(model: str, requested: str) -> tuple[str, Graph | None]:
    """(runtime, the model read by edgecal's runner when that is the runtime); see the module docstring."""
    from ..model.graph import load_graph
    from ..model.ort_quant import INSTALL

    if requested not in ("auto", "edgecal"):
        return requested, None
    if requested == "auto" and Path(model).suffix.lower() == ".tflite":
        return "litert", None
    try:
        return "edgecal", load_graph(model)
    except MissingExtraError:
        raise
    except InputError as err:
        if requested == "edgecal":
            raise
        if _has_onnxruntime():
            return "onnxruntime", None
        raise InputError(f"{err}; edgecal's runner cannot run this model: pass --runtime onnxruntime after "
                         f"installing the extra with {INSTALL}") from None


SOURCE_KINDS = {"edgecal": "runner"}  # runtime name -> model source kind, where they differ


def model_reader(model: str, requested: str, inputs: list[str]) -> tuple[Callable[..., Calibrator], str]:
    """(reader of one input file into a fresh calibrator, runtime) for ``calibrate --model``.

    The reader is the runtime's model source (`ModelSource.file_state`), the one the daemon
    runs, so both fold a file the same way and under the same key.
    """
    from ..sources import source_class
    from ..sources.model import ModelSource

    runtime, graph = pick_runtime(model, requested)
    kind = SOURCE_KINDS.get(runtime, runtime)
    config = {"model": model, "inputs": str(inputs[0])}
    source = source_class(kind)(graph=graph, **config) if graph is not None else source_class(kind)(**config)
    if not isinstance(source, ModelSource):
        raise InputError(f"runtime {runtime!r} is not a model runtime")
    source.load()  # a model the runtime refuses fails here, before any file
    return source.file_state, runtime


def _check_out(out: str, model: str) -> None:
    target = Path(out)
    if target.is_dir():
        raise InputError(f"--out {out} is a folder; expected the path of the int8 model file")
    if target.exists() and target.resolve() == Path(model).resolve():
        raise InputError(f"--out {out} is the float model itself; expected another path")


def cmd_quantize(args: argparse.Namespace) -> int:
    from ..model.ort_quant import quantize_onnx

    _check_out(args.out, args.model)
    table = load_table(args.table)
    s = quantize_onnx(args.model, args.out, table, args.activations, not args.per_tensor,
                      "float" if args.leave_missing_float else "error")
    left = f", {len(s.excluded_nodes)} nodes left in float ({len(s.left_float)} tensors not in the table)" \
        if s.left_float else ""
    print(f"quantized {args.model} with {s.ranges} ranges from {args.table} ({s.activations} activations, "
          f"{'per-channel' if s.per_channel else 'per-tensor'} weights): {s.quantize_nodes} QuantizeLinear nodes"
          f"{left} -> {args.out}")
    return 0


def _batches(args: argparse.Namespace) -> tuple[Callable[[], Iterator[dict[str, np.ndarray]]], Any]:
    """(maker of the model-input batches, labels) from --data or --inputs, shaped and typed for the model."""
    from ..model.activations import load_arrays
    from ..sources import OnnxRuntimeSource
    from ..sources.model_inputs import check_feed, file_feed, input_files

    source = OnnxRuntimeSource(model=args.model, inputs=args.inputs or args.data)
    specs = source.load()
    if args.data is not None:
        arrays = load_arrays(args.data)
        labels = _data_labels(arrays, args)
        feeds = check_feed(specs, arrays, args.data)
        return lambda: iter([feeds]), labels
    files = input_files(args.inputs)
    labels = _labels_file(args.labels) if args.labels else None
    return lambda: (file_feed(p, specs, source.images).arrays for p in files), labels


def searched_table(args: argparse.Namespace, cal: Calibrator, method: str, groups: int) -> Any:
    """``calibrate --search N``: per group of tensors, the method the model's output error prefers."""
    from ..model.ort_search import search_table, searched_entry_methods
    from ..sources import OnnxRuntimeSource
    from ..sources.model_inputs import file_feed, input_files

    if args.model is None or args.runtime == "litert" or Path(args.model).suffix.lower() == ".tflite":
        raise InputError("--search runs the ONNX model in ONNX Runtime: it needs --model M.onnx with --inputs DIR")
    if args.param:
        raise InputError("--search compares methods with their default parameters; expected no -p")
    methods = list(dict.fromkeys([method, *[m.strip() for m in args.search_methods.split(",") if m.strip()]]))
    source = OnnxRuntimeSource(model=args.model, inputs=args.model_inputs[0])
    specs = source.load()
    feeds = [file_feed(p, specs, source.images).arrays for d in args.model_inputs for p in input_files(d)]
    table, steps = search_table(args.model, cal, feeds, methods=methods, groups=groups, scheme=args.scheme)
    chosen = ", ".join(f"{m} {n}" for m, n in searched_entry_methods(table).items())
    last = steps[-1].sqnr_db if steps else {}
    print(f"searched {len(steps)} groups of tensors over {', '.join(methods)} on {len(feeds)} input files: "
          f"{chosen} tensors; output SQNR {max(last.values(), default=float('nan')):.1f} dB on those inputs")
    return table


def _data_labels(arrays: dict[str, np.ndarray], args: argparse.Namespace) -> Any:
    if args.labels is None:
        return None
    if args.labels not in arrays:
        raise InputError(f"{args.data}: no array {args.labels!r} for --labels; it holds {', '.join(sorted(arrays))}")
    return arrays.pop(args.labels)


def _labels_file(path: str) -> np.ndarray:
    from ..model.activations import load_arrays

    arrays = load_arrays(path)
    if len(arrays) != 1:
        raise InputError(f"--labels {path} holds {len(arrays)} arrays; expected one array of integer labels")
    return next(iter(arrays.values()))


def cmd_check_onnxruntime(args: argparse.Namespace) -> int:
    """`check` with ONNX Runtime: quantize into a temporary folder, then compare float and int8."""
    from ..model.ort_check import check_onnx
    from ..model.ort_quant import quantize_onnx

    table = load_table(args.table)
    batches, labels = _batches(args)
    with tempfile.TemporaryDirectory(prefix="edgecal-check-") as tmp:
        int8 = Path(tmp) / "model.int8.onnx"
        quantize_onnx(args.model, int8, table, args.activations, not args.per_tensor)
        report = check_onnx(args.model, int8, batches(), labels)
    weights = "per-tensor" if args.per_tensor else "per-channel"
    if args.json:
        emit("check", model=args.model, table=args.table, **report.to_dict(), activations=args.activations,
             weights=weights)
        return 0
    print(f"edgecal check: {args.model} with {args.table}, {report.samples} samples, runtime onnxruntime "
          f"({args.activations} activations, {weights} weights)")
    if report.float_accuracy is not None and report.int8_accuracy is not None:
        change = 100 * (report.int8_accuracy - report.float_accuracy)
        print(f"top-1 accuracy: float {pct(report.float_accuracy)}, int8 {pct(report.int8_accuracy)} "
              f"({change:+.2f} points)")
    for o in report.outputs:
        agreement = "-" if o.top1_agreement is None else pct(o.top1_agreement)
        say(f"output {o.name}: top-1 agreement float vs int8 {agreement}, SQNR {db(o.sqnr_db)}")
    print()
    rows = [("tensor", "op", "scale", "zp", "SQNR", "own SQNR")]
    for t in report.tensors:
        rows.append((t.name, t.op, fmt(t.scale), str(t.zero_point), db(t.sqnr_db), db(t.own_sqnr_db)))
    print_rows(rows)
    print("\n" + terminal_safe("worst: " + ", ".join(f"{t.name} ({db(t.sqnr_db)})" for t in report.worst())))
    culprit = report.culprit()
    if culprit is not None:
        say(f"range costing the most on its own: {culprit.name} (own SQNR {db(culprit.own_sqnr_db)})")
    return 0


def add_parsers(sub: Any, writer: argparse.ArgumentParser) -> None:
    q = sub.add_parser("quantize", help="write the int8 (QDQ) model ONNX Runtime makes with a table's ranges")
    q.add_argument("--model", required=True, metavar="M.onnx", help="float ONNX model (any ops ONNX Runtime runs)")
    q.add_argument("--table", required=True, help="calibration table of the model's tensors (any readable format)")
    q.add_argument("--out", required=True, metavar="M.int8.onnx", help="int8 model to write")
    add_quantize_options(q)
    q.add_argument("--leave-missing-float", action="store_true",
                   help="leave the nodes of tensors the table lacks in float (default: refuse such a table)")
    q.set_defaults(func=cmd_quantize)


def add_quantize_options(p: argparse.ArgumentParser) -> None:
    """--activations and --per-tensor, shared by quantize and check."""
    from ..model.ort_quant import ACTIVATIONS

    p.add_argument("--activations", default="s8", choices=ACTIVATIONS,
                   help="with ONNX Runtime: int8 (s8, default) or uint8 (u8) activations; weights are int8")
    p.add_argument("--per-tensor", action="store_true",
                   help="with ONNX Runtime: one scale per weight tensor (default: one per output channel)")
