"""`Transport`: one open port, the frames coming out of it and the frames going into it.

It owns the pyserial object, the `FrameDecoder` with its counters, sequence
tracking in both directions, and the translation of every port failure into
`Disconnected`, which `SerialHost` answers by reconnecting.
"""

from __future__ import annotations

from typing import Any

import serial

from ..errors import Disconnected
from .assembler import SeqTracker
from .decoder import FrameDecoder
from .frames import Frame, encode_frame
from .port import open_port, read_available

READ_SIZE = 1 << 16
READ_TIMEOUT = 0.02


class Transport:
    """Frames over a pyserial URL.

    Parameters
    ----------
    url : str
        Port name or pyserial URL.
    baudrate : int
        Line speed.
    max_payload : int
        Initial largest accepted payload (the handshake may lower it).
    """

    def __init__(self, url: str, baudrate: int, max_payload: int) -> None:
        self.url, self.baudrate = url, baudrate
        self.decoder = FrameDecoder(max_payload)
        self.rx_seq = SeqTracker()
        self.tx_seq = 0
        self.bytes_read = 0
        self._port: Any = None

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        """(Re)open the port; `PortError` when it cannot be opened."""
        self.close()
        self._port = open_port(self.url, self.baudrate, READ_TIMEOUT)
        self.decoder.reset()  # a block cut by the reconnection is noise
        self.rx_seq.resync()
        self.tx_seq = 0

    def close(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except (serial.SerialException, OSError):
                pass
            self._port = None

    def send(self, ftype: int, payload: bytes = b"", **fields: int) -> None:
        """Write one frame with the next host sequence number."""
        wire = encode_frame(ftype, payload, seq=self.tx_seq, **fields)
        self.tx_seq = (self.tx_seq + 1) & 0xFFFFFFFF
        try:
            self._port.write(wire)
        except (serial.SerialException, OSError, AttributeError) as err:
            raise Disconnected(str(err) or type(err).__name__) from None

    def read(self) -> list[Frame]:
        """The intact frames completed by one read (waits at most READ_TIMEOUT for data)."""
        try:
            data = read_available(self._port, READ_SIZE)
        except (serial.SerialException, OSError, TypeError, AttributeError) as err:
            raise Disconnected(str(err) or type(err).__name__) from None
        if not data:
            return []
        self.bytes_read += len(data)
        return self.decoder.feed(data)
