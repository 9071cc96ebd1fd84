#!/usr/bin/env python3
"""Write frames.txt, the known-answer vectors of the edgecal link protocol (PROTOCOL.md).

This script is deliberately independent of both implementations: it imports
nothing from edgecal and has its own literal COBS encoder/decoder and header
packing, written from PROTOCOL.md; the CRC is zlib.crc32. The C tests
(tests/test_ecal_link.c) and the Python tests (tests/test_link_codec.py) read the
file it writes. Regenerate only after a deliberate protocol change:

    python3 firmware_interface/vectors/make_vectors.py          # rewrite frames.txt
    python3 firmware_interface/vectors/make_vectors.py --check  # exit 1 if it differs

File format, one vector per line, fields separated by single spaces, '-' for empty
hex, '#' starts a comment line:

    crc   NAME DATA_HEX CRC_HEX
    cobs  NAME BODY_HEX ENCODED_HEX
    frame NAME TYPE FLAGS SEQ SAMPLE TENSOR OFFSET TOTAL PAYLOAD_HEX WIRE_HEX
    bad   NAME ERROR MAX_PAYLOAD WIRE_HEX
    serial NAME A B DISTANCE

TYPE and FLAGS are hex bytes, the other numbers decimal; WIRE_HEX includes the
trailing 00 delimiter. ERROR is the first failed check of PROTOCOL.md 1.2: cobs,
short, magic, crc, length, version or oversize. DISTANCE is b - a for the 32-bit
counters A and B under PROTOCOL.md section 5, as a signed decimal in -2^31 .. 2^31-1:
B is newer than A when it is positive.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "frames.txt"
HEADER = struct.Struct("<BBBBIIHHII")


def cobs_encode(body: bytes) -> bytes:
    """Cheshire & Baker COBS, one byte at a time (PROTOCOL.md section 1)."""
    out = bytearray([0])
    code_at, code = 0, 1
    last_full = False
    for b in body:
        last_full = False
        if b == 0:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at, code = len(out), 1
                out.append(0)
                last_full = True
    if last_full:
        out.pop()  # no empty block after a full one at the end
    else:
        out[code_at] = code
    return bytes(out)


def cobs_decode(block: bytes) -> bytes | None:
    out, i = bytearray(), 0
    while i < len(block):
        code = block[i]
        i += 1
        if code == 0 or i + code - 1 > len(block) or 0 in block[i : i + code - 1]:
            return None
        out += block[i : i + code - 1]
        i += code - 1
        if code != 0xFF and i < len(block):
            out.append(0)
    return bytes(out)


def body(ftype, flags, seq, sample, tensor, offset, total, payload, *, magic=0xEC, version=1, plen=None):
    head = HEADER.pack(magic, version, ftype, flags, seq, sample, tensor, len(payload) if plen is None else plen, offset, total)
    return head + payload + struct.pack("<I", zlib.crc32(head + payload))


def classify(wire: bytes, max_payload: int) -> str:
    """The first check of PROTOCOL.md 1.2 that the block fails, or 'ok'."""
    block = wire[:-1]
    limit = max_payload + 28
    if len(block) > limit + limit // 254 + 1:
        return "oversize"
    raw = cobs_decode(block)
    if raw is None:
        return "cobs"
    if len(raw) < 28:
        return "short"
    if raw[0] != 0xEC:
        return "magic"
    if zlib.crc32(raw[:-4]) != struct.unpack("<I", raw[-4:])[0]:
        return "crc"
    fields = HEADER.unpack(raw[:24])
    if fields[7] != len(raw) - 28:
        return "length"
    if fields[1] != 1:
        return "version"
    if fields[7] > max_payload:
        return "oversize"
    return "ok"


def u16(*v):
    return struct.pack(f"<{len(v)}H", *v)


def u32(*v):
    return struct.pack(f"<{len(v)}I", *v)


def frames() -> list[tuple]:
    model_hash = bytes(range(0x10, 0x20))
    fw = b"ecal-example 1.0"
    hello_ack = u16(1, 1024, 512, 5) + u32(0xB007) + model_hash + bytes([len(fw)]) + fw
    info = bytes([1, 4]) + u16(0) + u32(1, 8, 16, 16) + bytes([10]) + b"conv1_relu"
    chunk = struct.pack("<8f", 0.0, 1.5, -2.25, 0.0, 3.0e-3, 0.0, 7.0, -0.5)
    long_chunk = bytes((i * 7 + 1) % 256 or 1 for i in range(300)) + bytes(2) + bytes(range(1, 256)) * 2
    full_end = bytes(range(1, 251))  # header ends in zeros; 250 + 4 CRC bytes may make a final 254-byte run
    for k in range(1, 256):
        candidate = bytes([k]) + full_end[1:]
        crc = struct.pack("<I", zlib.crc32(HEADER.pack(0xEC, 1, 0x10, 0x01, 9, 3, 1, 250, 0, 0) + candidate))
        if 0 not in crc:
            full_end = candidate
            break
    stats = u32(120, 12, 3, 1, 60, 9, 0, 0, 5000, 12)
    table = b"ECAL" + u16(1, 16) + u32(0, 2) + b"{}"
    table += u32(zlib.crc32(table))
    return [
        ("hello", 0x01, 0, 0, 0, 0, 0, 0, u16(1, 16384)),
        ("hello_ack_boot", 0x02, 0x04, 0, 0, 0, 0, 0, hello_ack),
        ("hello_ack", 0x02, 0, 1, 0, 0, 0, 0, hello_ack),
        ("list_req", 0x03, 0, 1, 0, 0, 0, 0, b""),
        ("tensor_info", 0x04, 0, 2, 0, 3, 0, 8192, info),
        ("start", 0x05, 0, 2, 0, 0, 0, 0, u32(7, 8) + u16(1) + bytes([0x05])),
        ("stop", 0x06, 0, 40, 0, 0, 0, 0, b""),
        ("credit", 0x07, 0, 3, 0, 0, 0, 0, u32(7, 9)),
        ("ping", 0x08, 0, 5, 0, 0, 0, 0, b"\x01\x02"),
        ("pong", 0x09, 0, 6, 12, 0, 0, 0, b"\x01\x02"),
        ("ack_start", 0x0A, 0, 7, 12, 0, 0, 0, bytes([0x05, 0]) + u16(0) + u32(7)),
        ("tensor_chunk", 0x10, 0x01, 8, 12, 2, 1024, 1056, chunk),
        ("tensor_chunk_long", 0x10, 0, 9, 12, 3, 0, 4096, long_chunk),
        ("tensor_chunk_full_block_end", 0x10, 0x01, 9, 3, 1, 0, 0, full_end),
        ("sample_end", 0x11, 0, 10, 12, 0, 0, 0, u16(5)),
        ("stats_final", 0x20, 0x02, 120, 12, 0, 0, 0, stats),
        ("log", 0x30, 0, 11, 13, 0, 0, 0, b"\x01booting: model ok\n"),
        ("table_chunk", 0x40, 0x01, 4, 0, 0, 0, len(table), table),
        ("table_ack", 0x41, 0, 41, 13, 0, 0, 0, u16(0, 0) + u32(len(table)) + table[-4:]),
        ("error", 0x7F, 0, 42, 13, 0, 0, 0, u16(2) + b"malformed request"),
        # STOP while idle: ACK of type 0x06 with the last run id and the next sample id, then STATS
        ("ack_stop_idle", 0x0A, 0, 43, 13, 0, 0, 0, bytes([0x06, 0]) + u16(0) + u32(7)),
        ("stats_idle", 0x20, 0, 44, 13, 0, 0, 0, u32(44, 13, 3, 1, 65, 12, 0, 0, 7000, 1)),
        ("tensor_chunk_wrapped", 0x10, 0x01, 45, 0xFFFFFFFF, 0, 0, 4, u32(0x3F800000)),
    ]


def bad_frames() -> list[tuple[str, int, bytes]]:
    ping = body(0x08, 0, 5, 0, 0, 0, 0, b"\x01\x02")
    flipped = bytearray(ping)
    flipped[24] ^= 0x40
    overrun = bytearray(cobs_encode(ping) + b"\0")
    overrun[0] = 0xFE
    big = body(0x10, 0x01, 1, 0, 0, 0, 200, bytes(range(1, 201)))
    return [
        ("crc_flipped_bit", 128, cobs_encode(bytes(flipped)) + b"\0"),
        ("cobs_overrun", 128, bytes(overrun)),
        ("cobs_truncated", 128, cobs_encode(ping)[:20] + b"\0"),
        ("short", 128, cobs_encode(bytes(range(1, 11))) + b"\0"),
        ("magic", 128, cobs_encode(body(0x08, 0, 5, 0, 0, 0, 0, b"\x01\x02", magic=0xED)) + b"\0"),
        ("bootloader_text", 128, b"U-Boot 2024.01 (Jan 01 2024)\r\n" + b"\0"),
        ("length", 128, cobs_encode(body(0x08, 0, 5, 0, 0, 0, 0, b"\x01\x02", plen=3)) + b"\0"),
        ("version_2", 128, cobs_encode(body(0x08, 0, 5, 0, 0, 0, 0, b"\x01\x02", version=2)) + b"\0"),
        ("payload_over_max", 128, cobs_encode(big) + b"\0"),
        ("block_over_limit", 128, bytes([0xFF]) + bytes(range(1, 255)) * 2 + b"\0"),
    ]


def serial_cases() -> list[tuple[str, int, int]]:
    return [("next", 5, 6), ("same", 7, 7), ("older", 6, 5), ("wrap", 0xFFFFFFFE, 1), ("wrap_back", 1, 0xFFFFFFFE),
            ("half_minus_one", 0, 0x7FFFFFFF), ("half", 0, 0x80000000)]


def distance(a: int, b: int) -> int:
    d = (b - a) % 2**32
    return d - 2**32 if d >= 2**31 else d


def render() -> str:
    lines = [
        "# edgecal link protocol v1 known-answer vectors; written by make_vectors.py from PROTOCOL.md. Do not edit.",
        "# crc NAME DATA_HEX CRC_HEX | cobs NAME BODY_HEX ENCODED_HEX",
        "# frame NAME TYPE FLAGS SEQ SAMPLE TENSOR OFFSET TOTAL PAYLOAD_HEX WIRE_HEX | bad NAME ERROR MAX_PAYLOAD WIRE_HEX",
        "# serial NAME A B DISTANCE (b - a, signed; positive: b is newer)",
    ]
    hx = lambda b: b.hex() or "-"  # noqa: E731
    for name, data in (("empty", b""), ("check", b"123456789"), ("zeros", bytes(4))):
        lines.append(f"crc {name} {hx(data)} {zlib.crc32(data):08x}")
    cobs_cases = {
        "one_zero": b"\0", "two_zeros": b"\0\0", "mid_zero": b"\x11\x22\x00\x33", "no_zero": b"\x11\x22\x33\x44",
        "trailing_zeros": b"\x11\0\0\0", "run_254": bytes(range(1, 255)), "zero_then_254": bytes(range(0, 255)),
        "run_255": bytes(range(1, 256)), "run_254_then_zero": bytes(range(2, 256)) + b"\0",
        "run_254_zero_one": bytes(range(3, 256)) + b"\0\x01",
    }
    for name, data in cobs_cases.items():
        lines.append(f"cobs {name} {hx(data)} {hx(cobs_encode(data))}")
    for name, ftype, flags, seq, sample, tensor, offset, total, payload in frames():
        wire = cobs_encode(body(ftype, flags, seq, sample, tensor, offset, total, payload)) + b"\0"
        assert classify(wire, 16384) == "ok", name
        lines.append(f"frame {name} {ftype:02x} {flags:02x} {seq} {sample} {tensor} {offset} {total} {hx(payload)} {wire.hex()}")
    for name, max_payload, wire in bad_frames():
        lines.append(f"bad {name} {classify(wire, max_payload)} {max_payload} {wire.hex()}")
    for name, a, b in serial_cases():
        lines.append(f"serial {name} {a} {b} {distance(a, b)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        same = OUT.exists() and OUT.read_text() == text
        print("frames.txt is up to date" if same else "frames.txt differs from make_vectors.py output")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
