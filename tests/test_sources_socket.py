"""The socket source with real client processes, damaged streams, caps, and the client helper."""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from socket_samples import expected

from edgecal.errors import InputError
from edgecal.link.frames import F_LAST, SAMPLE_END, TENSOR_CHUNK, TENSOR_INFO, encode_frame
from edgecal.sources import SocketClient, SocketSource, SourceError, push_sample

N = 15

# Client process k pushes samples i = 0..N-1 made by socket_samples.expected(k, i).
CLIENT = """
import sys
sys.path.insert(0, sys.argv[4])
from socket_samples import expected
from edgecal.sources.socket import SocketClient, push_sample
path, k, persistent = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if persistent:
    with SocketClient(path, timeout=10) as client:
        ok = sum(client.push(expected(k, i)) for i in range(%d))
else:
    ok = sum(push_sample(path, expected(k, i), timeout=10) for i in range(%d))
print(ok)
""" % (N, N)


@pytest.fixture
def listening(tmp_path):
    sources = []

    def make(**config):
        src = SocketSource(path=str(tmp_path / "edgecal.sock"), **config)
        src.open()
        sources.append(src)
        return src

    yield make
    for src in sources:
        src.close()


def collect(src: SocketSource, count: int, timeout: float = 20.0) -> list:
    out, deadline = [], time.monotonic() + timeout
    while len(out) < count:
        assert time.monotonic() < deadline, f"only {len(out)} of {count} samples arrived"
        sample = src.read(0.2)
        if sample is not None:
            out.append(sample)
    return out


@pytest.mark.needs_host  # spawns sys.executable
def test_samples_pushed_by_two_processes_arrive_intact(listening):
    src = listening()
    path = src.path
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660 and SocketSource.LIVE
    here = str(Path(__file__).parent)
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, path, str(k), str(k), here], stdout=subprocess.PIPE,
                              text=True) for k in (0, 1)]
    samples = collect(src, 2 * N)
    outputs = [p.communicate(timeout=20)[0].strip() for p in procs]
    assert outputs == [str(N), str(N)] and [p.returncode for p in procs] == [0, 0]
    order = {0: [], 1: []}
    for sample in samples:
        k, i = sample.arrays["id"].tolist()
        order[k].append(i)
        want = expected(k, i)
        assert sorted(sample.arrays) == sorted(want)
        for name, array in want.items():
            got = sample.arrays[name]
            assert got.shape == array.shape and np.array_equal(got, array), (k, i, name)
    assert sorted(order[0]) == list(range(N))  # push_sample: a connection per sample, any order
    assert order[1] == list(range(N))  # one connection: in order; nothing twice, nothing lost
    stats = src.stats()
    assert stats["samples"] == 2 * N and stats["tensors_discarded"] == 0 and stats["frames_corrupt"] == 0
    assert stats["clients_accepted"] == N + 1  # push_sample connects per sample, the client once
    src.close()
    assert not os.path.exists(path)


def frames_of(table, samples, first_seq=0):
    """Frames of a table [(name, array)] and samples [[array per tensor]], numbered from ``first_seq``."""
    out, seq = [], first_seq

    def frame(ftype, payload=b"", **fields):
        nonlocal seq
        out.append(encode_frame(ftype, payload, seq=seq, **fields))
        seq += 1

    for tid, (name, a) in enumerate(table):
        raw = name.encode()
        payload = struct.pack("<BBH", 1, a.ndim, 0) + struct.pack(f"<{a.ndim}I", *a.shape) + bytes([len(raw)]) + raw
        frame(TENSOR_INFO, payload, tensor_id=tid, total=a.nbytes)
    for sid, arrays in enumerate(samples):
        for tid, a in enumerate(arrays):
            data = a.astype("<f4").tobytes()
            for off in range(0, len(data), 128):
                last = F_LAST if off + 128 >= len(data) else 0
                frame(TENSOR_CHUNK, data[off:off + 128], sample_id=sid, tensor_id=tid, offset=off,
                      total=len(data), flags=last)
        frame(SAMPLE_END, struct.pack("<H", len(arrays)), sample_id=sid)
    return out


def closed_by_peer(sock) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


