"""The host end of the link against a device written in Python on a real pty pair, scripted to
do what the C example device cannot be made to do on demand: lose its first ACK, cut a sample on
STOP, run with sample ids about to wrap, declare huge tensors, send hostile text, stay silent.

The fake device records every tensor it sends; the host's counts and arrays are checked against
that record, never against the host's own output."""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
import time
import tty
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgecal import Calibrator
from edgecal.cli import main
from edgecal.errors import InputError
from edgecal.link import LinkError, SerialHost, StreamSession, TablePushError
from edgecal.link import frames as F
from edgecal.link.assembler import SampleAssembler
from edgecal.link.decoder import FrameDecoder
from edgecal.link.run import DeviceRun, RunEvent, RunState
from edgecal.text import printable

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "firmware_interface" / "PROTOCOL.md"


class FakeDevice:
    """A device on the far end of a pty: float32 tensors of the given lengths, value = sample id + index.

    ``count`` samples in all (None: endless), then FINAL STATS; ``cut_after``: after that many
    samples it begins one more, sends its first ``cut_tensors`` tensors and waits for STOP.
    """

    def __init__(self, lengths=(4, 8, 2), *, names=None, first_sample=0, count=None, lose_acks=0, cut_after=None,
                 cut_tensors=1, firmware=b"fake 1.0", log_text=None, listed=None, ack_start=True, table_ack=True,
                 reboot_after=None, new_hash=bytes(16)):
        self.lengths = list(lengths)
        self.names = names or [f"t{i}".encode() for i in range(len(lengths))]
        self.next_id, self.count, self.lose_acks = first_sample & 0xFFFFFFFF, count, lose_acks
        self.cut_after, self.cut_tensors, self.firmware, self.log_text = cut_after, cut_tensors, firmware, log_text
        self.listed = range(len(lengths)) if listed is None else listed
        self.ack_start, self.table_ack = ack_start, table_ack
        self.reboot_after, self.new_hash, self.boot_id, self.model_hash = reboot_after, new_hash, 9, bytes(16)
        self.seq = self.sent_samples = self.run_sent = self.grant = self.run_id = 0
        self.streaming = self.hung = False
        self.sent: dict[tuple[int, str], np.ndarray] = {}  # (sample id, name) -> array sent whole
        self.starts = 0
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.url = os.ttyname(self.slave)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        os.close(self.slave)  # with no slave open, the thread's read fails (EIO) and it ends
        self._thread.join(timeout=10)
        os.close(self.master)  # only now: a reused descriptor number must not reach a stale thread

    # -- wire ---------------------------------------------------------------------------------------
    def _send(self, ftype, payload=b"", sample_id=None, **fields):
        sid = self.next_id if sample_id is None else sample_id
        os.write(self.master, F.encode_frame(ftype, payload, seq=self.seq, sample_id=sid, **fields))
        self.seq = (self.seq + 1) & 0xFFFFFFFF

    def _serve(self):
        dec = FrameDecoder()
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            for f in dec.feed(data):
                self._answer(f)

    def _answer(self, f):
        if f.type == F.HELLO:
            self.streaming = False
            self._hello_ack()
        elif f.type == F.LIST_REQ:
            for i in self.listed:
                dims = struct.pack("<I", self.lengths[i])
                info = bytes([1, 1, 0, 0]) + dims + bytes([len(self.names[i])]) + self.names[i]
                self._send(F.TENSOR_INFO, info, tensor_id=i, total=4 * self.lengths[i])
        elif f.type == F.START:
            self._start(f)
        elif f.type == F.CREDIT:
            run_id, grant = struct.unpack_from("<II", f.payload)
            if self.streaming and run_id == self.run_id and grant > self.grant:
                self.grant = grant
            self._pump()
        elif f.type == F.STOP:
            self.streaming = False
            self._send(F.ACK, bytes([F.STOP, 0, 0, 0]) + struct.pack("<I", self.run_id))
            self._stats(0)
        elif f.type == F.TABLE_CHUNK and f.flags & F.F_LAST and self.table_ack:
            self._send(F.TABLE_ACK, struct.pack("<HHII", 0, 0, f.total, 0))

    def _hello_ack(self, flags=0):
        head = struct.pack("<HHHHI", 1, 1024, 1024, len(self.lengths), self.boot_id) + self.model_hash
        self._send(F.HELLO_ACK, head + bytes([len(self.firmware)]) + self.firmware, flags=flags)
        if self.log_text is not None:
            self._send(F.LOG, b"\x02" + self.log_text)
            self._send(F.ERROR, b"\x02\x00" + self.log_text)

    def _start(self, f):
        self.starts += 1
        if not self.ack_start:
            return
        run_id, grant = struct.unpack_from("<II", f.payload)
        if not (self.streaming and run_id == self.run_id):
            self.run_id, self.grant, self.run_sent, self.run_first = run_id, grant, 0, self.next_id
            self.streaming = True
        if self.lose_acks:
            self.lose_acks -= 1
        else:
            self._send(F.ACK, bytes([F.START, 0, 0, 0]) + struct.pack("<I", run_id), sample_id=self.run_first)
        self._pump()

    def _stats(self, flags):
        words = (self.seq, self.sent_samples, 0, 0, 0, 0, 0, 0, 0, self.run_sent)
        self._send(F.STATS, struct.pack("<10I", *words), flags=flags)

    def _pump(self):
        while self.streaming and not self.hung and self.run_sent < self.grant:
            if self.count is not None and self.sent_samples >= self.count:
                self._stats(F.F_FINAL)
                return
            cut = self.sent_samples == self.cut_after
            self._sample(self.cut_tensors if cut else len(self.lengths))
            self.hung = cut
            if self.sent_samples == self.reboot_after:
                self._reboot()

    def _reboot(self):
        """As after a reset: counters from zero, a new boot id, maybe another model; a lone 0x00, HELLO_ACK(BOOT)."""
        self.seq, self.next_id, self.streaming, self.reboot_after = 0, 0, False, None
        self.boot_id, self.model_hash = self.boot_id + 1, self.new_hash
        os.write(self.master, b"\0")
        self._hello_ack(F.F_BOOT)

    def _sample(self, tensors):
        sid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        self.sent_samples += 1
        self.run_sent += 1
        for i in range(tensors):
            array = (np.arange(self.lengths[i], dtype="<f4") + sid % 1000).astype("<f4")
            self._send(F.TENSOR_CHUNK, array.tobytes(), sample_id=sid, tensor_id=i, total=array.nbytes, flags=F.F_LAST)
            self.sent[(sid, self.names[i].decode())] = array
        if tensors == len(self.lengths):
            self._send(F.SAMPLE_END, struct.pack("<H", tensors), sample_id=sid)


