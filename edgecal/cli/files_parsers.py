"""The parsers of `calibrate`, `export`, `show` and `merge` (their work is in `edgecal.cli.files`).

Building them imports neither numpy nor numba: the method and format names in their help
come from `edgecal.names`, and each command imports `edgecal.cli.files` only when it runs,
so ``edgecal calibrate --help`` prints in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..names import DEFAULT_BINS, DEFAULT_METHOD, RUNTIMES, method_names
from ..table import SCHEMES

DEFAULT_SEARCH_GROUPS = 8


def calibrate(args: argparse.Namespace) -> int:
    from .files import cmd_calibrate

    return cmd_calibrate(args)


def export(args: argparse.Namespace) -> int:
    from .files import cmd_export

    return cmd_export(args)


def show(args: argparse.Namespace) -> int:
    from .files import cmd_show

    return cmd_show(args)


def merge(args: argparse.Namespace) -> int:
    from .files import cmd_merge

    return cmd_merge(args)


def add_parsers(sub: Any, writer: argparse.ArgumentParser) -> None:
    c = sub.add_parser("calibrate", parents=[writer], help="calibrate .npy/.npz files or folders into a table")
    c.add_argument("inputs", nargs="*", metavar="INPUT", help=".npy (one tensor), .npz (one per key) or a folder")
    c.add_argument("--model", metavar="M.onnx", help="calibrate every activation of this float model (.onnx, .tflite)")
    c.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="with --model: who runs it; edgecal (its own runner, its op subset), onnxruntime (any ONNX "
                   "model), litert (.tflite); default auto: litert for .tflite, edgecal when it runs every op, "
                   "else onnxruntime")
    c.add_argument("--inputs", dest="model_inputs", action="append", metavar="DIR",
                   help="with --model: .npy/.npz model input batches (arrays named after the model inputs)")
    c.add_argument("--scheme", default="symmetric", help=f"one of: {', '.join(SCHEMES)} (default symmetric)")
    c.add_argument("-o", "--out", required=True, help="table to write")
    c.add_argument("-m", "--method", default=DEFAULT_METHOD,
                   help=f"one of: {', '.join(method_names())} (default {DEFAULT_METHOD})")
    c.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="method parameter, e.g. percentile=99.9")
    c.add_argument("--state", help="resume from and checkpoint to this state file")
    c.add_argument("--bins", type=int, help=f"bins per sign for a new state (default {DEFAULT_BINS})")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    c.add_argument("--json", action="store_true", help="print the result as JSON (schema in the README)")
    c.add_argument("--checkpoint-every", type=float, default=30.0, metavar="SECONDS", help="state checkpoint interval")
    c.add_argument("--search", type=int, default=None, metavar="GROUPS",
                   help="with --model and ONNX Runtime: split the tensors into GROUPS runs in graph order and keep, "
                        "per run, the method (-m, then --search-methods) whose int8 model has the best output SQNR "
                        f"on the --inputs files (default {DEFAULT_SEARCH_GROUPS} for an .onnx model when ONNX Runtime "
                        "is installed and no -p is given; 0 turns it off)")
    c.add_argument("--search-methods", default="percentile", metavar="M,M",
                   help="methods the search tries after -m (default percentile)")
    c.add_argument("--dask", metavar="SCHEDULER", help="build the state on a Dask cluster: a scheduler address "
                   "(tcp://host:8786), or local[:N] for N local worker processes; same table bit for bit; "
                   "needs pip install -e '.[dask]'")
    c.add_argument("--shards", type=int, default=1, metavar="N",
                   help="with --dask: split every file into N runs of whole samples, one task each (default 1)")
    c.set_defaults(func=calibrate)

    chooser = argparse.ArgumentParser(add_help=False)
    chooser.add_argument("-m", "--method", help=f"for a state: one of {', '.join(method_names())} "
                         f"(default {DEFAULT_METHOD})")
    chooser.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="for a state: method parameter")
    chooser.add_argument("--scheme", help=f"for a state: one of {', '.join(SCHEMES)} (default symmetric)")
    e = sub.add_parser("export", parents=[writer, chooser],
                       help="convert a table to another format, or compute one from a state (-m, -p, --scheme)")
    e.add_argument("table", metavar="TABLE|STATE")
    e.add_argument("-o", "--out", required=True)
    e.add_argument("--input-format", help="format of TABLE (default: detected)")
    e.set_defaults(func=export)

    s = sub.add_parser("show", parents=[chooser], help="summarise a table or a state file")
    s.add_argument("path", metavar="TABLE|STATE")
    s.add_argument("--against", metavar="TABLE|STATE",
                   help="check that TABLE (e.g. a TensorRT cache, which has no checksum) holds the same float32 "
                   "scales as this table or state; one line per disagreeing tensor, exit 2 if any")
    s.add_argument("--json", action="store_true", help="print the table or state as JSON (schema in the README)")
    s.set_defaults(func=show)

    m = sub.add_parser("merge", help="merge state files (exact)")
    m.add_argument("states", nargs="+", metavar="STATE")
    m.add_argument("-o", "--out", required=True)
    m.add_argument("--json", action="store_true", help="print the merged state as JSON (schema in the README)")
    m.set_defaults(func=merge)
