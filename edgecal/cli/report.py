"""`report`: an HTML page and a PNG per tensor from a state or a table (the ``report`` extra)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..calibrator import Calibrator
from ..errors import InputError
from ..formats import load_table
from ..table import SCHEMES
from .common import say
from .files import _is_state


def _methods(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import checker, write_report
    from ..report.plots import import_pyplot
    from ..report.write import check_out

    import_pyplot()  # the missing extra is said before any work
    check_out(args.out)
    if (args.model is None) != (args.data is None):
        raise InputError("the accuracy check needs both --model M.onnx and --data D.npz; expected both or neither")
    check = checker(args.model, args.data, args.labels) if args.model else None  # model and data read first
    path = Path(args.input)
    views, source, checked = _from_state(args, path, check) if _is_state(path) else _from_table(args, path, check)
    page = write_report(args.out, f"edgecal report: {path.name}", source, views, checked)
    say(f"wrote {page} ({len(views)} tensors, {len(views)} images)")
    return 0


def _from_state(args: argparse.Namespace, path: Path, check: Any) -> tuple[list[Any], str, dict[str, Any]]:
    """(views, description, accuracy per method) of a state: every listed method's table computed."""
    from ..report import state_tables, state_views

    cal = Calibrator.load_state(path)
    tables = state_tables(cal, _methods(args.methods), args.scheme)
    checked = {m: check(t) for m, t in tables.items()} if check else {}
    source = f"state {path}: {len(cal.names())} tensors, {cal.bins} bins, scheme {args.scheme}"
    return state_views(cal, tables), source, checked


def _from_table(args: argparse.Namespace, path: Path, check: Any) -> tuple[list[Any], str, dict[str, Any]]:
    """(views, description, accuracy keyed by each method the table's entries name) of a table."""
    from ..report import table_views

    if args.methods or args.scheme != "symmetric":
        raise InputError(f"{path} is a table, its ranges already chosen; --methods and --scheme apply to a "
                         "state (.ecst), expected neither")
    table = load_table(path)
    once = check(table) if check else None  # one table, whichever methods chose its entries
    checked = {e.method: once for e in table.values()} if once else {}
    source = f"table {path}: {len(table)} tensors, created {table.created} by edgecal {table.edgecal_version}"
    return table_views(table), source, checked


def add_parsers(sub: Any, writer: argparse.ArgumentParser) -> None:
    r = sub.add_parser("report", help="an HTML page and a PNG per tensor: histograms, each method's range, "
                       "clipping, SQNR, flags (extra: report)")
    r.add_argument("input", metavar="STATE_OR_TABLE", help="a state (.ecst) or a table in any readable format")
    r.add_argument("--out", required=True, metavar="DIR", help="folder to write index.html and the PNGs to "
                   "(a new name, an empty folder or an earlier report)")
    r.add_argument("--methods", metavar="M,M", help="state: the methods to show (default: every registered one)")
    r.add_argument("--scheme", default="symmetric", choices=sorted(SCHEMES), help="state: the scheme of the ranges")
    r.add_argument("--model", metavar="M.onnx", help="float ONNX model: add the accuracy check of each table")
    r.add_argument("--data", metavar="D.npz", help="the model's inputs for the accuracy check")
    r.add_argument("--labels", metavar="KEY", help="array of --data holding integer labels (top-1 accuracy)")
    r.set_defaults(func=cmd_report)