@pytest.fixture
def fake():
    made = []

    def make(*args, **kw):
        dev = FakeDevice(*args, **kw)
        made.append(dev)
        return dev

    yield make
    for dev in made:
        dev.close()


def session(dev, **kw):
    """Open a host on ``dev`` and run a session; returns (result, [(sample id, name, array)])."""
    got = []
    with SerialHost(dev.url, **kw.pop("source", {})) as src:
        src.open()
        result = StreamSession(src, Calibrator(), on_tensor=lambda t: got.append(t), **kw).run()
    return result, got


def assert_arrays_are_the_sent_ones(dev, got):
    assert got and all(np.array_equal(dev.sent[(t.sample_id, t.name)], t.array) for t in got)


# -- accounting ------------------------------------------------------------------------------------
def test_tensors_a_stop_cut_are_unused_not_lost(fake, caplog):
    dev = fake(cut_after=4, cut_tensors=1)  # sample 4 gets its first tensor out, then STOP cuts it
    with caplog.at_level(logging.WARNING, logger="edgecal"):
        result, got = session(dev, samples=4)
    p = result.provenance
    assert (p["tensors_used"], p["tensors_discarded"], p["tensors_unused"]) == (12, 0, 3)
    assert p["loss_rate"] == 0.0 and not [r for r in caplog.records if "lost" in r.getMessage()]
    assert_arrays_are_the_sent_ones(dev, got)


def test_samples_streamed_before_a_lost_start_ack_count(fake):
    dev = fake(count=8, lose_acks=1)  # streams samples 0-7 on the first START; its ACK never arrives
    result, got = session(dev)
    p = result.provenance
    assert dev.starts >= 2 and result.reason == "finished"
    assert (p["samples"], p["tensors_used"], p["tensors_discarded"], p["tensors_unused"]) == (8, 24, 0, 0)
    assert sorted({t.sample_id for t in got}) == list(range(8))
    assert_arrays_are_the_sent_ones(dev, got)


