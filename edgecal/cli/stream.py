"""`stream`: calibrate from a device on a serial link."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ..calibrator import DEFAULT_BINS
from ..errors import InputError
from ..methods import DEFAULT_METHOD, method_names
from ..table import CalibrationTable
from .common import Progress, mb, open_state, output_spec, print_rows


def cmd_stream(args: argparse.Namespace) -> int:
    from ..link import SerialHost, StopRequested, StreamSession
    from ..link.errors import LinkError

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    src = SerialHost(args.port, baudrate=args.baud, timeout=args.timeout, reconnect_timeout=args.reconnect_timeout,
                       max_sample_bytes=args.max_sample_bytes, stop=stop)
    try:
        if args.list:
            _print_device(args.port, src.open())
            return 0
        method, params, out_format, options = _stream_outputs(args)
        cal = open_state(args.state, args.bins)
        info = src.open()
        progress = Progress(not args.quiet)
        tensors = [t for t in args.tensors.split(",") if t] if args.tensors else None
        session = StreamSession(
            src, cal, tensors=tensors, samples=args.samples, duration=args.duration, stop=stop,
            on_progress=lambda p: progress.update(_stream_line(p)), max_loss=args.max_loss / 100.0,
            checkpoint=(lambda: cal.save_state(args.state)) if args.state else None,
            checkpoint_every=args.checkpoint_every,
        )
        result = session.run()
        progress.update(_stream_line(session.progress()), force=True)  # the final figures, not a throttled one
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
    from ..formats.ecal import write_ecal

    return write_ecal(table)


def _stream_outputs(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any, dict[str, Any]]:
    if not args.out:
        raise InputError("--out TABLE is required unless --list is given")
    if args.samples is not None and args.samples < 1 or args.duration is not None and args.duration <= 0:
        raise InputError(f"--samples {args.samples} / --duration {args.duration}: expected a positive number")
    return output_spec(args)


def _stream_line(p: dict[str, Any]) -> str:
    return (f"edgecal: {p['samples']} samples, {p['tensors']} tensors, {mb(p['bytes_per_s'])}/s, "
            f"{p['frames_missing']} frames lost, {p['frames_corrupt']} corrupt, {p['discarded']} tensors discarded")


def _print_device(port: str, info: Any) -> None:
    h = info.hello
    print(f"{port}: {h.firmware or 'firmware'}, link protocol {h.version}, model {h.model_hash}, "
          f"max payload {h.max_payload}, boot id {h.boot_id}")
    rows = [("id", "tensor", "dtype", "shape", "bytes")]
    for t in info.tensors:
        rows.append((str(t.id), t.name, t.dtype.name, "x".join(map(str, t.shape)) or "scalar", str(t.nbytes)))
    print_rows(rows)


def add_parsers(sub: Any, writer: argparse.ArgumentParser) -> None:
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
    st.set_defaults(func=cmd_stream)
