"""`stream`: calibrate from a device on a serial link."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from ..calibrator import DEFAULT_BINS, Calibrator
from ..errors import InputError
from ..methods import DEFAULT_METHOD, method_names
from ..pipeline import EmitPolicy, stop_on_signals
from ..table import CalibrationTable
from .common import open_state, output_spec, print_rows
from .jsonout import emit, table_fields
from .live import LiveView
from .ports import list_ports, pick_port


def cmd_stream(args: argparse.Namespace) -> int:
    from ..link import SerialHost, StopRequested

    port = pick_port(list_ports()) if args.port == "auto" else args.port
    with stop_on_signals(threading.Event()) as stop:
        src = SerialHost(port, baudrate=args.baud, timeout=args.timeout, reconnect_timeout=args.reconnect_timeout,
                         max_sample_bytes=args.max_sample_bytes, stop=stop)
        try:
            if args.list:
                _print_device(port, src.open(), args.json)
                return 0
            return _stream(args, port, src, stop)
        except StopRequested:
            print("edgecal: interrupted before streaming began; nothing written", file=sys.stderr)
            return 130
        finally:
            src.close()


def _stream(args: argparse.Namespace, port: str, src: Any, stop: threading.Event) -> int:
    """Stream into the state, write the table, push it when asked; the summary on stdout."""
    from ..link import StreamSession
    from ..link.errors import LinkError

    method, params, out_format, options = _stream_outputs(args)
    cal = open_state(args.state, args.bins)
    info = src.open()
    view = LiveView(cal, mode=_view_mode(args), every=args.log_every)
    tensors = [t for t in args.tensors.split(",") if t] if args.tensors else None
    session: Any = None

    def table_of(c: Calibrator) -> CalibrationTable:
        if not c.names():
            raise InputError(f"{port}: no intact tensor arrived ({session.reason}); nothing to calibrate")
        return c.compute(method.name, **params)

    emit = EmitPolicy(args.out, method.name, params=params, format=out_format.name, options=options,
                      compute=table_of, provenance=lambda: {"link": session.provenance(session.reason)})
    session = StreamSession(
        src, cal, tensors=tensors, samples=args.samples, duration=args.duration, stop=stop,
        on_progress=view.update, max_loss=args.max_loss / 100.0, state=args.state,
        checkpoint_every=args.checkpoint_every, emit=emit,
    )
    try:
        result = session.run()
    finally:
        view.done(session.progress())  # the final figures, not a throttled one
    table = result.table
    assert table is not None  # the session's pipeline raises rather than end without a table
    pushed = None
    if args.push:
        if result.reason == "device-gone":
            raise LinkError(f"{port}: cannot push the table, the device is gone (the table is in {args.out})")
        size, crc = src.push_table(_ecal(table))
        pushed = {"bytes": size, "crc32": crc}
    _report(args, port, info, result, table, (method.name, out_format.name, pushed))
    return 0


def _report(args: argparse.Namespace, port: str, info: Any, result: Any, table: CalibrationTable,
            how: tuple[str, str, dict[str, int] | None]) -> None:
    """The summary lines, or with --json one document; ``how``: (method, format, push result or None)."""
    method, out_format, pushed = how
    p = result.provenance
    if args.json:
        emit("stream", port=port, firmware=info.hello.firmware, reason=result.reason, samples=result.samples,
             out=args.out, format=out_format, method=method, pushed=pushed, **table_fields(table))
        return
    print(f"streamed {result.samples} complete samples from {port} ({info.hello.firmware}; {result.reason}): "
          f"{p['tensors_used']} tensors used, {p['tensors_discarded']} discarded, {p['frames_missing']} frames "
          f"lost, {p['frames_corrupt']} corrupt; {method} table of {len(table)} tensors -> {args.out}")
    if pushed:
        print(f"pushed the table to the device: {pushed['bytes']} bytes, CRC-32 0x{pushed['crc32']:08x}, accepted")


def _view_mode(args: argparse.Namespace) -> str:
    """``off`` with --quiet, ``live`` on a terminal or with --progress, else ``log``."""
    if args.quiet:
        return "off"
    if args.progress or sys.stderr.isatty():
        return "live"
    return "log"


def _ecal(table: CalibrationTable) -> bytes:
    from ..formats.ecal import write_ecal

    return write_ecal(table)


def _stream_outputs(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any, dict[str, Any]]:
    if not args.out:
        raise InputError("--out TABLE is required unless --list is given")
    if args.samples is not None and args.samples < 1 or args.duration is not None and args.duration <= 0:
        raise InputError(f"--samples {args.samples} / --duration {args.duration}: expected a positive number")
    return output_spec(args)


def _print_device(port: str, info: Any, as_json: bool) -> None:
    h = info.hello
    tensors = [{"id": t.id, "name": t.name, "dtype": t.dtype.name, "shape": list(t.shape), "bytes": t.nbytes}
               for t in info.tensors]
    if as_json:
        emit("stream", port=port, firmware=h.firmware, protocol=h.version, model_hash=h.model_hash,
             max_payload=h.max_payload, boot_id=h.boot_id, tensors=tensors)
        return
    print(f"{port}: {h.firmware or 'firmware'}, link protocol {h.version}, model {h.model_hash}, "
          f"max payload {h.max_payload}, boot id {h.boot_id}")
    rows = [("id", "tensor", "dtype", "shape", "bytes")]
    for t in tensors:
        rows.append((str(t["id"]), t["name"], t["dtype"], "x".join(map(str, t["shape"])) or "scalar", str(t["bytes"])))
    print_rows(rows)


def add_parsers(sub: Any, writer: argparse.ArgumentParser) -> None:
    st = sub.add_parser("stream", parents=[writer], help="calibrate from a device on a serial link (firmware_interface)")
    st.add_argument("--port", required=True, metavar="URL",
                    help="serial port or pyserial URL: /dev/ttyACM0, /dev/serial/by-id/..., socket://host:port, "
                         "rfc2217://...; auto: the one port of a known board (see edgecal ports)")
    st.add_argument("-o", "--out", help="table to write (not needed with --list)")
    st.add_argument("--baud", type=int, default=921600, help="baud rate (default 921600; USB-CDC ignores it)")
    stop_at = st.add_mutually_exclusive_group()
    stop_at.add_argument("--samples", type=int, metavar="N", help="stop after N complete samples")
    stop_at.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    st.add_argument("--state", help="resume from and checkpoint to this state file")
    st.add_argument("--tensors", metavar="A,B", help="stream only these tensors (default: all)")
    st.add_argument("--list", action="store_true", help="print the device's tensor table and exit")
    st.add_argument("--push", action="store_true", help="send the finished table (.ecal) to the device")
    st.add_argument("-m", "--method", default=DEFAULT_METHOD,
                   help=f"one of: {', '.join(method_names())} (default {DEFAULT_METHOD})")
    st.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="method parameter")
    st.add_argument("--bins", type=int, help=f"bins per sign for a new state (default {DEFAULT_BINS})")
    st.add_argument("--timeout", type=float, default=5.0, metavar="S", help="handshake timeout (default 5)")
    st.add_argument("--reconnect-timeout", type=float, default=30.0, metavar="S",
                    help="how long to wait for a vanished device (default 30)")
    st.add_argument("--max-sample-bytes", type=int, default=64 << 20, metavar="BYTES",
                    help="largest total size of the streamed tensors of one sample (default 64 MiB)")
    st.add_argument("--max-loss", type=float, default=1.0, metavar="PERCENT",
                    help="warn when more tensors than this are lost (default 1)")
    st.add_argument("--checkpoint-every", type=float, default=30.0, metavar="SECONDS", help="state checkpoint interval")
    st.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    st.add_argument("--progress", action="store_true",
                    help="the live view (rate, link losses, samples per tensor) even when stderr is not a terminal")
    st.add_argument("--log-every", type=float, default=10.0, metavar="SECONDS",
                    help="when stderr is not a terminal: one progress line every SECONDS (default 10)")
    st.add_argument("--json", action="store_true", help="print the result (or --list) as JSON (schema in the README)")
    st.set_defaults(func=cmd_stream)