def test_sample_ids_that_wrap_keep_streaming_and_add_up(fake):
    dev = fake(first_sample=2**32 - 20, count=40)
    result, got = session(dev, duration=20)
    p = result.provenance
    assert result.reason == "finished"
    assert (p["samples"], p["tensors_used"], p["tensors_discarded"], p["tensors_unused"]) == (40, 120, 0, 0)
    ids = sorted({t.sample_id for t in got})
    assert ids == list(range(20)) + list(range(2**32 - 20, 2**32))
    assert_arrays_are_the_sent_ones(dev, got)


def chunk(sample_id, tensor=0, total=4):
    return F.Frame(F.TENSOR_CHUNK, F.F_LAST, 0, sample_id, tensor, 0, total, bytes(4))


def test_assembler_window_and_wrap():
    table = [F.TensorInfo(0, "x", 1, (1,), 4), F.TensorInfo(1, "y", 1, (1,), 4)]
    a = SampleAssembler(table, [0, 1])
    a.begin_run(0xFFFFFFFE)
    a.horizon = 8
    for sid in (0xFFFFFFFE, 0xFFFFFFFF, 1):  # sample 0 lost on the link
        samples = a.on_chunk(chunk(sid, 0)) + a.on_chunk(chunk(sid, 1))
        assert [(x.sample_id, list(x.arrays), x.complete) for x in samples] == [(sid, ["x", "y"], True)]
    for stray in (0xFFFFFFF0, 0x10000000, 9, 0xFFFFFFFD):  # before the run, or beyond the credit granted
        assert a.on_chunk(chunk(stray)) == []
    assert (a.used, a.discarded, a.bad_chunks, a.samples_seen) == (6, 2, 4, 4)
    a.end_run(0x12345678)  # an end beyond the credit is not believed
    assert (a.used, a.discarded, a.unused) == (6, 2, 0)


def test_assembler_cut_sample_and_tail():
    table = [F.TensorInfo(i, n, 1, (1,), 4) for i, n in enumerate("xyz")]
    cut = SampleAssembler(table, [0, 1, 2])
    cut.begin_run(10)
    cut.on_chunk(chunk(10, 0))
    cut.on_chunk(chunk(10, 1, total=8))  # a size that disagrees with the table: discarded
    closed = cut.end_run(11, cut=True)  # tensor 2 never left the device
    assert (cut.used, cut.discarded, cut.unused) == (1, 1, 1)
    assert [(x.sample_id, list(x.arrays), x.complete) for x in closed] == [(10, ["x"], False)]
    tail = SampleAssembler(table, [0, 1, 2])
    tail.begin_run(10)
    tail.on_chunk(chunk(10, 0))
    tail.end_run(14, cut=True)  # samples 11 and 12 lost on the link, 13 cut before any frame arrived
    assert (tail.used, tail.discarded, tail.unused) == (1, 2 + 6, 3)
    finished = SampleAssembler(table, [0, 1, 2])
    finished.begin_run(10)
    finished.on_chunk(chunk(10, 0))
    finished.end_run(11)  # a FINAL STATS: nothing was cut, the rest was lost
    assert (finished.used, finished.discarded, finished.unused) == (1, 2, 0)


def test_a_reset_into_another_model_ends_the_session_keeping_what_arrived(fake, caplog):
    dev = fake(reboot_after=5, new_hash=b"\x11" * 16)  # its HELLO_ACK(BOOT) reuses sequence number 0
    with caplog.at_level(logging.WARNING, logger="edgecal"):
        result, got = session(dev, duration=20)
    p = result.provenance
    assert result.reason == "link-error" and p["device_resets"] == 1 and p["stalls"] == 0
    assert (p["samples"], p["tensors_used"], p["tensors_discarded"]) == (5, 15, 0)
    assert_arrays_are_the_sent_ones(dev, got)
    message = next(r.getMessage() for r in caplog.records if "now runs model" in r.getMessage())
    assert "11" * 16 in message and "00" * 16 in message


def run_of(window=4):
    return DeviceRun(3, [F.TensorInfo(0, "x", 1, (1,), 4), F.TensorInfo(1, "y", 1, (1,), 4)], [0, 1], window)


