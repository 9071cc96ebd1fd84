"""Frames of the edgecal link protocol: header, types, and payload encoders/decoders.

Everything here follows firmware_interface/PROTOCOL.md; the known-answer vectors in
firmware_interface/vectors/frames.txt pin it together with the C implementation.

>>> wire = encode_frame(PING, b"\\x01\\x02", seq=5)
>>> wire.hex()
'04ec01080205010101010101010102020101010101010101070102478fbaee00'
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..text import printable
from .cobs import cobs_encode
from .errors import FrameError

PROTOCOL_VERSION = 1
MAGIC = 0xEC
HEADER = struct.Struct("<BBBBIIHHII")  # magic, version, type, flags, seq, sample, tensor, length, offset, total
HEADER_SIZE = HEADER.size
CRC_SIZE = 4
OVERHEAD = HEADER_SIZE + CRC_SIZE
MIN_PAYLOAD = 128
PAYLOAD_LIMIT = 16384
MAX_RANK = 8
MAX_TENSORS = 256

HELLO, HELLO_ACK, LIST_REQ, TENSOR_INFO, START, STOP, CREDIT, PING, PONG, ACK = range(0x01, 0x0B)
TENSOR_CHUNK, SAMPLE_END, STATS, LOG, TABLE_CHUNK, TABLE_ACK, ERROR = 0x10, 0x11, 0x20, 0x30, 0x40, 0x41, 0x7F
TYPE_NAMES = {
    HELLO: "HELLO", HELLO_ACK: "HELLO_ACK", LIST_REQ: "LIST_REQ", TENSOR_INFO: "TENSOR_INFO", START: "START",
    STOP: "STOP", CREDIT: "CREDIT", PING: "PING", PONG: "PONG", ACK: "ACK", TENSOR_CHUNK: "TENSOR_CHUNK",
    SAMPLE_END: "SAMPLE_END", STATS: "STATS", LOG: "LOG", TABLE_CHUNK: "TABLE_CHUNK", TABLE_ACK: "TABLE_ACK",
    ERROR: "ERROR",
}
F_LAST, F_FINAL, F_BOOT = 0x01, 0x02, 0x04

# ONNX TensorProto.DataType code -> little-endian numpy dtype
DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 10: "<f2", 11: "<f8", 12: "<u4", 13: "<u8"}
TABLE_STATUS = {
    0: "accepted", 1: "the table is larger than the device's buffer", 2: "a chunk was missing or out of order",
    3: "the device does not read this table format or version", 4: "the table's CRC-32 did not match",
    5: "the firmware rejected the table", 6: "the device takes no tables",
}
STATS_FIELDS = (
    "frames_sent", "samples_sent", "samples_dropped_credit", "samples_dropped_busy", "tensors_sent",
    "rx_frames_ok", "rx_frames_bad", "log_dropped", "uptime_ms", "run_samples",
)


class Frame(NamedTuple):
    """One decoded frame: its header fields and payload."""

    type: int
    flags: int
    seq: int
    sample_id: int
    tensor_id: int
    offset: int
    total: int
    payload: bytes
    version: int = PROTOCOL_VERSION


def encode_body(ftype: int, payload: bytes = b"", *, seq: int = 0, flags: int = 0, sample_id: int = 0,
                tensor_id: int = 0, offset: int = 0, total: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
    """Header, payload and CRC-32 of one frame, before COBS."""
    head = HEADER.pack(MAGIC, version, ftype, flags, seq, sample_id, tensor_id, len(payload), offset, total)
    return head + payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)))


def encode_frame(ftype: int, payload: bytes = b"", **fields: int) -> bytes:
    """One complete frame on the wire: COBS(header, payload, CRC-32) and the 0x00 delimiter."""
    return cobs_encode(encode_body(ftype, payload, **fields)) + b"\0"


def _need(payload: bytes, size: int, what: str) -> None:
    if len(payload) < size:
        raise FrameError(f"{what} payload of {len(payload)} bytes; expected at least {size}")


def _text(data: bytes) -> str:
    """Device text, decoded and escaped: it is only ever shown or logged."""
    return printable(data.decode("utf-8", errors="replace"))


# -- control payloads ----------------------------------------------------------------------
def hello_payload(max_payload: int, version: int = PROTOCOL_VERSION) -> bytes:
    return struct.pack("<HH", version, max_payload)


@dataclass(frozen=True)
class HelloAck:
    """What the device says about itself in HELLO_ACK (PROTOCOL.md 3.1)."""

    version: int
    max_payload: int
    rx_max_payload: int
    tensor_count: int
    boot_id: int
    model_hash: str
    firmware: str


def parse_hello_ack(payload: bytes) -> HelloAck:
    _need(payload, 2, "HELLO_ACK")
    (version,) = struct.unpack_from("<H", payload)
    if version != PROTOCOL_VERSION:  # only the version field is frozen across versions
        return HelloAck(version, 0, 0, 0, 0, "", "")
    _need(payload, 29, "HELLO_ACK")
    _, max_payload, rx_max, count, boot = struct.unpack_from("<HHHHI", payload)
    fw_len = payload[28]
    _need(payload, 29 + fw_len, "HELLO_ACK")
    return HelloAck(version, max_payload, rx_max, count, boot, payload[12:28].hex(), _text(payload[29 : 29 + fw_len]))


@dataclass(frozen=True)
class TensorInfo:
    """One row of the device's tensor table (PROTOCOL.md 3.2)."""

    id: int
    name: str
    dtype_code: int
    shape: tuple[int, ...]
    nbytes: int

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(DTYPES[self.dtype_code])

    def describe(self) -> dict:
        return {"id": self.id, "name": self.name, "dtype": self.dtype.name, "shape": list(self.shape), "bytes": self.nbytes}


