"""The `edgecal` command line. Thin: parse, call the library, print.

Exit codes: 0 success, 2 bad input (a one-line ``edgecal: error: ...`` on stderr,
no partial output), 130 interrupted (progress kept in ``--state`` when given).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ._version import __version__
from .calibrator import DEFAULT_BINS, Calibrator
from .errors import EdgecalError, InputError
from .formats import detect_format, format_names, get_format, load_table
from .inputs import arrays_in, expand_inputs, input_key
from .methods import get_method, method_names
from .table import CalibrationTable

log = logging.getLogger("edgecal")


class Progress:
    """One self-overwriting status line on stderr, only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0
        self._start = time.monotonic()

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self._last >= 0.2):
            self._last = now
            sys.stderr.write(f"\r\x1b[K{text}")
            sys.stderr.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _key_values(items: list[str] | None, what: str) -> dict[str, Any]:
    """``KEY=VALUE`` arguments; values parse as JSON numbers/booleans, else stay strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"{what} {item!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _mb(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


class _Terminated(Exception):
    """SIGTERM arrived; handled like Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


# -- calibrate -------------------------------------------------------------------------------
def cmd_calibrate(args: argparse.Namespace) -> int:
    method = get_method(args.method)
    params = method.resolve(_key_values(args.param, "--param"))
    out_format = get_format(args.format) if args.format else detect_format(args.out)
    options = _key_values(args.option, "--option")
    out_format.check_options(options)
    files = expand_inputs(args.inputs)
    cal = _open_state(args.state, args.bins)
    progress = Progress(not args.quiet)
    total = sum(f.stat().st_size for f in files)
    done_bytes, used, skipped = 0, 0, 0
    last_checkpoint = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        for n, path in enumerate(files, 1):
            key = input_key(path)
            if key in cal.consumed:
                skipped += 1
            else:
                cal.merge(_read_file(path, key, cal.bins))
                used += 1
            done_bytes += path.stat().st_size
            rate = done_bytes / max(progress.elapsed(), 1e-9)
            progress.update(f"edgecal: {n}/{len(files)} files, {_mb(done_bytes)} of {_mb(total)}, {_mb(rate)}/s")
            if args.state and time.monotonic() - last_checkpoint >= args.checkpoint_every:
                cal.save_state(args.state)
                last_checkpoint = time.monotonic()
    except (KeyboardInterrupt, _Terminated):
        progress.done()
        if args.state:
            cal.save_state(args.state)
            print(f"edgecal: interrupted; {used} new files kept in {args.state}, run again to resume", file=sys.stderr)
        else:
            print("edgecal: interrupted; nothing written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.done()
    if args.state:
        cal.save_state(args.state)
    table = cal.compute(method.name, **params)
    table.save(args.out, format=out_format.name, **options)
    note = f", {skipped} already in {args.state}" if skipped else ""
    print(f"calibrated {len(table)} tensors from {used} files{note} with {method.name} -> {args.out} ({out_format.name})")
    return 0


def _open_state(state: str | None, bins: int | None) -> Calibrator:
    if state and Path(state).exists():
        cal = Calibrator.load_state(state)
        if bins is not None and bins != cal.bins:
            raise InputError(f"--bins {bins} differs from the {cal.bins} bins of {state}; omit --bins to resume")
        return cal
    return Calibrator(bins or DEFAULT_BINS)


def _read_file(path: Path, key: str, bins: int) -> Calibrator:
    """Every array of one file in a fresh calibrator, so a bad file leaves no trace."""
    part = Calibrator(bins)
    for array in arrays_in(path):
        part.observe_chunks(array.name, array.chunks())
    part.consumed.add(key)
    return part


# -- export / show / merge ----------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    table = load_table(args.table, args.input_format)
    table.save(args.out, format=args.format, **_key_values(args.option, "--option"))
    print(f"wrote {len(table)} tensors to {args.out} ({args.format or detect_format(args.out).name})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    path = Path(args.path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from err
    if head == Calibrator._MAGIC:
        _show_state(path, Calibrator.load_state(path))
    else:
        _show_table(path, load_table(path))
    return 0


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def _show_table(path: Path, table: CalibrationTable) -> None:
    print(f"{path}: table of {len(table)} tensors, schema {table.SCHEMA}, edgecal {table.edgecal_version}, "
          f"created {table.created}, model {table.model_hash or '-'}")
    rows = [("tensor", "dtype", "amax", "scale", "zp", "method", "values", "nonfinite", "flags")]
    for e in table.values():
        rows.append((e.name, e.dtype, _fmt(e.amax), _fmt(e.scale), str(e.zero_point), e.method,
                     str(e.stats.count), str(e.stats.nonfinite), ",".join(e.flags) or "-"))
    _print_rows(rows)


def _show_state(path: Path, cal: Calibrator) -> None:
    print(f"{path}: state of {len(cal.names())} tensors, {cal.bins} bins, {len(cal.consumed)} inputs consumed, "
          f"model {cal.model_hash or '-'}")
    rows = [("tensor", "arrays", "values", "zeros", "nonfinite", "min", "max", "range")]
    for name in cal.names():
        s, h = cal.stats(name), cal.histogram(name)
        rows.append((name, str(s.samples), str(s.count), str(s.zeros), str(s.nonfinite),
                     _fmt(s.min), _fmt(s.max), _fmt(h.range)))
    _print_rows(rows)


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def cmd_merge(args: argparse.Namespace) -> int:
    states = [Calibrator.load_state(p) for p in args.states]
    merged = states[0]
    for other in states[1:]:
        merged.merge(other)
    merged.save_state(args.out)
    print(f"merged {len(states)} states ({len(merged.names())} tensors) -> {args.out}")
    return 0


# -- demo ------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import METHODS, run_demo

    report = run_demo(Path(args.out))
    print("edgecal demo: bundled activations streamed one sample at a time, thresholds per method\n")
    rows = [("tensor", "values", *[f"amax {m}" for m in METHODS], "scale kl", "clipped kl",
             *[f"SQNR {m}" for m in METHODS])]
    for r in report.rows:
        rows.append((r.name, str(r.values), *[f"{r.amax[m]:.4g}" for m in METHODS], f"{r.scale:.4g}",
                     f"{100 * r.clipped['kl']:.3f}%", *[_db(r.sqnr[m]) for m in METHODS]))
    _print_rows(rows)
    print(f"\nkl table written in every format to {args.out}/:")
    for fmt, path in report.written.items():
        print(f"  {fmt:<5} {path}")
    return 0


def _db(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.1f} dB"


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgecal", description="Streaming int8 calibration for edge devices.")
    p.add_argument("--version", action="version", version=f"edgecal {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    writer = argparse.ArgumentParser(add_help=False)
    writer.add_argument("--format", help=f"table format: {', '.join(format_names())} (default: from the --out suffix)")
    writer.add_argument("-O", "--option", action="append", metavar="KEY=VALUE", help="format option, e.g. trt_version=100300")

    c = sub.add_parser("calibrate", parents=[writer], help="calibrate .npy/.npz files or folders into a table")
    c.add_argument("inputs", nargs="+", metavar="INPUT", help=".npy (one tensor), .npz (one per key) or a folder")
    c.add_argument("-o", "--out", required=True, help="table to write")
    c.add_argument("-m", "--method", default="kl", help=f"one of: {', '.join(method_names())} (default kl)")
    c.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="method parameter, e.g. percentile=99.9")
    c.add_argument("--state", help="resume from and checkpoint to this state file")
    c.add_argument("--bins", type=int, help=f"bins per sign for a new state (default {DEFAULT_BINS})")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    c.add_argument("--checkpoint-every", type=float, default=30.0, metavar="SECONDS", help="state checkpoint interval")
    c.set_defaults(func=cmd_calibrate)

    e = sub.add_parser("export", parents=[writer], help="convert a table to another format")
    e.add_argument("table")
    e.add_argument("-o", "--out", required=True)
    e.add_argument("--input-format", help="format of TABLE (default: detected)")
    e.set_defaults(func=cmd_export)

    s = sub.add_parser("show", help="summarise a table or a state file")
    s.add_argument("path", metavar="TABLE|STATE")
    s.set_defaults(func=cmd_show)

    m = sub.add_parser("merge", help="merge state files (exact)")
    m.add_argument("states", nargs="+", metavar="STATE")
    m.add_argument("-o", "--out", required=True)
    m.set_defaults(func=cmd_merge)

    d = sub.add_parser("demo", help="calibrate the bundled sample and compare methods")
    d.add_argument("-o", "--out", default="edgecal-demo", help="folder for the tables (default ./edgecal-demo)")
    d.set_defaults(func=cmd_demo)
    return p


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"edgecal: {record.levelname.lower()}: {record.getMessage()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StderrFormatter())
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except EdgecalError as err:
        print(f"edgecal: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgecal: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        log.removeHandler(handler)
