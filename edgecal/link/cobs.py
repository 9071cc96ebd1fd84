"""COBS, the byte stuffing that makes link frames self-delimiting (PROTOCOL.md section 1).

`cobs_encode` removes every 0x00 from a frame body; `decode_blocks` is the Numba
kernel the host decoder runs over a whole read buffer: it splits it at 0x00 and
decodes every complete block in one pass, so Python touches each frame once.

>>> cobs_encode(b"\\x11\\x22\\x00\\x33").hex()
'0311220233'
>>> cobs_decode(bytes.fromhex("0311220233")).hex()
'11220033'
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel
from .errors import FrameError

COBS_ERROR = -1  # dst length of a block that is not valid COBS
OVERSIZE = -2  # dst length of a block longer than the limit (not decoded)


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiter added).

    Runs of 254 non-zero bytes become a 0xFF block that implies no zero; no empty
    block follows a 0xFF block at the very end (PROTOCOL.md section 1).
    """
    out = bytearray()
    pieces = bytes(data).split(b"\0")
    last = len(pieces) - 1
    for k, piece in enumerate(pieces):
        i = 0
        while len(piece) - i >= 254:
            out.append(0xFF)
            out += piece[i : i + 254]
            i += 254
        if k == last and i > 0 and i == len(piece):
            break  # ends right after a full block
        out.append(len(piece) - i + 1)
        out += piece[i:]
    return bytes(out)


def max_encoded(body_size: int) -> int:
    """The longest COBS encoding of a body of ``body_size`` bytes (no delimiter)."""
    return body_size + body_size // 254 + 1


@kernel
def _decode_blocks(src, n, dst, meta, max_block):  # pragma: no cover - compiled
    """Decode every 0x00-terminated block of src[:n] into dst.

    meta[k] = (dst start, dst length or COBS_ERROR / OVERSIZE, encoded length);
    empty blocks are skipped. Returns (blocks, index after the last delimiter).
    """
    i = 0
    o = 0
    k = 0
    while k < meta.shape[0]:
        j = i
        while j < n and src[j] != 0:
            j += 1
        if j >= n:
            break
        blen = j - i
        if blen > 0:
            status = 0
            if blen > max_block:
                status = -2
            else:
                start = o
                p = i
                while p < j:
                    code = np.int64(src[p])
                    p += 1
                    if p + code - 1 > j:
                        status = -1
                        break
                    for q in range(p, p + code - 1):
                        dst[o] = src[q]
                        o += 1
                    p += code - 1
                    if code != 255 and p < j:
                        dst[o] = 0
                        o += 1
                if status == 0:
                    status = o - start
                else:
                    o = start
            meta[k, 0] = o - status if status > 0 else o
            meta[k, 1] = status
            meta[k, 2] = blen
            k += 1
        i = j + 1
    return k, i


def decode_blocks(src: np.ndarray, dst: np.ndarray, meta: np.ndarray, max_block: int) -> tuple[int, int]:
    """Run the block decoder (see `_decode_blocks`); ``dst`` must hold ``len(src)`` bytes."""
    if dst.shape[0] < src.shape[0] or meta.ndim != 2 or meta.shape[1] != 3:
        raise ValueError("decode_blocks: dst must be as long as src and meta of shape (k, 3)")
    return _decode_blocks(src, src.shape[0], dst, meta, max_block)


def cobs_decode(block: bytes) -> bytes:
    """Decode one COBS block (without its delimiter); `FrameError` if it is not valid COBS."""
    src = np.frombuffer(bytes(block) + b"\0", dtype=np.uint8)
    dst = np.empty(src.shape[0], dtype=np.uint8)
    meta = np.zeros((1, 3), dtype=np.int64)
    count, _ = decode_blocks(src, dst, meta, src.shape[0])
    if count == 0:
        return b""
    start, length, _ = meta[0]
    if length < 0:
        raise FrameError("not a valid COBS block: a code byte runs past its end, or the block holds 0x00")
    return dst[start : start + length].tobytes()
