"""`calibrate`, `export`, `show` and `merge`: tables and states from files."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from ..calibrator import Calibrator
from ..errors import InputError, MissingExtraError
from ..formats import detect_format, get_format, load_table
from ..formats.trt import disagreements
from ..file_state import file_state
from ..arrays import arrays_in, expand_inputs
from ..atomic import check_writable
from ..identity import file_identity, legacy_identity
from ..merge import merge_state_files
from ..pipeline import CheckpointPolicy, EmitPolicy, Item, Pipeline, StopPolicy, stop_on_signals
from ..methods import DEFAULT_METHOD, get_method
from ..regular_file import open_regular
from ..table import SCHEMES, CalibrationTable
from .common import Progress, fmt, key_values, mb, method_params, open_state, output_spec, print_rows, say
from .jsonout import emit, state_fields, table_fields
from .files_parsers import DEFAULT_SEARCH_GROUPS


log = logging.getLogger("edgecal")


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fold the files into the state through the pipeline, then write the table (none when interrupted)."""
    method, params, out_format, options = output_spec(args)
    if args.scheme not in SCHEMES:
        raise InputError(f"unknown scheme {args.scheme!r}; known schemes: {', '.join(SCHEMES)}")
    if args.dask or args.shards != 1:
        return _calibrate_on_dask(args, method.name, params, out_format.name, options)
    read, files, runtime = _calibrate_sources(args)
    _check_before_work(args, files)
    cal = open_state(args.state, args.bins)
    progress = Progress(not args.quiet)
    emit = EmitPolicy(args.out, method.name, args.scheme, params, out_format.name, options, on_interrupt=False,
                      compute=lambda c: _table(args, c, method.name, params))
    with stop_on_signals(threading.Event(), second_interrupts=True) as stop:
        pipe = Pipeline(cal, CheckpointPolicy(args.state, args.checkpoint_every), StopPolicy(stop), emit,
                        on_fold=_file_progress(progress, files))
        result = pipe.run(_file_inputs(files, read, cal.bins))
    progress.done()
    if result.reason in ("stopped", "interrupted"):
        if args.state:
            print(f"edgecal: interrupted; {result.used} new files kept in {args.state}, run again to resume",
                  file=sys.stderr)
        else:
            print("edgecal: interrupted; nothing written", file=sys.stderr)
        return 130
    assert result.table is not None  # the pipeline raises rather than end a run without a table
    _report_calibrated(args, result.table, (out_format.name, method.name, runtime), (result.used, result.skipped))
    return 0


def _file_inputs(files: list[Path], read: Any, bins: int) -> Iterator[Item]:
    """Each file as a pipeline input: its identity (and the older one states may hold), its state when read."""
    for path in files:
        st = os.stat(path)
        key = file_identity(path, st)
        yield (key, legacy_identity(path, st)), partial(read, path, key, bins)


def _file_progress(progress: Progress, files: list[Path]) -> Callable[[Any, bool], None]:
    """The pipeline's ``on_fold``: the progress line after each file, in files and bytes."""
    sizes = [f.stat().st_size for f in files]
    total, done = sum(sizes), {"files": 0, "bytes": 0}

    def folded(key: Any, used: bool) -> None:
        done["bytes"] += sizes[done["files"]]
        done["files"] += 1
        rate = done["bytes"] / max(progress.elapsed(), 1e-9)
        progress.update(f"edgecal: {done['files']}/{len(files)} files, {mb(done['bytes'])} of {mb(total)}, "
                        f"{mb(rate)}/s")
    return folded


def _table(args: argparse.Namespace, cal: Calibrator, method: str, params: dict[str, Any]) -> CalibrationTable:
    """The model-searched table when a search runs, else ``method``'s."""
    groups = _search_groups(args)
    table = _searched(args, cal, method, groups) if groups else None
    return table if table is not None else cal.compute(method, scheme=args.scheme, **params)


def _report_calibrated(args: argparse.Namespace, table: CalibrationTable, how: tuple[str, str, str | None],
                       files: tuple[int, int]) -> None:
    """The summary line, or with --json the table as written.

    ``how``: (format, method, runtime or None); ``files``: (used, already in the state).
    """
    (out_format, method, runtime), (used, skipped) = how, files
    if args.json:
        emit("calibrate", out=args.out, format=out_format, method=method, scheme=args.scheme, runtime=runtime,
             files_used=used, files_skipped=skipped, state=args.state, **table_fields(table))
        return
    note = f", {skipped} already in {args.state}" if skipped else ""
    via = f" (runtime {runtime})" if runtime else ""
    print(f"calibrated {len(table)} tensors from {used} files{note} with {method}{via} -> {args.out} "
          f"({out_format})")