def test_run_state_machine_follows_its_table():
    run = run_of()
    assert run.credit(time.monotonic() + 1) is None  # no credit before the ACK
    assert run.on_event(RunEvent.STOP_ACKED, 5) == [] and run.state is RunState.STARTING  # not a transition
    run.on_frame(chunk(41, 0))  # the ACK was lost: the run counts from sample 41 for now
    run.on_event(RunEvent.ACKED, 40)  # it started at 40: sample 40 was lost
    assert run.state is RunState.STREAMING and run.first_sample_id == 40 and run.asm.discarded == 2
    assert run.credit(time.monotonic() + 1) == 2 + 4 and run.asm.horizon == 6
    closed = run.on_event(RunEvent.FINAL, 42)  # sample 41 had only x; the device has no more
    assert run.state is RunState.FINISHED and [(x.sample_id, x.complete) for x in closed] == [(41, False)]
    assert run.on_frame(chunk(41, 1)) == [] and run.credit(time.monotonic() + 1) is None
    run.on_event(RunEvent.STOP)
    run.on_event(RunEvent.STOP_ACKED, 42)
    assert run.state is RunState.ENDED and (run.asm.used, run.asm.discarded, run.asm.unused) == (1, 3, 0)
    assert run.on_event(RunEvent.LOST) == [] and run.state is RunState.ENDED  # nothing leaves ENDED


def test_run_lost_or_stopped_without_an_ack():
    lost = run_of()
    lost.on_event(RunEvent.ACKED, 0)
    lost.on_frame(chunk(0, 0))
    assert [(x.sample_id, list(x.arrays)) for x in lost.on_event(RunEvent.LOST)] == [(0, ["x"])]
    assert lost.state is RunState.ENDED and (lost.asm.used, lost.asm.discarded) == (1, 1)  # the reset cost y
    quiet = run_of()
    quiet.on_event(RunEvent.ACKED, 0)
    quiet.on_event(RunEvent.STOP)
    assert quiet.on_frame(chunk(0, 0)) == [] and quiet.asm.unused == 1  # after the decision to stop: unused
    quiet.on_event(RunEvent.GAVE_UP)  # no ACK for STOP: only what arrived is known
    assert quiet.state is RunState.ENDED and (quiet.asm.used, quiet.asm.discarded, quiet.asm.unused) == (0, 0, 2)


# -- limits and slow error paths -------------------------------------------------------------------
def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgecal: error: "), lines
    return lines[0]


def test_declared_tensors_above_the_host_limit_are_refused_before_allocating(fake, tmp_path, capsys):
    dev = fake([16 << 20] * 40)  # 40 tensors of 64 MiB: 2.5 GiB per sample
    assert main(["stream", "--port", dev.url, "--out", str(tmp_path / "t.json")]) == 2
    line = one_error_line(capsys)
    assert "40 selected tensors declare 2684354560 bytes per sample" in line and "at most 67108864" in line
    assert not (tmp_path / "t.json").exists()
    assert main(["stream", "--port", dev.url, "--list"]) == 0  # listing allocates nothing
    assert re.search(r"^39 +t39 +float32 +16777216 +67108864$", capsys.readouterr().out, re.M)
    small = fake([4, 4])
    with SerialHost(small.url, max_sample_bytes=31) as src:
        src.open()
        with pytest.raises(InputError, match="2 selected tensors declare 32 bytes per sample; this host allows at most 31"):
            src.start()


def test_no_table_ack_fails_after_three_short_tries(fake):
    dev = fake(table_ack=False)
    with SerialHost(dev.url, table_timeout=0.1) as src:
        src.open()
        t0 = time.monotonic()
        with pytest.raises(TablePushError, match="no acknowledgement of the table after 3 tries"):
            src.push_table(b"ECAL" + bytes(300))
        assert time.monotonic() - t0 < 2.0


def test_incomplete_tensor_list_fails_after_four_short_requests(fake):
    dev = fake(listed=[0, 2])
    src = SerialHost(dev.url, list_timeout=0.1)
    t0 = time.monotonic()
    with pytest.raises(LinkError, match="described 2 of its 3 tensors after 4 requests"):
        src.open()
    assert time.monotonic() - t0 < 2.0