def raw_client(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def test_damage_is_counted_and_only_intact_tensors_are_delivered(listening):
    src = listening()
    a0, b0 = np.arange(64, dtype=np.float32), np.full((2, 40), -1.5, np.float32)
    a1, b1 = a0 + 100, b0 * 2
    wire = frames_of([("a", a0), ("b", b0)], [[a0, b0], [a1, b1]])
    info, s0, s1 = wire[:2], wire[2:8], wire[8:]  # per sample: a in 2 chunks, b in 3, SAMPLE_END
    bad = bytearray(s0[3])
    bad[60] ^= 0x40  # a flipped bit inside the second chunk of b in sample 0
    with raw_client(src.path) as sock:
        sock.sendall(b"\x00junk from a confused writer\x00" + b"".join(info) + b"".join(s0[:3]) + bytes(bad)
                     + b"".join(s0[4:]) + b"".join(s1))
        first, second = collect(src, 2)
    assert list(first.arrays) == ["a"] and np.array_equal(first.arrays["a"], a0)  # b of sample 0 discarded whole
    assert np.array_equal(second.arrays["a"], a1) and np.array_equal(second.arrays["b"], b1)
    stats = src.stats()
    assert (stats["samples"], stats["samples_partial"], stats["tensors_used"], stats["tensors_discarded"]) == (2, 1, 3, 1)
    assert stats["frames_corrupt"] == 2 and stats["frames_missing"] == 1 and stats["resync_bytes"] > 0


@pytest.mark.parametrize("config, table, message", [
    ({"max_tensor_bytes": 1000}, [("a", np.zeros(300, np.float32))], "1200 bytes; this socket takes at most 1000 per tensor"),
    ({"max_sample_bytes": 1000}, [("a", np.zeros(200, np.float32)), ("b", np.zeros(200, np.float32))],
     "holds 1600 bytes per sample; this socket takes at most 1000 (max_sample_bytes)"),
    ({}, [("a", np.zeros(4, np.float32)), ("a", np.zeros(4, np.float32))], "names a tensor twice"),
    ({}, [], "TENSOR_CHUNK before a complete tensor table"),
])
def test_a_client_over_a_cap_or_out_of_order_is_closed_and_others_carry_on(listening, caplog, config, table, message):
    src = listening(**config)
    wire = frames_of(table, [[a for _, a in table]] if table else [])
    if not table:
        wire = [encode_frame(TENSOR_CHUNK, bytes(16), seq=0, total=16, flags=F_LAST)]
    with caplog.at_level(logging.ERROR, "edgecal"), raw_client(src.path) as sock:
        sock.sendall(b"".join(wire))
        assert src.read(0.5) is None
        assert closed_by_peer(sock)
    assert message in caplog.text and "pid " in caplog.text
    assert src.stats()["client_errors"] == 1 and src.stats()["clients_active"] == 0
    assert push_sample(src.path, {"ok": np.ones(3, np.float32)})
    assert list(collect(src, 1)[0].arrays) == ["ok"]


@pytest.mark.needs_host  # spawns sys.executable
def test_a_new_table_changes_shapes_between_samples(listening):
    src = listening()
    with SocketClient(src.path) as client:
        assert client.push({"x": np.ones((2, 2))}) and client.push({"x": np.ones((3, 3)), "y": np.zeros(1, np.uint8)})
        first, second = collect(src, 2)
    assert first.arrays["x"].shape == (2, 2) and second.arrays["x"].shape == (3, 3)
    assert second.arrays["y"].dtype == np.uint8 and src.stats()["samples_partial"] == 0


def test_clients_above_max_clients_wait_until_a_slot_frees(listening):
    src = listening(max_clients=1)
    sample = b"".join(frames_of([("v", np.ones(3, np.float32))], [[np.ones(3, np.float32)]]))
    with raw_client(src.path) as first, raw_client(src.path) as second:
        second.sendall(sample)  # connected in the backlog; its bytes wait in the kernel
        assert src.read(0.3) is None
        assert src.stats()["clients_active"] == 1 and src.stats()["clients_accepted"] == 1
        first.close()
        assert np.array_equal(collect(src, 1)[0].arrays["v"], np.ones(3, np.float32))
        assert src.stats()["clients_accepted"] == 2


def test_a_stale_socket_file_is_replaced_and_a_live_one_or_a_file_is_refused(tmp_path):
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a crash leaves the file behind
    src = SocketSource(path=path)
    src.open()
    try:
        with pytest.raises(InputError, match="another process listens on it"):
            SocketSource(path=path).open()
    finally:
        src.close()
    (tmp_path / "plain").write_text("mine")
    with pytest.raises(InputError, match="not a socket is in the way"):
        SocketSource(path=str(tmp_path / "plain")).open()
    assert (tmp_path / "plain").read_text() == "mine"
    with pytest.raises(InputError, match="cannot create it"):
        SocketSource(path=str(tmp_path / "missing" / "s.sock")).open()


def test_a_removed_socket_file_is_a_source_error_and_open_listens_again(listening):
    src = listening()
    os.unlink(src.path)
    with pytest.raises(SourceError, match="removed or replaced"):
        src.read(2.5)
    src.open()
    assert push_sample(src.path, {"x": np.ones(2)})
    assert collect(src, 1)[0].arrays["x"].tolist() == [1.0, 1.0]
    assert src.stats()["reopens"] == 1


@pytest.mark.needs_host  # spawns sys.executable
def test_pushing_never_raises_for_a_missing_or_stalled_daemon(tmp_path):
    assert push_sample(str(tmp_path / "nobody.sock"), {"x": np.ones(2)}) is False
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.bind(str(tmp_path / "stalled.sock"))
    stalled.listen(1)  # accepts connections, never reads
    try:
        client = SocketClient(str(tmp_path / "stalled.sock"), timeout=0.2)
        start = time.monotonic()
        assert client.push({"x": np.zeros(4 << 20, np.float32)}) is False
        assert time.monotonic() - start < 5 and "timed out" in client.last_error
        assert (client.sent, client.failed) == (0, 1)
    finally:
        stalled.close()


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((0, 3))}, "at least one element"),
    ({"x": np.ones(3, np.complex64)}, "dtype complex64 cannot be sent"),
    ({"x": np.ones(3, bool)}, "dtype bool cannot be sent"),
    ({"n" * 65: np.ones(3)}, "expected 1-64 UTF-8 bytes"),
    ({}, "a sample of 0 tensors"),
])
def test_arrays_that_cannot_be_sent_raise_value_error(tmp_path, arrays, message):
    with pytest.raises(ValueError, match=message):
        push_sample(str(tmp_path / "nobody.sock"), arrays)


