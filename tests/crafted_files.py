"""Hand-built damaged inputs: .npy headers, zip members and states, written without edgecal.

Every builder follows the published formats (NumPy's .npy format, PKWARE's zip
layout, edgecal's ECST/EHST layouts as documented in calibrator.py and
histogram.py) so tests can aim at one flaw at a time.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib

import numpy as np


def npy_bytes(header: str, data: bytes = b"", version: tuple[int, int] = (1, 0), length: int | None = None) -> bytes:
    """A .npy file with the literal ``header`` text; ``length`` overrides the header length field."""
    text = header.encode("latin1")
    width = 2 if version == (1, 0) else 4
    pad = -(8 + width + len(text) + 1) % 64
    text = text + b" " * pad + b"\n"
    field = struct.pack("<H" if width == 2 else "<I", len(text) if length is None else length)
    return b"\x93NUMPY" + bytes(version) + field + text + data


def npz_bytes(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip holding ``members`` in order (duplicate names allowed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            if any(i.filename == name for i in zf.infolist()):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    zf.writestr(name, data)
            else:
                zf.writestr(name, data)
    return buf.getvalue()


def patch_zip_headers(data: bytes, flag_bits: int | None = None, method: int | None = None) -> bytes:
    """Set the flag bits and/or the compression method in every local and central header."""
    out = bytearray(data)
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        pos = out.find(sig)
        while pos >= 0:
            if flag_bits is not None:
                struct.pack_into("<H", out, pos + flag_at, flag_bits)
            if method is not None:
                struct.pack_into("<H", out, pos + method_at, method)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def corrupt_deflate(array: np.ndarray) -> bytes:
    """A compressed .npz of ``array`` as "x" whose deflate stream is garbled past its header."""
    buf = io.BytesIO()
    np.savez_compressed(buf, x=array)
    data = bytearray(buf.getvalue())
    start = data.find(b"PK\x03\x04")
    name_len, extra_len = struct.unpack_from("<HH", data, start + 26)
    body = start + 30 + name_len + extra_len
    for i in range(body + 40, body + 80):  # past the first deflate block holding the .npy header
        data[i] ^= 0x5A
    return bytes(data)


# -- states ------------------------------------------------------------------------------------------
STATE_HEAD = struct.Struct("<4sHHIII")  # magic, schema, reserved, bins, tensors, payload bytes
# magic, schema, reserved, bins, exp, count, zeros, nans, +inf, -inf, min, max
HIST_HEAD = struct.Struct("<4sHHIiQQQQQdd")


def histogram_bytes(bins: int, exp: int, pos: list[int], neg: list[int], zeros: int, vmin: float, vmax: float,
                    count: int | None = None, specials: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """An EHST histogram; ``pos``/``neg`` are the first bin counts (the rest zero); CRC valid."""
    p = np.zeros(bins, "<i8")
    n = np.zeros(bins, "<i8")
    p[: len(pos)], n[: len(neg)] = pos, neg
    total = (sum(pos) + sum(neg) + zeros + sum(specials)) % (1 << 64) if count is None else count
    body = HIST_HEAD.pack(b"EHST", 1, 0, bins, exp, total, zeros, *specials, vmin, vmax) + p.tobytes() + n.tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def state_bytes(bins: int, tensors: list[tuple[str, int, bytes]], consumed: list = (), model_hash=None,
                meta_text: bytes | None = None, count: int | None = None, raw_tail: bytes = b"") -> bytes:
    """An ECST state of (name, samples, histogram bytes); CRC valid whatever the content."""
    meta = json.dumps({"tensors": [{"name": n, "samples": s} for n, s, _ in tensors], "consumed": list(consumed),
                       "model_hash": model_hash}, sort_keys=True).encode() if meta_text is None else meta_text
    raw = struct.pack("<I", len(meta)) + meta + b"".join(h for _, _, h in tensors) + raw_tail
    payload = zlib.compress(raw, 1)
    body = STATE_HEAD.pack(b"ECST", 1, 0, bins, len(tensors) if count is None else count, len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def as_zip64_end(data: bytes) -> bytes:
    """The same zip with a ZIP64 end record (and locator) carrying the entry count and directory size."""
    at = data.rfind(b"PK\x05\x06")
    on_disk, total, dir_size, dir_offset, comment_len = struct.unpack_from("<HHIIH", data, at + 8)
    record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, on_disk, total, dir_size, dir_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, at, 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, comment_len)
    return data[:at] + record + locator + end + data[at + 22:]
