"""The link codec in Python: known-answer vectors, COBS against a literal twin, decoder and
assembler properties (hypothesis) for damage, truncation and bounded memory."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecal.link.assembler import SampleAssembler, SeqTracker
from edgecal.link.cobs import cobs_decode, cobs_encode
from edgecal.link.decoder import FrameDecoder, classify
from edgecal.link.errors import FrameError
from edgecal.link.frames import (F_LAST, HELLO_ACK, PING, TENSOR_CHUNK, TENSOR_INFO, Frame, TensorInfo, encode_body,
                                 encode_frame, parse_hello_ack, parse_tensor_info)

FI = Path(__file__).resolve().parents[1] / "firmware_interface"
VECTORS = FI / "vectors" / "frames.txt"


def vectors(kind: str) -> list[list[str]]:
    rows = [line.split() for line in VECTORS.read_text().splitlines() if line and not line.startswith("#")]
    return [r[1:] for r in rows if r[0] == kind]


def unhex(s: str) -> bytes:
    return b"" if s == "-" else bytes.fromhex(s)


# -- a literal COBS twin, from the paper's description --------------------------------------
def naive_cobs_encode(data: bytes) -> bytes:
    out, block, full = bytearray(), bytearray(), False
    for b in data:
        full = False
        if b == 0:  # a block ends; its code byte stands for this zero
            out += bytes([len(block) + 1]) + block
            block.clear()
        else:
            block.append(b)
            if len(block) == 254:  # a full block implies no zero
                out += b"\xff" + block
                block.clear()
                full = True
    if not full:  # the last block, unless the data ended with a full one
        out += bytes([len(block) + 1]) + block
    return bytes(out)


# -- known-answer vectors -----------------------------------------------------------------------
def test_sample_id_distance_follows_the_serial_vectors():
    from edgecal.link.assembler import id_distance

    rows = vectors("serial")
    assert len(rows) >= 7
    for name, a, b, dist in rows:
        assert id_distance(int(a), int(b)) == int(dist), name


@pytest.mark.needs_host  # spawns sys.executable
def test_vector_file_is_what_make_vectors_writes():
    done = subprocess.run([sys.executable, str(FI / "vectors" / "make_vectors.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_protocol_worked_example_matches_the_vector():
    ping = next(v for v in vectors("frame") if v[0] == "ping")
    spaced = " ".join(ping[-1][i : i + 2] for i in range(0, len(ping[-1]), 2)).upper()
    assert spaced in (FI / "PROTOCOL.md").read_text()


@pytest.mark.parametrize("row", vectors("crc"), ids=lambda r: r[0])
def test_crc_vectors(row):
    assert zlib.crc32(unhex(row[1])) == int(row[2], 16)


@pytest.mark.parametrize("row", vectors("cobs"), ids=lambda r: r[0])
def test_cobs_vectors(row):
    raw, enc = unhex(row[1]), unhex(row[2])
    assert cobs_encode(raw) == enc
    assert cobs_decode(enc) == raw
    assert naive_cobs_encode(raw) == enc


def test_cobs_table_of_protocol_md():
    assert cobs_encode(bytes.fromhex("11000000")) == bytes.fromhex("0211010101")
    assert cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255))
    assert cobs_encode(bytes(range(2, 256)) + b"\0") == b"\xff" + bytes(range(2, 256)) + b"\x01\x01"


@pytest.mark.parametrize("row", vectors("frame"), ids=lambda r: r[0])
def test_frame_vectors_encode_and_decode(row):
    name, ftype, flags, seq, sample, tensor, offset, total, payload, wire = row
    fields = dict(seq=int(seq), flags=int(flags, 16), sample_id=int(sample), tensor_id=int(tensor), offset=int(offset),
                  total=int(total))
    assert encode_frame(int(ftype, 16), unhex(payload), **fields) == unhex(wire)
    (frame,) = FrameDecoder().feed(unhex(wire))
    assert frame == Frame(int(ftype, 16), fields["flags"], fields["seq"], fields["sample_id"], fields["tensor_id"],
                          fields["offset"], fields["total"], unhex(payload))


@pytest.mark.parametrize("row", vectors("bad"), ids=lambda r: r[0])
def test_bad_vectors_fail_the_expected_check(row):
    name, error, max_payload, wire = row
    assert classify(unhex(wire), int(max_payload)) == error
    frames = FrameDecoder(int(max_payload)).feed(unhex(wire))
    assert frames == [] or (error == "version" and frames[0].version == 2)  # delivered only to name the version


def test_payload_parsers_read_the_vectors():
    rows = {v[0]: v for v in vectors("frame")}
    ack = parse_hello_ack(unhex(rows["hello_ack"][8]))
    assert (ack.version, ack.max_payload, ack.rx_max_payload, ack.tensor_count, ack.boot_id, ack.firmware) == (
        1, 1024, 512, 5, 0xB007, "ecal-example 1.0")
    assert ack.model_hash == bytes(range(0x10, 0x20)).hex()
    (info_frame,) = FrameDecoder().feed(unhex(rows["tensor_info"][9]))
    info = parse_tensor_info(info_frame)
    assert (info.name, info.shape, info.dtype, info.nbytes) == ("conv1_relu", (1, 8, 16, 16), np.dtype("<f4"), 8192)


def test_tensor_info_whose_size_disagrees_with_its_shape_is_rejected():
    payload = bytes([1, 1, 0, 0]) + struct.pack("<I", 10) + b"\x01x"
    with pytest.raises(FrameError, match="is 40 bytes, header says 41"):
        parse_tensor_info(Frame(TENSOR_INFO, 0, 0, 0, 0, 0, 41, payload))
    with pytest.raises(FrameError, match="element type code 99"):
        parse_tensor_info(Frame(TENSOR_INFO, 0, 0, 0, 0, 0, 40, bytes([99]) + payload[1:]))


# -- properties ---------------------------------------------------------------------------------------
@given(st.binary(max_size=2000))
def test_cobs_round_trip_and_twin(data):
    enc = cobs_encode(data)
    assert 0 not in enc and len(enc) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(enc) == data
    assert naive_cobs_encode(data) == enc


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=20000), st.integers(1, 5000))
def test_decoder_never_crashes_and_stays_bounded(data, split):
    d = FrameDecoder(max_payload=256)
    for i in range(0, len(data), split):
        d.feed(data[i : i + split])
        assert d.buffered <= d.max_block
    c = d.counters
    assert c.frames + c.corrupt <= data.count(0) + 1 + c.oversize


def test_decoder_memory_is_bounded_on_a_stream_with_no_delimiter():
    d = FrameDecoder(max_payload=1024)
    junk = bytes(range(1, 256)) * 400  # 100 kB without a 0x00
    for _ in range(100):  # 10 MB
        assert d.feed(junk) == []
        assert d.buffered <= d.max_block
    assert d.counters.resync_bytes >= 100 * len(junk) - d.max_block
    assert d.counters.oversize == 1  # one endless block
    assert d.feed(b"\0" + encode_frame(PING, b"ok", seq=1))[0].payload == b"ok"  # and it resynchronises


frames_strategy = st.lists(st.tuples(st.integers(0, 0x7F), st.binary(max_size=300)), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(frames_strategy, st.data())
def test_damage_never_yields_a_wrong_frame(frames, data):
    """Flip bits, drop bytes or truncate any frame: every decoded frame is one that was sent, intact."""
    wires = [encode_frame(t, p, seq=i) for i, (t, p) in enumerate(frames)]
    stream = bytearray()
    for w in wires:
        w = bytearray(w)
        kind = data.draw(st.sampled_from(["none", "flip", "drop", "cut"]))
        if kind == "flip":
            w[data.draw(st.integers(0, len(w) - 2))] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "drop":
            at = data.draw(st.integers(0, len(w) - 2))
            del w[at : at + data.draw(st.integers(1, 8))]
            w = w if w.endswith(b"\0") else w + b"\0"
        elif kind == "cut":
            w = w[: data.draw(st.integers(0, len(w) - 2))] + b"\0"
        stream += w
    split = data.draw(st.integers(1, 64))
    d = FrameDecoder(max_payload=300)
    got = [f for i in range(0, len(stream), split) for f in d.feed(bytes(stream[i : i + split]))]
    sent = {i: (t, p) for i, (t, p) in enumerate(frames)}
    for f in got:
        assert sent[f.seq] == (f.type, f.payload)
    assert len({f.seq for f in got}) == len(got)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 6), st.lists(st.sampled_from(["ok", "lose", "dup", "corrupt"]), min_size=1, max_size=60),
       st.integers(1, 9))
def test_assembler_delivers_exactly_the_complete_tensors(chunks_per_tensor, fates, nsamples):
    """Random loss and duplication of chunk frames: delivered == tensors whose every chunk arrived once."""
    info = [TensorInfo(0, "a", 2, (chunks_per_tensor * 4,), chunks_per_tensor * 4), TensorInfo(1, "b", 1, (3,), 12)]
    asm, seq = SampleAssembler(info, [0, 1]), SeqTracker()
    asm.begin_run(0)
    frames, expect_ok = [], set()
    k = 0
    for s in range(nsamples):
        for t, n in ((0, chunks_per_tensor), (1, 1)):
            ok = True
            for c in range(n):
                fate = fates[k % len(fates)]
                k += 1
                size = 4 if t == 0 else 12
                payload = bytes([s, t, c, 1]) * (size // 4)
                f = Frame(TENSOR_CHUNK, F_LAST if c == n - 1 else 0, len(frames), s, t, c * size, n * size if t == 0 else 12, payload)
                if fate == "lose" or fate == "corrupt":
                    ok = False
                    frames.append(None)
                    continue
                frames.append(f)
                if fate == "dup":
                    frames.append(f)
            if ok:
                expect_ok.add((s, t))
    samples = []
    for f in frames:
        if f is not None and seq.accept(f.seq):
            samples += asm.on_chunk(f)
    samples += asm.end_run(nsamples)
    got = [(r.sample_id, 0 if r.name == "a" else 1) for x in samples for r in x.tensors()]
    assert set(got) == expect_ok and len(got) == len(expect_ok)
    assert len({x.sample_id for x in samples}) == len(samples)  # one sample per id, whole or partial
    assert all(x.complete == ({(x.sample_id, 0), (x.sample_id, 1)} <= expect_ok) for x in samples)
    assert asm.used + asm.discarded == 2 * nsamples


def test_seq_tracker_counts_gaps_duplicates_and_wraps():
    s = SeqTracker()
    assert [s.accept(x) for x in (0xFFFFFFFE, 0xFFFFFFFF, 2, 2, 1, 3)] == [True, True, True, False, False, True]
    assert (s.missing, s.duplicates) == (2, 2)


def test_foreign_version_frames_are_counted_not_trusted():
    wire = bytes.fromhex(next(v for v in vectors("bad") if v[0] == "version_2")[-1])
    d = FrameDecoder()
    (frame,) = d.feed(wire)
    assert frame.version == 2 and d.counters.foreign_version == 1
    body = encode_body(HELLO_ACK, struct.pack("<H", 2), version=2)
    assert parse_hello_ack(body[24:-4]).version == 2


def test_a_frame_truncated_at_any_byte_is_dropped_and_the_next_one_survives():
    frame = encode_frame(TENSOR_CHUNK, bytes(range(256)) * 2, seq=1, total=512, flags=F_LAST)
    after = encode_frame(PING, b"next", seq=2)
    for cut in range(len(frame) - 1):
        d = FrameDecoder(max_payload=1024)
        got = d.feed(frame[:cut] + b"\0" + after)
        assert [(f.seq, f.payload) for f in got] == [(2, b"next")], cut
        assert d.counters.corrupt == (1 if cut else 0)


@pytest.mark.parametrize("payload,message", [
    (bytes([1, 9, 0, 0, 0]), "rank 9; expected at most 8"),
    (bytes([1, 0, 0, 0, 2]) + b"\xff\xfe", "name is not UTF-8"),
    (bytes([1, 0, 0, 0, 0]), "name ''; expected a non-empty single line"),
    (bytes([1, 2, 0, 0, 1]), "TENSOR_INFO payload of 5 bytes; expected at least 13"),
])
def test_malformed_tensor_info(payload, message):
    with pytest.raises(FrameError, match=message):
        parse_tensor_info(Frame(TENSOR_INFO, 0, 0, 0, 0, 0, 4, payload))


def test_invalid_cobs_and_decoder_arguments():
    with pytest.raises(FrameError, match="not a valid COBS block"):
        cobs_decode(b"\x05\x01")
    with pytest.raises(ValueError, match="max_payload 0; expected 1..16384"):
        FrameDecoder(max_payload=0)
    with pytest.raises(FrameError, match="no complete block"):
        classify(b"\x01\x02", 128)