def test_no_start_ack_fails_after_the_start_timeout(fake):
    dev = fake(ack_start=False)
    with SerialHost(dev.url, start_timeout=0.3) as src:
        src.open()
        t0 = time.monotonic()
        with pytest.raises(LinkError, match="did not acknowledge START"):
            src.start()
        assert time.monotonic() - t0 < 1.5 and dev.starts >= 2  # repeated within the shorter timeout


# -- device text -----------------------------------------------------------------------------------
def test_printable_escapes_control_characters_reversibly():
    assert printable("conv1 ok é") == "conv1 ok é"
    assert printable("a\x1b[2J\rb\n\x07\u202e\\") == "a\\x1b[2J\\rb\\n\\x07\\u202e\\\\"
    assert printable("\\x1b") != printable("\x1b")  # a literal backslash stays distinguishable


def test_device_text_cannot_move_the_cursor_or_forge_an_error_line(fake, tmp_path, capsys):
    hostile = b"\x1b[1A\x1b[2K\redgecal: error: forged\n\x07"
    dev = fake(names=[b"t0", b"t\x1b[31m1", b"t2"], firmware=hostile, log_text=hostile, count=2)
    assert main(["stream", "--port", dev.url, "--list"]) == 0
    assert main(["stream", "--port", dev.url, "--out", str(tmp_path / "t.json"), "-q"]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    errors = [ln for ln in text.splitlines() if ln.startswith("edgecal: error:")]
    assert errors and all(": device reported error 2: \\x1b[1A" in ln for ln in errors)  # the device's own ERROR
    assert "\\x1b[1A\\x1b[2K\\redgecal: error: forged\\n\\x07" in out.out  # the firmware id, escaped
    assert "t\\x1b[31m1" in out.out and "device: " in out.err


# -- the protocol document -------------------------------------------------------------------------
def test_provenance_keys_are_the_ones_protocol_md_lists(fake):
    dev = fake(count=3)
    result, _ = session(dev)
    section = PROTOCOL.read_text().split("## 10. ", 1)[1]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert documented == list(result.provenance)
    device = re.findall(r"`device\.([a-z_]+)`", section)
    assert device and device == list(result.provenance["device"])


def test_tensor_info_in_any_order_makes_the_same_table(fake):
    dev = fake(listed=[2, 0, 1])  # PROTOCOL.md 3: a host keys TENSOR_INFO by tensor id
    with SerialHost(dev.url) as src:
        info = src.open()
    assert [(t.id, t.name, t.nbytes) for t in info.tensors] == [(0, "t0", 16), (1, "t1", 32), (2, "t2", 8)]


def test_provenance_keys_are_named_in_the_readme(fake):
    dev = fake(count=1)
    result, _ = session(dev)
    section = (ROOT / "README.md").read_text().split("## Serial link", 1)[1].split("\n## ", 1)[0]
    assert [k for k in result.provenance if f"`{k}`" not in section] == []


def test_ecal_layout_of_protocol_md_reads_a_table_edgecal_writes():
    """A reader written from PROTOCOL.md 7.1 alone, on a table written by edgecal.formats.ecal."""
    from edgecal.formats.ecal import write_ecal
    from edgecal.table import CalibrationTable, TensorCalibration

    table = CalibrationTable([TensorCalibration.symmetric("conv1", 2.54), TensorCalibration.symmetric("fc", 0.5)],
                             created="2026-01-01T00:00:00Z", edgecal_version="1")
    data = write_ecal(table)
    magic, version, h, n, m = struct.unpack_from("<4sHHII", data)
    assert (magic, version, h, n) == (b"ECAL", 1, 16, 2)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])
    pos, seen = h + m, []
    for _ in range(n):
        length, scale32, zero, dtype, scheme, flags, amax, k = struct.unpack_from("<HfiBBHdB", data, pos)
        name = data[pos + 23 : pos + 23 + k].decode()
        exact_scale = struct.unpack_from("<d", data, pos + 87 + k)[0]
        j = struct.unpack_from("<H", data, pos + 95 + k)[0]
        method = json.loads(data[pos + 97 + k : pos + 97 + k + j])
        seen.append((name, amax, exact_scale, zero, dtype, scheme, method["method"]))
        assert length == 97 + k + j and scale32 == np.float32(exact_scale)
        pos += length
    assert pos == len(data) - 4
    want = [(e.name, e.amax, e.scale, e.zero_point, 1, 1, e.method) for e in table.values()]
    assert seen == want
