"""The `edgecal` command line. Thin: parse, call the library, print.

Exit codes: 0 success, 2 bad input (a one-line ``edgecal: error: ...`` on stderr,
no partial output), 130 interrupted (progress kept in ``--state`` when given).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from ._version import __version__
from .calibrator import DEFAULT_BINS, Calibrator
from .errors import EdgecalError, InputError
from .formats import detect_format, format_names, get_format, load_table
from .inputs import arrays_in, expand_inputs, input_key
from .methods import get_method, method_names
from .reference.requant import ROUNDINGS
from .table import SCHEMES, CalibrationTable

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
    if args.scheme not in SCHEMES:
        raise InputError(f"unknown scheme {args.scheme!r}; known schemes: {', '.join(SCHEMES)}")
    read, files = _calibrate_sources(args)
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
                cal.merge(read(path, key, cal.bins))
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
    table = cal.compute(method.name, scheme=args.scheme, **params)
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


def _calibrate_sources(args: argparse.Namespace) -> tuple[Any, list[Path]]:
    """(reader, files): activation files, or the activations of --model on the model inputs in --inputs."""
    if args.model is None:
        if args.model_inputs or not args.inputs:
            raise InputError("expected activation files or folders, or --model M.onnx with --inputs DIR")
        return _read_file, expand_inputs(args.inputs)
    if args.inputs or not args.model_inputs:
        raise InputError("--model reads its input batches from --inputs DIR; expected no positional INPUT")
    from .model import calibrate_file, load_graph

    return functools.partial(calibrate_file, load_graph(args.model)), expand_inputs(args.model_inputs)


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
    _print_digits_demo()
    from .link.demo_stage import run_serial_stage

    print("\n" + "\n".join(run_serial_stage().lines()))
    return 0


def _print_digits_demo() -> None:
    from .model import MissingExtraError
    from .model.digits import run_digits_demo

    try:
        demo = run_digits_demo()
    except MissingExtraError as err:
        print(f"\ndigits CNN check skipped: {err}")
        return
    print(f"\ndigits CNN (bundled ONNX, scikit-learn digits): calibrated from its own activations on "
          f"{demo.calib_samples} images, scheme {demo.scheme}; top-1 on {demo.eval_samples} held-out images\n")
    rows = [("method", "float top-1", "int8 top-1", "change", "agreement", "worst SQNR", "median SQNR")]
    for method, r in demo.reports.items():
        worst = r.worst(1)[0]
        median = statistics.median(t.sqnr_db for t in r.tensors)
        rows.append((method, _pct(r.float_accuracy), _pct(r.int8_accuracy),
                     f"{100 * (r.int8_accuracy - r.float_accuracy):+.2f} pt", _pct(r.top1_agreement),
                     f"{_db(worst.sqnr_db)} ({worst.name})", _db(median)))
    _print_rows(rows)
    names = [t.name for t in next(iter(demo.reports.values())).tensors]
    print("\nper-tensor SQNR of the int8 model against float:\n")
    rows = [("tensor", *demo.reports)]
    for i, name in enumerate(names):
        rows.append((name, *[_db(r.tensors[i].sqnr_db) for r in demo.reports.values()]))
    _print_rows(rows)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


# -- check -----------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from .model import check_model, load_graph
    from .model.activations import feeds_from, load_arrays

    graph = load_graph(args.model)
    table = load_table(args.table)
    arrays = load_arrays(args.data)
    labels = None
    if args.labels is not None:
        if args.labels not in arrays:
            raise InputError(f"{args.data}: no array {args.labels!r} for --labels; it holds {', '.join(sorted(arrays))}")
        labels = arrays.pop(args.labels)
    report = check_model(graph, table, feeds_from(graph, arrays, args.data), labels, args.rounding)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        return 0
    print(f"edgecal check: {args.model} with {args.table}, {report.samples} samples, rounding {report.rounding}")
    if report.float_accuracy is not None:
        change = 100 * (report.int8_accuracy - report.float_accuracy)
        print(f"top-1 accuracy: float {_pct(report.float_accuracy)}, int8 {_pct(report.int8_accuracy)} ({change:+.2f} points)")
    print(f"top-1 agreement float vs int8: {_pct(report.top1_agreement)}\n")
    rows = [("tensor", "op", "scale", "zp", "SQNR")]
    for t in report.tensors:
        rows.append((t.name, t.op, _fmt(t.scale), str(t.zero_point), _db(t.sqnr_db)))
    _print_rows(rows)
    print("\nworst: " + ", ".join(f"{t.name} ({_db(t.sqnr_db)})" for t in report.worst()))
    return 0


def _db(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.1f} dB"


# -- stream ----------------------------------------------------------------------------------
def cmd_stream(args: argparse.Namespace) -> int:
    from .link import SerialSource, StopRequested, StreamSession
    from .link.errors import LinkError

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    src = SerialSource(args.port, baudrate=args.baud, timeout=args.timeout, reconnect_timeout=args.reconnect_timeout,
                       stop=stop)
    try:
        if args.list:
            _print_device(args.port, src.open())
            return 0
        method, params, out_format, options = _stream_outputs(args)
        cal = _open_state(args.state, args.bins)
        info = src.open()
        progress = Progress(not args.quiet)
        tensors = [t for t in args.tensors.split(",") if t] if args.tensors else None
        result = StreamSession(
            src, cal, tensors=tensors, samples=args.samples, duration=args.duration, stop=stop,
            on_progress=lambda p: progress.update(_stream_line(p)), max_loss=args.max_loss / 100.0,
            checkpoint=(lambda: cal.save_state(args.state)) if args.state else None,
            checkpoint_every=args.checkpoint_every,
        ).run()
        progress.done()
        if args.state:
            cal.save_state(args.state)
        if not cal.names():
            raise InputError(f"{args.port}: no intact tensor arrived ({result.reason}); nothing to calibrate")
        table = cal.compute(method.name, **params).replace_meta(provenance={"link": result.provenance})
        table.save(args.out, format=out_format.name, **options)
        p = result.provenance
        print(f"streamed {result.samples} complete samples from {args.port} ({info.hello.firmware}; {result.reason}): "
              f"{p['tensors_used']} tensors used, {p['tensors_discarded']} discarded, {p['frames_missing']} frames "
              f"lost, {p['frames_corrupt']} corrupt; {method.name} table of {len(table)} tensors -> {args.out}")
        if args.push:
            if result.reason == "device-gone":
                raise LinkError(f"{args.port}: cannot push the table, the device is gone (the table is in {args.out})")
            size, crc = src.push_table(_ecal(table))
            print(f"pushed the table to the device: {size} bytes, CRC-32 0x{crc:08x}, accepted")
        return 0
    except StopRequested:
        print("edgecal: interrupted before streaming began; nothing written", file=sys.stderr)
        return 130
    finally:
        src.close()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _ecal(table: CalibrationTable) -> bytes:
    from .formats.ecal import write_ecal

    return write_ecal(table)


def _stream_outputs(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any, dict[str, Any]]:
    if not args.out:
        raise InputError("--out TABLE is required unless --list is given")
    if args.samples is not None and args.samples < 1 or args.duration is not None and args.duration <= 0:
        raise InputError(f"--samples {args.samples} / --duration {args.duration}: expected a positive number")
    method = get_method(args.method)
    params = method.resolve(_key_values(args.param, "--param"))
    out_format = get_format(args.format) if args.format else detect_format(args.out)
    options = _key_values(args.option, "--option")
    out_format.check_options(options)
    return method, params, out_format, options


def _stream_line(p: dict[str, Any]) -> str:
    return (f"edgecal: {p['samples']} samples, {p['tensors']} tensors, {_mb(p['bytes_per_s'])}/s, "
            f"{p['frames_missing']} frames lost, {p['frames_corrupt']} corrupt, {p['discarded']} tensors discarded")


def _print_device(port: str, info: Any) -> None:
    h = info.hello
    print(f"{port}: {h.firmware or 'firmware'}, link protocol {h.version}, model {h.model_hash}, "
          f"max payload {h.max_payload}, boot id {h.boot_id}")
    rows = [("id", "tensor", "dtype", "shape", "bytes")]
    for t in info.tensors:
        rows.append((str(t.id), t.name, t.dtype.name, "x".join(map(str, t.shape)) or "scalar", str(t.nbytes)))
    _print_rows(rows)


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgecal", description="Streaming int8 calibration for edge devices.")
    p.add_argument("--version", action="version", version=f"edgecal {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    writer = argparse.ArgumentParser(add_help=False)
    writer.add_argument("--format", help=f"table format: {', '.join(format_names())} (default: from the --out suffix)")
    writer.add_argument("-O", "--option", action="append", metavar="KEY=VALUE", help="format option, e.g. trt_version=100300")

    c = sub.add_parser("calibrate", parents=[writer], help="calibrate .npy/.npz files or folders into a table")
    c.add_argument("inputs", nargs="*", metavar="INPUT", help=".npy (one tensor), .npz (one per key) or a folder")
    c.add_argument("--model", metavar="M.onnx", help="calibrate every activation of this float ONNX model (needs onnx)")
    c.add_argument("--inputs", dest="model_inputs", action="append", metavar="DIR",
                   help="with --model: .npy/.npz model input batches (arrays named after the model inputs)")
    c.add_argument("--scheme", default="symmetric", help=f"one of: {', '.join(SCHEMES)} (default symmetric)")
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

    k = sub.add_parser("check", help="run a float ONNX model in float and in int8 with a table, compare accuracy")
    k.add_argument("--model", required=True, metavar="M.onnx", help="float ONNX model")
    k.add_argument("--table", required=True, help="calibration table of the model's activations")
    k.add_argument("--data", required=True, metavar="D.npz", help="model inputs (named after them) and labels")
    k.add_argument("--labels", metavar="KEY", help="array of integer labels in --data")
    k.add_argument("--rounding", default="tflite", choices=ROUNDINGS, help="requantization semantics (default tflite)")
    k.add_argument("--json", action="store_true", help="machine-readable report")
    k.set_defaults(func=cmd_check)

    st = sub.add_parser("stream", parents=[writer], help="calibrate from a device on a serial link (firmware_interface)")
    st.add_argument("--port", required=True, metavar="URL",
                    help="serial port or pyserial URL: /dev/ttyACM0, /dev/serial/by-id/..., socket://host:port, rfc2217://...")
    st.add_argument("-o", "--out", help="table to write (not needed with --list)")
    st.add_argument("--baud", type=int, default=921600, help="baud rate (default 921600; USB-CDC ignores it)")
    stop_at = st.add_mutually_exclusive_group()
    stop_at.add_argument("--samples", type=int, metavar="N", help="stop after N complete samples")
    stop_at.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    st.add_argument("--state", help="resume from and checkpoint to this state file")
    st.add_argument("--tensors", metavar="A,B", help="stream only these tensors (default: all)")
    st.add_argument("--list", action="store_true", help="print the device's tensor table and exit")
    st.add_argument("--push", action="store_true", help="send the finished table (.ecal) to the device")
    st.add_argument("-m", "--method", default="kl", help=f"one of: {', '.join(method_names())} (default kl)")
    st.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="method parameter")
    st.add_argument("--bins", type=int, help=f"bins per sign for a new state (default {DEFAULT_BINS})")
    st.add_argument("--timeout", type=float, default=5.0, metavar="S", help="handshake timeout (default 5)")
    st.add_argument("--reconnect-timeout", type=float, default=30.0, metavar="S",
                    help="how long to wait for a vanished device (default 30)")
    st.add_argument("--max-loss", type=float, default=1.0, metavar="PERCENT",
                    help="warn when more tensors than this are lost (default 1)")
    st.add_argument("--checkpoint-every", type=float, default=30.0, metavar="SECONDS", help="state checkpoint interval")
    st.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    st.set_defaults(func=cmd_stream)

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
