"""End to end: the C example device as a separate process on a pty pair or a TCP socket, the
host as `edgecal stream` / `SerialHost`. Tables must equal those computed directly from
exactly the tensors the device sent intact (its --truth log and --dump mode), and the
counters must account for every damaged one."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import tty

import pytest

from edgecal import CalibrationTable, Calibrator
from edgecal.cli import main
from edgecal.errors import InputError
from edgecal.link import LinkError, SerialHost, StreamSession
from edgecal.link.build import build, compiler

from link_helpers import NAMES, Device, entries, read_truth, reference, wait_for

pytestmark = [pytest.mark.skipif(compiler() is None, reason="needs gcc to build the example device"),
              pytest.mark.needs_host]  # builds and runs C programs with the host gcc


@pytest.fixture
def device(exe, tmp_path):
    started = []

    def start(*args, transport="pty", name="truth"):
        dev = Device(exe, [str(a) for a in args], tmp_path / f"{name}.txt", transport)
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.close()


def stream(*argv) -> int:
    return main(["stream", *map(str, argv)])


def provenance(path):
    return CalibrationTable.load(path).provenance["link"]


def test_clean_stream_over_a_pty_equals_the_direct_table(exe, device, tmp_path, capsys, monkeypatch):
    dev = device("--count", 40, "--log-every", 10)
    out = tmp_path / "t.json"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert stream("--port", dev.url, "--out", out, "--timeout", 5) == 0
    captured = capsys.readouterr()
    assert "edgecal: 40 samples (" in captured.err and ", 200 tensors, " in captured.err and "\x1b[K" in captured.err
    assert "  link: 0 frames lost, 0 corrupt" in captured.err
    assert "streamed 40 complete samples" in captured.out
    truth = read_truth(dev.truth)
    assert len(truth.intact) == 40 * 5 and not truth.damaged
    table = CalibrationTable.load(out)
    assert entries(table) == entries(reference(exe, truth.intact))
    p = table.provenance["link"]
    assert (p["samples"], p["tensors_used"], p["tensors_discarded"], p["ended"]) == (40, 200, 0, "finished")
    assert p["frames_missing"] == p["frames_corrupt"] == 0 and p["device"]["samples_sent"] == 40
    assert p["device_logs"] >= 4  # the device's printf went through LOG frames


FAULTS = ["--flip-every", 9, "--drop-every", 13, "--cut-every", 17, "--lose-every", 19, "--dup-every", 11,
          "--junk-every", 23]


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_faults_reach_no_statistic_and_every_damaged_tensor_is_counted(exe, device, tmp_path, transport):
    dev = device("--count", 60, "--boot-junk", "--seed", 3, *FAULTS, transport=transport)
    out = tmp_path / "t.ecal"
    assert stream("--port", dev.url, "--out", out, "--max-loss", 100) == 0
    truth = read_truth(dev.truth)
    assert truth.damaged and truth.faults["dup"] and truth.faults["junk"]
    table = CalibrationTable.load(out)
    assert entries(table) == entries(reference(exe, truth.intact))
    p = table.provenance["link"]
    assert p["tensors_used"] == len(truth.intact) and p["tensors_discarded"] == len(truth.damaged)
    assert p["frames_missing"] == truth.link_faults
    assert p["frames_duplicate"] == truth.faults["dup"]
    assert p["frames_corrupt"] >= truth.faults["flip"] + truth.faults["drop_bytes"] + truth.faults["cut"]
    assert p["resync_bytes"] > 0 and p["loss_rate"] == len(truth.damaged) / 300


def test_reset_mid_stream_restarts_and_counts_the_cut_sample(exe, device, tmp_path):
    dev = device("--count", 20, "--reset-at", 6, "--flip-every", 15, "--seed", 5)
    out = tmp_path / "t.json"
    assert stream("--port", dev.url, "--out", out, "--max-loss", 100) == 0
    truth = read_truth(dev.truth)
    assert len(truth.boots) == 2 and truth.damaged
    p = provenance(out)
    assert p["device_resets"] == 1 and p["reconnects"] == 0
    assert (p["tensors_used"], p["tensors_discarded"]) == (len(truth.intact), len(truth.damaged))
    assert entries(CalibrationTable.load(out)) == entries(reference(exe, truth.intact))


def test_unplugged_pty_device_is_reconnected_without_losing_state(exe, device, tmp_path):
    link = tmp_path / "ttyEDGE"  # like /dev/serial/by-id/...: a stable name that udev re-points
    first = device("--unplug-at", 8, name="first")
    os.symlink(first.url, link)
    second = {}

    def replug():
        first.wait_exit()
        second["dev"] = device("--count", 10, "--input-offset", 1000, "--seed", 2, name="second")
        os.symlink(second["dev"].url, tmp_path / "new")
        os.replace(tmp_path / "new", link)

    swap = threading.Thread(target=replug)
    swap.start()
    out = tmp_path / "t.json"
    try:
        assert stream("--port", link, "--out", out, "--reconnect-timeout", 20) == 0
    finally:
        swap.join()
    truth = read_truth(first.truth, second["dev"].truth)
    p = provenance(out)
    assert p["reconnects"] == 1 and p["device_resets"] == 1 and p["samples"] == 7 + 10
    assert (p["tensors_used"], p["tensors_discarded"]) == (len(truth.intact), len(truth.damaged)) == (7 * 5 + 1 + 50, 4)
    assert entries(CalibrationTable.load(out)) == entries(reference(exe, truth.intact))


def test_socket_device_that_drops_the_connection_is_reconnected(exe, device, tmp_path):
    dev = device("--count", 25, "--unplug-at", 5, transport="tcp")
    out = tmp_path / "t.json"
    assert stream("--port", dev.url, "--out", out) == 0
    truth = read_truth(dev.truth)
    p = provenance(out)
    assert p["reconnects"] == 1 and len(truth.boots) == 2
    assert (p["tensors_used"], p["tensors_discarded"]) == (len(truth.intact), len(truth.damaged))
    assert entries(CalibrationTable.load(out)) == entries(reference(exe, truth.intact))


def test_samples_tensors_list_and_push(exe, device, tmp_path, capsys):
    pushed = tmp_path / "pushed.ecal"
    dev = device("--table-out", pushed, "--rx-drop-every", 4)  # the device also loses every 4th host frame
    assert stream("--port", dev.url, "--list") == 0
    listing = capsys.readouterr().out
    assert "ecal-example-device 1.0" in listing and "conv1_relu  float32  1x8x8x8  2048" in listing
    out = tmp_path / "t.ecal"
    assert stream("--port", dev.url, "--out", out, "--samples", 12, "--tensors", "fc1,logits", "--push") == 0
    table = CalibrationTable.load(out)
    assert list(table) == ["fc1", "logits"] and {e.stats.samples for e in table.values()} == {12}
    assert pushed.read_bytes() == out.read_bytes()  # the device holds exactly the table written
    assert "accepted" in capsys.readouterr().out
    truth = read_truth(dev.truth)
    used = [(i, t) for i, t in truth.intact if NAMES[t] in ("fc1", "logits")][:24]
    assert entries(table) == entries(reference(exe, used))


def test_duration_and_resuming_from_a_state(exe, device, tmp_path):
    state = tmp_path / "s.ecst"
    first = device("--count", 10, name="first")
    assert stream("--port", first.url, "--out", tmp_path / "a.json", "--state", state) == 0
    second = device("--count", 10, "--input-offset", 1000, "--seed", 2, name="second")
    assert stream("--port", second.url, "--out", tmp_path / "b.json", "--state", state) == 0
    truth = read_truth(first.truth, second.truth)
    table = CalibrationTable.load(tmp_path / "b.json")
    assert entries(table) == entries(reference(exe, truth.intact))  # both runs, one histogram per tensor
    endless = device(name="endless")
    assert stream("--port", endless.url, "--out", tmp_path / "c.json", "--duration", 0.3) == 0
    assert provenance(tmp_path / "c.json")["ended"] == "duration"


def test_free_running_device_drops_whole_samples_and_says_so(exe, device, tmp_path):
    """Python API over socket://: the device outruns the credit window and drops whole samples."""
    dev = device("--count", 300, "--rate", 4000, transport="tcp")
    seen = []
    with SerialHost(dev.url) as src:
        src.open()
        cal = Calibrator()
        result = StreamSession(src, cal, on_tensor=lambda t: seen.append((t.sample_id, t.name))).run()
    truth = read_truth(dev.truth)
    p = result.provenance
    sent = 300 - len(truth.dropped)
    assert truth.dropped and p["device"]["samples_dropped_credit"] == len(truth.dropped)
    assert p["tensors_used"] == len(truth.intact) == 5 * sent and result.samples == sent
    inputs = {sid: inp for (_, sid), inp in truth.samples.items()}
    assert sorted(seen) == sorted((sid, n) for sid in range(sent) for n in NAMES)  # ids of sent samples: no gaps
    used = [(inputs[sid], NAMES.index(n)) for sid, n in seen]
    assert entries(cal.compute()) == entries(reference(exe, used))