def _calibrate_on_dask(args: argparse.Namespace, method: str, params: dict[str, Any], out_format: str,
                       options: dict[str, Any]) -> int:
    """`cmd_calibrate` with every file's state built and merged on the Dask cluster at ``--dask``."""
    from ..dask import build_state, connect, import_distributed

    if not args.dask or args.shards < 1:
        raise InputError(f"--shards {args.shards}: expected N >= 1, with --dask (shards are split between workers)")
    if args.model is not None or args.search:
        raise InputError("--dask calibrates activation files; expected no --model or --search")
    import_distributed()
    _, files, _ = _calibrate_sources(args)
    _check_before_work(args, files)
    cal = open_state(args.state, args.bins)
    todo = [f for f in files if not {file_identity(f), legacy_identity(f)} & cal.consumed]
    pipe = Pipeline(cal, CheckpointPolicy(args.state), emit=EmitPolicy(args.out, method, args.scheme, params,
                                                                       out_format, options))
    if todo:
        with connect(args.dask) as client:
            pipe.fold(None, build_state(client, todo, bins=cal.bins, shards=args.shards))  # keys: the files'
    table = pipe.finish("exhausted").table
    assert table is not None  # the pipeline raises rather than end without a table
    note = f", {len(files) - len(todo)} already in {args.state}" if len(todo) < len(files) else ""
    print(f"calibrated {len(table)} tensors from {len(todo)} files{note} with {method} on Dask ({args.dask}) -> "
          f"{args.out} ({out_format})")
    return 0


def _searched(args: argparse.Namespace, cal: Calibrator, method: str, groups: int) -> CalibrationTable | None:
    """The model-searched table; None when a search nobody asked for cannot run (then the plain table is used)."""
    from .onnx import searched_table

    try:
        return searched_table(args, cal, method, groups)
    except (InputError, MissingExtraError) as err:
        if args.search is not None:  # asked for: its failure is the command's
            raise
        log.warning("no model search (%s); the table is %s's alone", err, method)
        return None


def _search_groups(args: argparse.Namespace) -> int:
    """``--search`` as given, or by default 8 groups for an ONNX model when ONNX Runtime is there (0: no search)."""
    if args.search is not None:
        return int(args.search)
    if args.model is None or Path(args.model).suffix.lower() != ".onnx" or args.param or args.runtime == "litert":
        return 0
    import importlib.util

    return DEFAULT_SEARCH_GROUPS if importlib.util.find_spec("onnxruntime") is not None else 0


def _calibrate_sources(args: argparse.Namespace) -> tuple[Any, list[Path], str | None]:
    """(reader, files, runtime): activation files, or the activations of --model on the batches in --inputs."""
    if args.model is None:
        if args.model_inputs or not args.inputs:
            raise InputError("expected activation files or folders, or --model M.onnx with --inputs DIR")
        return _read_file, expand_inputs(args.inputs), None
    if args.inputs or not args.model_inputs:
        raise InputError("--model reads its input batches from --inputs DIR; expected no positional INPUT")
    from .onnx import model_reader

    files = expand_inputs(args.model_inputs)
    read, runtime = model_reader(args.model, args.runtime, args.model_inputs)
    return read, files, runtime


_read_file = file_state  # every array of one file in a fresh calibrator, as edgecal.dask builds it on workers


def _check_before_work(args: argparse.Namespace, files: list[Path]) -> None:
    """Every input's headers and the places written to, checked before the first byte is ingested."""
    check_writable(args.out)
    if args.state:
        check_writable(args.state)
    for path in files:
        arrays_in(path)


def cmd_export(args: argparse.Namespace) -> int:
    """A table (converted) or a state (a table computed with -m/-p/--scheme) written as --out."""
    check_writable(args.out)
    out_format = get_format(args.format) if args.format else detect_format(args.out)
    options = out_format.check_options(key_values(args.option, "--option"))
    table = _table_or_state(Path(args.table), args, args.input_format)
    table.save(args.out, format=out_format.name, **options)
    say(f"wrote {len(table)} tensors to {args.out} ({out_format.name})")
    return 0


def _is_state(path: Path) -> bool:
    with open_regular(path, "table or state") as fh:
        return fh.read(4) == Calibrator._MAGIC


