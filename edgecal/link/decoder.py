"""`FrameDecoder`: bytes from the port in, checked frames out, with bounded memory.

The decoder keeps at most one incomplete block (no longer than the longest valid
encoded frame) between calls and processes its input in slices of at most
`FrameDecoder.SLICE` bytes, so its memory is fixed by the negotiated maximum payload
whatever it is fed. Every byte that is not part of an intact frame is counted.

>>> from edgecal.link.frames import encode_frame, PING
>>> d = FrameDecoder(max_payload=128)
>>> wire = b"bootloader junk\\r\\n\\0" + encode_frame(PING, b"hi", seq=3)
>>> [(f.type, f.seq, f.payload) for f in d.feed(wire[:10]) + d.feed(wire[10:])]
[(8, 3, b'hi')]
>>> d.counters.cobs_errors, d.counters.resync_bytes
(1, 17)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from .cobs import COBS_ERROR, decode_blocks, max_encoded
from .frames import HEADER, HEADER_SIZE, MAGIC, OVERHEAD, PAYLOAD_LIMIT, PROTOCOL_VERSION, Frame
from .errors import FrameError

_CRC = struct.Struct("<I")


@dataclass
class DecoderCounters:
    """What the decoder threw away, by reason (PROTOCOL.md 1.2)."""

    frames: int = 0
    cobs_errors: int = 0
    short: int = 0
    magic: int = 0
    crc_errors: int = 0
    length_errors: int = 0
    foreign_version: int = 0
    oversize: int = 0
    resync_bytes: int = 0

    @property
    def corrupt(self) -> int:
        """Blocks that were not intact frames of this protocol version."""
        return self.cobs_errors + self.short + self.magic + self.crc_errors + self.length_errors + self.oversize

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class FrameDecoder:
    """Incremental decoder of a byte stream into `Frame`s.

    Parameters
    ----------
    max_payload : int
        Largest payload accepted (the negotiated maximum); longer frames count as oversize.
    """

    SLICE = 1 << 16

    def __init__(self, max_payload: int = PAYLOAD_LIMIT) -> None:
        self.counters = DecoderCounters()
        self._pending = b""
        self._skipping = False
        self.set_max_payload(max_payload)

    def set_max_payload(self, max_payload: int) -> None:
        """Change the largest accepted payload (after a handshake)."""
        if not 0 < max_payload <= PAYLOAD_LIMIT:
            raise ValueError(f"max_payload {max_payload}; expected 1..{PAYLOAD_LIMIT}")
        self.max_payload = max_payload
        self.max_block = max_encoded(max_payload + OVERHEAD)
        room = self.SLICE + self.max_block
        self._dst = np.empty(room, dtype=np.uint8)
        self._meta = np.zeros((room // 2 + 1, 3), dtype=np.int64)

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for a delimiter (at most ``max_block``)."""
        return len(self._pending)

    def reset(self) -> None:
        """Forget a partial block (e.g. after reopening the port)."""
        self.counters.resync_bytes += len(self._pending)
        self._pending = b""
        self._skipping = False

    def feed(self, data: bytes) -> list[Frame]:
        """Decode ``data``; returns the intact frames completed by it, in order."""
        view = memoryview(data).cast("B")
        frames: list[Frame] = []
        for start in range(0, len(view), self.SLICE):
            frames += self._feed_slice(view[start : start + self.SLICE])
        return frames

    def _feed_slice(self, data: memoryview) -> list[Frame]:
        if self._skipping:  # inside an oversize block: drop everything up to its delimiter
            end = bytes(data).find(b"\0")
            if end < 0:
                self.counters.resync_bytes += len(data)
                return []
            self.counters.resync_bytes += end
            data = data[end + 1 :]
            self._skipping = False
        buf = self._pending + bytes(data)
        src = np.frombuffer(buf, dtype=np.uint8)
        count, consumed = decode_blocks(src, self._dst, self._meta, self.max_block)
        rest = buf[consumed:]
        if len(rest) > self.max_block:
            self.counters.oversize += 1
            self.counters.resync_bytes += len(rest)
            self._pending, self._skipping = b"", True
        else:
            self._pending = rest
        frames = []
        for start, length, encoded in self._meta[:count].tolist():
            frame = self._frame(start, length)
            if frame is None:
                self.counters.resync_bytes += encoded
            else:
                frames.append(frame)
        return frames

    def _frame(self, start: int, length: int) -> Frame | None:
        c = self.counters
        if length < 0:
            if length == COBS_ERROR:
                c.cobs_errors += 1
            else:
                c.oversize += 1
            return None
        if length < OVERHEAD:
            c.short += 1
            return None
        body = self._dst[start : start + length].tobytes()
        if body[0] != MAGIC:
            c.magic += 1
            return None
        if zlib.crc32(memoryview(body)[:-4]) != _CRC.unpack_from(body, length - 4)[0]:
            c.crc_errors += 1
            return None
        _, version, ftype, flags, seq, sample, tensor, plen, offset, total = HEADER.unpack_from(body)
        if plen != length - OVERHEAD:
            c.length_errors += 1
            return None
        if version != PROTOCOL_VERSION:
            c.foreign_version += 1  # intact, but only its version and type can be trusted
        elif plen > self.max_payload:
            c.oversize += 1
            return None
        c.frames += 1
        return Frame(ftype, flags, seq, sample, tensor, offset, total, body[HEADER_SIZE:-4], version)


def classify(wire: bytes, max_payload: int) -> str:
    """The check of PROTOCOL.md 1.2 that one delimited block fails first, or ``"ok"`` (for tests and tools)."""
    d = FrameDecoder(max_payload)
    frames = d.feed(wire)
    c = d.counters
    for name, value in (("oversize", c.oversize), ("cobs", c.cobs_errors), ("short", c.short), ("magic", c.magic),
                        ("crc", c.crc_errors), ("length", c.length_errors), ("version", c.foreign_version)):
        if value:
            return name
    if not frames:
        raise FrameError("no complete block in the input")
    return "ok"