def test_sigterm_stops_the_device_drains_and_writes_table_and_state(exe, device, tmp_path):
    dev = device()  # streams until told to stop
    out, state = tmp_path / "t.json", tmp_path / "s.ecst"
    proc = subprocess.Popen([sys.executable, "-m", "edgecal", "stream", "--port", dev.url, "--out", str(out),
                             "--state", str(state), "--checkpoint-every", "0.1"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: state.exists() or proc.poll() is not None, 60, "a first checkpoint")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill() if proc.poll() is None else None
        proc.stderr.close()
    table = CalibrationTable.load(out)
    assert entries(Calibrator.load_state(state).compute()) == entries(table)
    p = table.provenance["link"]
    assert p["ended"] == "stopped" and p["tensors_used"] >= 5
    # every tensor of every sample the device sent is accounted for, up to the STOP's acknowledgement
    assert p["tensors_used"] + p["tensors_discarded"] + p["tensors_unused"] == 5 * p["device"]["samples_sent"]


# -- bad input ---------------------------------------------------------------------------------------
def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgecal: error: "), lines
    return lines[0]


def test_device_that_never_answers_names_port_and_baud(tmp_path, capsys):
    master, slave = os.openpty()  # nothing runs on the master: a board without the firmware
    tty.setraw(slave)
    port = os.ttyname(slave)
    try:
        assert stream("--port", port, "--out", tmp_path / "t.json", "--timeout", 0.6, "--baud", 115200) == 2
    finally:
        os.close(master)
        os.close(slave)
    line = one_error_line(capsys)
    assert port in line and "115200 baud" in line and "0.6 s" in line
    assert not (tmp_path / "t.json").exists()


def test_loop_port_that_only_echoes_is_a_device_that_never_answers(capsys):
    assert stream("--port", "loop://", "--list", "--timeout", 0.3) == 2  # the host reads its own HELLOs back
    assert "loop://: no answer at 921600 baud within 0.3 s" in one_error_line(capsys)


def scripted_device(answer):
    """A pty whose other end is a Python thread answering each host frame with ``answer(frame)`` (wire bytes)."""
    from edgecal.link.decoder import FrameDecoder

    master, slave = os.openpty()
    tty.setraw(slave)
    own = os.dup(master)  # the thread's own descriptor: the caller's, once closed, may be reused by a later port

    def serve():
        dec = FrameDecoder()
        while True:
            try:
                data = os.read(own, 4096)  # EIO once no slave is open any more
            except OSError:
                os.close(own)
                return
            for f in dec.feed(data):
                reply = answer(f)
                if reply:
                    os.write(own, reply)

    threading.Thread(target=serve, daemon=True).start()
    return master, slave


def handshake(tensors, max_payload=1024, table_status=None):
    """An ``answer`` function: a device with these TENSOR_INFO (payload, total) rows."""
    from edgecal.link import frames as F

    hello = struct.pack("<HHHHI", 1, max_payload, 1024, len(tensors), 9) + bytes(16) + b"\x04fake"

    def answer(f):
        if f.type == F.HELLO:
            return F.encode_frame(F.HELLO_ACK, hello)
        if f.type == F.LIST_REQ:
            return b"".join(F.encode_frame(F.TENSOR_INFO, p, seq=1 + i, tensor_id=i, total=t)
                            for i, (p, t) in enumerate(tensors))
        if f.type == F.START:
            return F.encode_frame(F.ACK, bytes([F.START, 0, 0, 0]) + f.payload[:4], seq=10)
        if f.type == F.TABLE_CHUNK and f.flags & F.F_LAST and table_status is not None:
            return F.encode_frame(F.TABLE_ACK, struct.pack("<HHII", table_status, 0, 0, 0), seq=11)
        return b""

    return answer


def info(name: bytes, code: int, *dims: int) -> bytes:
    return bytes([code, len(dims), 0, 0]) + struct.pack(f"<{len(dims)}I", *dims) + bytes([len(name)]) + name


@pytest.mark.parametrize("tensors,max_payload,message", [
    ([(info(b"huge", 3, 1 << 30), 1 << 30)], 1024, "tensor 'huge' is 1073741824 bytes; this host takes at most 67108864"),
    ([(info(b"a", 1, 4), 16), (info(b"a", 1, 2), 8)], 1024, "lists tensor names twice"),
    ([(info(b"a", 1, 4), 16)], 20000, "announced max payload 20000"),
], ids=["huge tensor", "duplicate names", "payload above the offer"])
def test_a_device_with_an_unacceptable_table_is_refused_before_any_allocation(tensors, max_payload, message, capsys):
    master, slave = scripted_device(handshake(tensors, max_payload))
    try:
        assert stream("--port", os.ttyname(slave), "--list") == 2
    finally:
        os.close(slave)
        os.close(master)
    assert message in one_error_line(capsys)


def test_table_refused_by_the_device(capsys):
    master, slave = scripted_device(handshake([(info(b"a", 1, 4), 16)], table_status=5))
    try:
        with SerialHost(os.ttyname(slave)) as src:
            src.open()
            with pytest.raises(LinkError, match="refused the table: the firmware rejected the table"):
                src.push_table(b"ECAL" + bytes(300))
            with pytest.raises(InputError, match="no tensor to stream"):
                src.start([])
    finally:
        os.close(slave)
        os.close(master)


def test_port_that_cannot_be_opened(tmp_path, capsys, monkeypatch):
    assert stream("--port", tmp_path / "ttyNOPE", "--list") == 2
    assert "no such device" in one_error_line(capsys)
    import serial

    def denied(url, **kw):
        raise serial.SerialException(13, f"could not open port {url}: [Errno 13] Permission denied: '{url}'")

    monkeypatch.setattr(serial, "serial_for_url", denied)
    assert stream("--port", "/dev/ttyACM0", "--list") == 2
    line = one_error_line(capsys)
    assert "permission denied" in line and "dialout" in line
    monkeypatch.setattr(serial, "serial_for_url", lambda url, **kw: (_ for _ in ()).throw(
        serial.SerialException(16, f"could not open port {url}: [Errno 16] Device or resource busy")))
    assert stream("--port", "/dev/ttyACM0", "--list") == 2
    assert "the port is busy" in one_error_line(capsys)
    monkeypatch.undo()
    assert stream("--port", "socket://127.0.0.1:1", "--list") == 2  # nothing listens on port 1
    assert "cannot open socket://127.0.0.1:1" in one_error_line(capsys)


def test_wrong_protocol_version_names_both_versions(tmp_path, device, capsys):
    exe2 = build("ecal_device", tmp_path / "v2", defines=("ECL_PROTOCOL_VERSION=2u",))
    dev = Device(exe2, [], tmp_path / "v2.txt")
    try:
        assert stream("--port", dev.url, "--list") == 2
    finally:
        dev.close()
    line = one_error_line(capsys)
    assert "protocol version 2" in line and "version 1" in line


def test_bad_arguments_and_a_state_of_another_model(exe, device, tmp_path, capsys):
    dev = device("--count", 3)
    assert stream("--port", dev.url) == 2
    assert "--out TABLE is required" in one_error_line(capsys)
    assert stream("--port", dev.url, "--out", tmp_path / "t.json", "--tensors", "nope") == 2
    assert "no tensor 'nope'; it has: input, conv1_relu" in one_error_line(capsys)
    other = Calibrator(model_hash="00" * 16)
    other.save_state(tmp_path / "s.ecst")
    assert stream("--port", dev.url, "--out", tmp_path / "t.json", "--state", tmp_path / "s.ecst") == 2
    assert "expected the same model" in one_error_line(capsys)
    assert not (tmp_path / "t.json").exists()


def test_device_that_never_comes_back_ends_the_session_with_what_arrived(exe, device, tmp_path, capsys):
    dev = device("--unplug-at", 6)
    out = tmp_path / "t.json"
    assert stream("--port", dev.url, "--out", out, "--reconnect-timeout", 0.5, "--push") == 2
    err = capsys.readouterr().err
    assert "did not come back within 0.5 s" in err and "cannot push the table, the device is gone" in err
    p = provenance(out)  # the table was written before the push was refused
    assert p["ended"] == "device-gone" and p["tensors_used"] == 5 * 5 + 1 and p["reconnects"] == 1


def test_no_intact_tensor_means_no_table(exe, device, tmp_path, capsys):
    dev = device("--count", 0)
    assert stream("--port", dev.url, "--out", tmp_path / "t.json") == 2
    assert "no intact tensor arrived (finished); nothing to calibrate" in one_error_line(capsys)
    assert stream("--port", dev.url, "--out", tmp_path / "t.json", "--samples", 0) == 2
    assert "--samples 0 / --duration None: expected a positive number" in one_error_line(capsys)
    assert not (tmp_path / "t.json").exists()