def _table_or_state(path: Path, args: argparse.Namespace, input_format: str | None = None) -> CalibrationTable:
    """The table in ``path``, or the table computed from the state in ``path`` with -m, -p and --scheme."""
    if not _is_state(path):
        given = [flag for flag, value in (("-m", args.method), ("-p", args.param), ("--scheme", args.scheme)) if value]
        if given:
            raise InputError(f"{path} is a table, its thresholds already chosen; {given[0]} applies to a state "
                             "(.ecst), expected no -m, -p or --scheme")
        return load_table(path, input_format)
    if input_format:
        raise InputError(f"{path} is a state; --input-format applies to tables, expected none")
    method = get_method(args.method or DEFAULT_METHOD)
    params = method_params(method, args.param)
    scheme = args.scheme or "symmetric"
    if scheme not in SCHEMES:
        raise InputError(f"unknown scheme {scheme!r}; known schemes: {', '.join(SCHEMES)}")
    return Calibrator.load_state(path).compute(method.name, scheme=scheme, **params)


def cmd_show(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not args.against and (args.method or args.param or args.scheme):
        raise InputError("-m, -p and --scheme choose how a state given to --against is computed; expected --against")
    if _is_state(path):
        if args.against:
            raise InputError(f"{path} is a state; --against compares a table with a reference, expected a table")
        cal = Calibrator.load_state(path)
        if args.json:
            emit("show", path=str(path), kind="state", **state_fields(cal))
        else:
            _show_state(path, cal)
        return 0
    table = load_table(path)
    if args.json:
        return _show_json(path, table, args)
    _show_table(path, table)
    if args.against:
        _check_against(path, table, Path(args.against), args)
    return 0


def _check_against(path: Path, table: CalibrationTable, ref_path: Path, args: argparse.Namespace) -> None:
    """One line per tensor where ``table`` and the reference differ at float32 scale precision; exit 2 if any."""
    reference = _table_or_state(ref_path, args)
    found = disagreements(table, reference)
    for name, why in found:
        say(f"disagrees: {name!r}: {why}")
    if found:
        raise _disagree(path, found, ref_path, reference)
    say(f"{path} agrees with {ref_path}: {len(reference)} tensors, identical float32 scales amax/127")


def _show_json(path: Path, table: CalibrationTable, args: argparse.Namespace) -> int:
    """``show --json``: the table; with --against its disagreements too (``ok`` false and exit 2 when any)."""
    if not args.against:
        emit("show", path=str(path), kind="table", **table_fields(table))
        return 0
    reference = _table_or_state(Path(args.against), args)
    found = disagreements(table, reference)
    emit("show", ok=not found, path=str(path), kind="table", against=args.against,
         disagreements=[{"name": name, "why": why} for name, why in found], **table_fields(table))
    if found:
        raise _disagree(path, found, args.against, reference)
    return 0


def _disagree(path: Path, found: list[Any], ref_path: Any, reference: CalibrationTable) -> InputError:
    return InputError(f"{path}: {len(found)} tensors disagree with {ref_path}; expected the float32 scales of "
                      f"all {len(reference)} to match")


def _show_table(path: Path, table: CalibrationTable) -> None:
    say(f"{path}: table of {len(table)} tensors, schema {table.SCHEMA}, edgecal {table.edgecal_version}, "
          f"created {table.created}, model {table.model_hash or '-'}")
    rows = [("tensor", "dtype", "amax", "scale", "zp", "method", "values", "nonfinite", "flags")]
    for e in table.values():
        rows.append((e.name, e.dtype, fmt(e.amax), fmt(e.scale), str(e.zero_point), e.method,
                     str(e.stats.count), str(e.stats.nonfinite), ",".join(e.flags) or "-"))
    print_rows(rows)


def _show_state(path: Path, cal: Calibrator) -> None:
    say(f"{path}: state of {len(cal.names())} tensors, {cal.bins} bins, {len(cal.consumed)} inputs consumed, "
          f"model {cal.model_hash or '-'}")
    rows = [("tensor", "arrays", "values", "zeros", "nonfinite", "min", "max", "range")]
    for name in cal.names():
        s, h = cal.stats(name), cal.histogram(name)
        rows.append((name, str(s.samples), str(s.count), str(s.zeros), str(s.nonfinite),
                     fmt(s.min), fmt(s.max), fmt(h.range)))
    print_rows(rows)


def cmd_merge(args: argparse.Namespace) -> int:
    check_writable(args.out)
    merged = merge_state_files(args.states)  # one state at a time: bounded memory for thousands of inputs
    merged.save_state(args.out)
    if args.json:
        emit("merge", out=args.out, states=list(args.states), **state_fields(merged))
        return 0
    say(f"merged {len(args.states)} states ({len(merged.names())} tensors) -> {args.out}")
    return 0
