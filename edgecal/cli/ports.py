"""`ports`: the serial ports of this machine, with the board behind each USB id; ``--port auto``.

Boards are recognised by their USB vendor and product ids (`BOARDS`): a vendor id
alone names every product of a vendor that makes only boards (Raspberry Pi, Arduino);
the others name one USB bridge or debug probe. ``stream --port auto`` takes the one
port whose id is a known board, else the one USB serial port, and refuses to guess
between several (or none): a wrong port would stream from another device.

>>> board_name(0x2E8A, 0x000A)
'Raspberry Pi Pico (RP2040/RP2350)'
>>> board_name(0x0403, 0x6014)
'FTDI FT232H'
>>> board_name(0x0403, 0x1234) is None
True
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InputError
from .common import print_rows
from .jsonout import emit

#: (vendor id, product id or None for every product of the vendor) -> board name
BOARDS: dict[tuple[int, int | None], str] = {
    (0x2E8A, None): "Raspberry Pi Pico (RP2040/RP2350)",
    (0x2341, None): "Arduino",
    (0x0483, 0x374B): "ST-LINK/V2-1 virtual COM port (STM32 Nucleo/Discovery)",
    (0x0483, 0x5740): "STM32 USB CDC virtual COM port",
    (0x303A, 0x1001): "Espressif USB-JTAG/serial (ESP32-C3/C6/S3)",
    (0x10C4, 0xEA60): "Silicon Labs CP210x USB-UART bridge",
    (0x1A86, 0x7523): "WCH CH340 USB-UART bridge",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232H",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT231X",
}


def board_name(vid: int | None, pid: int | None) -> str | None:
    """The board or bridge with USB ids ``vid:pid``, or None when unknown (or not USB)."""
    if vid is None:
        return None
    return BOARDS.get((vid, pid)) or BOARDS.get((vid, None))


@dataclass(frozen=True)
class Port:
    """One serial port as the OS lists it, with the board its USB ids name."""

    device: str
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    board: str | None

    @property
    def usb_id(self) -> str:
        """``VID:PID`` in hex, or ``-`` for a port that is not USB."""
        return "-" if self.vid is None else f"{self.vid:04X}:{(self.pid or 0):04X}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "usb_id": None if self.vid is None else self.usb_id}


def list_ports() -> list[Port]:
    """Every serial port pyserial's ``serial.tools.list_ports.comports`` finds, sorted by device."""
    from serial.tools import list_ports as lp  # type: ignore[import-untyped]

    found = [Port(p.device, p.description or "", p.vid, p.pid, p.serial_number, board_name(p.vid, p.pid))
             for p in lp.comports()]
    return sorted(found, key=lambda p: p.device)


def _named(ports: list[Port]) -> str:
    return ", ".join(f"{p.device} ({p.board or p.description or p.usb_id})" for p in ports) or "none"


def pick_port(ports: list[Port]) -> str:
    """The device of the one known board, else of the one USB serial port; an `InputError` otherwise."""
    boards = [p for p in ports if p.board]
    if len(boards) == 1:
        return boards[0].device
    if len(boards) > 1:
        raise InputError(f"--port auto found {len(boards)} boards: {_named(boards)}; expected one, pass --port DEVICE")
    usb = [p for p in ports if p.vid is not None]
    if len(usb) == 1:
        return usb[0].device
    what = f"{len(usb)} USB serial ports of unknown boards" if usb else "no board and no USB serial port"
    raise InputError(f"--port auto found {what} (ports: {_named(usb or ports)}); expected one, pass --port DEVICE")


def cmd_ports(args: argparse.Namespace) -> int:
    ports = list_ports()
    if args.json:
        emit("ports", ports=[p.to_dict() for p in ports])
        return 0
    if not ports:
        print("no serial ports found")
        return 0
    rows = [("device", "usb id", "board", "serial number", "description")]
    for p in ports:
        rows.append((p.device, p.usb_id, p.board or "-", p.serial_number or "-", p.description or "-"))
    print_rows(rows)
    return 0


def add_parsers(sub: Any, writer: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ports", help="list serial ports and the boards behind their USB ids")
    p.add_argument("--json", action="store_true", help="print the ports as JSON (schema in the README)")
    p.set_defaults(func=cmd_ports)