@pytest.mark.needs_host  # spawns sys.executable
def test_silent_clients_are_closed_after_idle_timeout_and_the_pushes_behind_them_arrive(listening, caplog):
    src = listening(max_clients=4, idle_timeout=0.5)
    silent = [raw_client(src.path) for _ in range(4)]  # they connect and never send: every slot taken
    try:
        assert src.read(0.2) is None and src.stats()["clients_active"] == 4
        here = str(Path(__file__).parent)
        proc = subprocess.Popen([sys.executable, "-c", CLIENT, src.path, "0", "0", here], stdout=subprocess.PIPE,
                                text=True)
        samples = collect(src, N)
        assert proc.communicate(timeout=20)[0].strip() == str(N) and proc.returncode == 0
        assert sorted(s.arrays["id"].tolist()[1] for s in samples) == list(range(N))
        assert src.stats()["clients_idle_closed"] == 4
        assert all(s.recv(1) == b"" for s in silent)  # closed by the daemon
        assert re.search(r"closed [1-4] connections that sent nothing for 0.5 s \(idle_timeout\)", caplog.text)
    finally:
        for s in silent:
            s.close()


def test_a_connection_that_sends_is_not_idle(listening):
    src = listening(idle_timeout=0.4)
    sample = b"".join(frames_of([("v", np.ones(3, np.float32))], [[np.ones(3, np.float32)]]))
    with raw_client(src.path) as busy:
        for _ in range(4):  # 1.2 s in all, never 0.4 s silent
            busy.sendall(sample[:10])
            assert src.read(0.3) is None
            sample = sample[10:] + sample[:10]
        assert src.stats()["clients_idle_closed"] == 0 and src.stats()["clients_active"] == 1


@pytest.mark.needs_host  # spawns sys.executable
def test_a_persistent_client_closed_for_idleness_connects_again_on_its_next_push(listening):
    src = listening(idle_timeout=0.3)
    with SocketClient(src.path, timeout=5) as client:
        assert client.push({"x": np.arange(3.0)})
        assert collect(src, 1)[0].arrays["x"].tolist() == [0.0, 1.0, 2.0]
        assert src.read(0.8) is None and src.stats()["clients_idle_closed"] == 1
        assert client.push({"x": np.arange(4.0)}), client.last_error
        assert collect(src, 1)[0].arrays["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
        assert client.failed == 0 and src.stats()["clients_accepted"] == 2