def parse_tensor_info(frame: Frame) -> TensorInfo:
    p = frame.payload
    _need(p, 5, "TENSOR_INFO")
    code, rank = p[0], p[1]
    if code not in DTYPES:
        raise FrameError(f"tensor {frame.tensor_id}: element type code {code}; known: {sorted(DTYPES)}")
    if rank > MAX_RANK:
        raise FrameError(f"tensor {frame.tensor_id}: rank {rank}; expected at most {MAX_RANK}")
    _need(p, 5 + 4 * rank, "TENSOR_INFO")
    shape = struct.unpack_from(f"<{rank}I", p, 4)
    k = p[4 + 4 * rank]
    _need(p, 5 + 4 * rank + k, "TENSOR_INFO")
    try:
        name = p[5 + 4 * rank : 5 + 4 * rank + k].decode("utf-8")
    except UnicodeDecodeError as err:
        raise FrameError(f"tensor {frame.tensor_id}: name is not UTF-8 ({err})") from None
    if not name or "\n" in name:
        raise FrameError(f"tensor {frame.tensor_id}: name {name!r}; expected a non-empty single line")
    name = printable(name)  # shown, logged and written into tables: escaped (one to one, so still unique)
    size = int(np.prod(shape, dtype=object)) * np.dtype(DTYPES[code]).itemsize
    if size != frame.total:
        raise FrameError(f"tensor {name!r}: shape {list(shape)} of {DTYPES[code]} is {size} bytes, header says {frame.total}")
    return TensorInfo(frame.tensor_id, name, code, tuple(shape), size)


def start_payload(run_id: int, grant: int, mask: bytes = b"") -> bytes:
    return struct.pack("<IIH", run_id, grant, len(mask)) + mask


def credit_payload(run_id: int, grant: int) -> bytes:
    return struct.pack("<II", run_id, grant & 0xFFFFFFFF)


def tensor_mask(selected: list[int], count: int) -> bytes:
    """START mask selecting ``selected`` of ``count`` tensors (empty: all of them)."""
    if sorted(selected) == list(range(count)):
        return b""
    mask = bytearray((count + 7) // 8)
    for i in selected:
        mask[i >> 3] |= 1 << (i & 7)
    return bytes(mask)


def parse_ack(payload: bytes) -> tuple[int, int, int]:
    """(acknowledged type, status, run id)."""
    _need(payload, 8, "ACK")
    acked, status, _, run_id = struct.unpack_from("<BBHI", payload)
    return acked, status, run_id


def parse_stats(payload: bytes) -> dict[str, int]:
    _need(payload, 4 * len(STATS_FIELDS), "STATS")
    return dict(zip(STATS_FIELDS, struct.unpack_from(f"<{len(STATS_FIELDS)}I", payload)))


def parse_log(payload: bytes) -> tuple[int, str]:
    _need(payload, 1, "LOG")
    return payload[0], _text(payload[1:].rstrip(b"\r\n"))


def parse_error(payload: bytes) -> tuple[int, str]:
    _need(payload, 2, "ERROR")
    return struct.unpack_from("<H", payload)[0], _text(payload[2:])


def parse_table_ack(payload: bytes) -> tuple[int, int, int]:
    """(status, bytes received, CRC-32 of the table the device holds)."""
    _need(payload, 12, "TABLE_ACK")
    status, _, size, crc = struct.unpack_from("<HHII", payload)
    return status, size, crc


def frame_summary(frame: Frame) -> str:
    """A one-line description, for logs."""
    return json.dumps({"type": TYPE_NAMES.get(frame.type, hex(frame.type)), "seq": frame.seq,
                       "sample": frame.sample_id, "tensor": frame.tensor_id, "bytes": len(frame.payload)})
