"""`edgecal daemon` as a real process: systemd notifications, signals, crashes, bad configs."""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgecal import Calibrator, CalibrationTable
from edgecal.daemon.service import Daemon, load_checkpoint
from edgecal.sources import Sample

CONFIG = """
[state]
path = "{state}"
checkpoint_interval = {interval}

[output]
path = "{table}"
method = "{method}"
every_samples = {every}

[daemon]
queue_samples = 4
status_interval = 0.2

[[source]]
kind = "spool"
path = "{spool}"
poll_interval = 0.05
drain = {drain}
"""


def write_config(tmp: Path, method: str = "kl", every: int = 0, drain: bool = False, interval: float = 0.2) -> Path:
    (tmp / "spool").mkdir(exist_ok=True)
    cfg = tmp / "edgecal.toml"
    cfg.write_text(CONFIG.format(state=tmp / "state.ecst", table=tmp / "table.json", spool=tmp / "spool",
                                 method=method, every=every, drain=str(drain).lower(), interval=interval))
    return cfg


def drop(spool: Path, i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One sample file, written under a temporary name and renamed into place (as applications must)."""
    arrays = {"conv": np.maximum(rng.standard_normal((4, 8)), 0).astype(np.float32),
              "fc": rng.laplace(size=16).astype(np.float32)}
    tmp = spool / f".s{i:05d}.npz"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, spool / f"s{i:05d}.npz")
    return arrays


def direct_table(samples: list[dict[str, np.ndarray]], method: str = "kl") -> CalibrationTable:
    cal = Calibrator()
    for s in samples:
        cal.observe_many(s)
    return cal.compute(method)


def entries(table: CalibrationTable):
    return [(e.name, e.amax, e.stats.count, e.stats.samples) for e in table.values()]


class Notifications:
    """A NOTIFY_SOCKET, as systemd provides, collecting what the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path
        self.seen: list[str] = []

    def wait_for(self, text: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"daemon exited {proc.returncode}: {proc.stderr.read()}")
            if any(text in m for m in self.seen):
                return next(m for m in self.seen if text in m)
            self.sock.settimeout(0.5)
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
        raise AssertionError(f"no notification containing {text!r}; got {self.seen}")


def start(cfg: Path, notify: Notifications | None = None, watchdog_usec: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if notify:
        env["NOTIFY_SOCKET"] = str(notify.path)
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return subprocess.Popen([sys.executable, "-m", "edgecal", "daemon", "--config", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(caplog) -> list:
    """caplog's records, each once (a record can reach it through the root and the edgecal logger both)."""
    return list({id(r): r for r in caplog.records}.values())


def wait_until(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def spool_empty(spool: Path) -> bool:
    return not [p for p in spool.iterdir() if p.suffix == ".npz" and not p.name.startswith(".")]


@pytest.mark.needs_host  # spawns sys.executable
def test_ready_watchdog_status_table_and_clean_stop(tmp_path):
    cfg = write_config(tmp_path)
    notify = Notifications(tmp_path / "notify")
    proc = start(cfg, notify, watchdog_usec=400_000)
    try:
        notify.wait_for("READY=1", proc=proc)
        rng = np.random.default_rng(0)
        samples = [drop(tmp_path / "spool", i, rng) for i in range(12)]
        wait_until(lambda: spool_empty(tmp_path / "spool"))  # deleted only once checkpointed
        notify.wait_for("WATCHDOG=1")
        assert "samples" in notify.wait_for("STATUS=12 samples")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, proc.stderr.read()
        assert time.monotonic() - started < 10
        notify.wait_for("STOPPING=1")
    finally:
        proc.kill()
    table = CalibrationTable.load(tmp_path / "table.json")
    assert entries(table) == entries(direct_table(samples))
    assert table.provenance["daemon"]["samples"] == 12
    assert Calibrator.load_state(tmp_path / "state.ecst").samples("conv") == 12


@pytest.mark.needs_host  # spawns sys.executable
def test_sigusr1_emits_and_sighup_reloads_keeping_histograms(tmp_path):
    cfg = write_config(tmp_path, method="kl")
    notify = Notifications(tmp_path / "notify")
    proc = start(cfg, notify)
    try:
        notify.wait_for("READY=1", proc=proc)
        rng = np.random.default_rng(1)
        samples = [drop(tmp_path / "spool", i, rng) for i in range(5)]
        wait_until(lambda: spool_empty(tmp_path / "spool"))
        proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: (tmp_path / "table.json").exists())
        assert entries(CalibrationTable.load(tmp_path / "table.json")) == entries(direct_table(samples))
        write_config(tmp_path, method="minmax")
        proc.send_signal(signal.SIGHUP)
        samples += [drop(tmp_path / "spool", 100 + i, rng) for i in range(3)]
        wait_until(lambda: spool_empty(tmp_path / "spool"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    table = CalibrationTable.load(tmp_path / "table.json")
    assert {e.method for e in table.values()} == {"minmax"}
    assert entries(table) == entries(direct_table(samples, "minmax"))  # all 8 samples: histograms survived


class StderrLines:
    """The daemon's stderr, read line by line in a thread while it runs."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        self.thread.start()

    def matching(self, text: str) -> list[str]:
        return [line for line in list(self.lines) if text in line]


BAD_RELOADS = [
    (lambda t: "calibrator = 5\n" + t, "line 1: [calibrator]: expected a table, found 5"),
    (lambda t: "source = [1, 2]\n" + t.split("[[source]]")[0], "line 1: [[source]]: expected an array of tables"),
    (lambda t: t.split("[[source]]")[0] + '[[source]]\nkind = "runner"\nmodel = "m"\ninputs = "a"\nentry_point = "b:c"\n',
     "give exactly one of inputs or entry_point"),
    (lambda t: t.replace("every_samples = 0", "every_samples = 0\nparams = {bins = 3}"), "has no parameter 'bins'"),
    (lambda t: t.replace("queue_samples = 4", "queue_samples = true"), "queue_samples: expected an integer"),
]


@pytest.mark.needs_host  # spawns sys.executable
def test_sighup_with_a_type_wrong_config_keeps_the_old_one_and_says_why_in_one_line(tmp_path):
    cfg = write_config(tmp_path)
    good = cfg.read_text()
    notify = Notifications(tmp_path / "notify")
    proc = start(cfg, notify)
    err = StderrLines(proc)
    rng = np.random.default_rng(7)
    samples = []
    try:
        notify.wait_for("READY=1", proc=proc)
        for k, (edit, why) in enumerate(BAD_RELOADS):
            cfg.write_text(edit(good))
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda: len(err.matching("reload refused")) == k + 1, timeout=20)
            assert why in err.matching("reload refused")[-1]
            samples += [drop(tmp_path / "spool", 10 * k + i, rng) for i in range(2)]
            wait_until(lambda: spool_empty(tmp_path / "spool") or proc.poll() is not None)  # the old source still runs
            assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    err.thread.join(5)
    refused = err.matching("reload refused")
    assert len(refused) == len(BAD_RELOADS) and all(str(cfg) in line for line in refused)
    assert not [line for line in err.lines if "Traceback" in line]
    table = CalibrationTable.load(tmp_path / "table.json")
    assert {e.method for e in table.values()} == {"kl"}  # the old config is still the one in force
    assert entries(table) == entries(direct_table(samples))
    assert Calibrator.load_state(tmp_path / "state.ecst").samples("conv") == 2 * len(BAD_RELOADS)


@pytest.mark.needs_host  # spawns sys.executable
def test_every_samples_writes_tables_and_exhausted_sources_stop_the_daemon(tmp_path):
    cfg = write_config(tmp_path, every=3, drain=True)
    rng = np.random.default_rng(2)
    samples = [drop(tmp_path / "spool", i, rng) for i in range(7)]
    proc = start(cfg)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert spool_empty(tmp_path / "spool")
    table = CalibrationTable.load(tmp_path / "table.json")
    assert entries(table) == entries(direct_table(samples))
    assert table.provenance["daemon"]["tables"] >= 2  # after 3 and 6 samples, then on stop


@pytest.mark.needs_host  # spawns sys.executable
def test_kill_9_at_a_random_moment_loses_nothing_from_a_spool(tmp_path):
    cfg = write_config(tmp_path, interval=0.1)
    rng = np.random.default_rng(3)
    samples = []
    for round_ in range(3):
        proc = start(cfg)
        for i in range(8):
            samples.append(drop(tmp_path / "spool", 8 * round_ + i, rng))
            time.sleep(random.Random(round_ * 10 + i).uniform(0.0, 0.08))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        state = tmp_path / "state.ecst"
        if state.exists():  # whatever the moment, the checkpoint is whole and its counts add up
            cal = Calibrator.load_state(state)
            for name in cal.names():
                h = cal.histogram(name)
                assert int(h.abs_counts().sum()) + h.zeros + h.nans + h.posinf + h.neginf == h.count
    write_config(tmp_path, drain=True)
    final = start(cfg)
    assert final.wait(timeout=120) == 0, final.stderr.read()
    # every file folded exactly once: spool files are deleted only after their data is checkpointed,
    # and a file checkpointed but not yet deleted is recognised by its key and skipped
    assert entries(CalibrationTable.load(tmp_path / "table.json")) == entries(direct_table(samples))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("queue_samples = 4", "queue_samples = 4\nbogus = 1"), r"line 13: \[daemon\] bogus: unknown key"),
        (lambda t: t.replace("queue_samples = 4", "queue_samples = \"many\""), r"line 12: \[daemon\] queue_samples: expected an integer"),
        (lambda t: t.replace('kind = "spool"', 'kind = "usb"'), r"\[\[source\]\] #1 kind: unknown 'usb'; known: .*spool"),
        (lambda t: t.replace('method = "kl"', 'method = "entropy"'), r"\[output\] method: unknown 'entropy'"),
        (lambda t: t.replace("every_samples = 0", "every_samples = 0\nparams = {bins = 3}"), r"line 10: \[output\] params: method 'kl' has no parameter 'bins'"),
        (lambda t: t.replace("drain = false", "drain = false\nport = 3"), r"\[\[source\]\] #1 port: unknown key"),
        (lambda t: re.sub(r'path = ".*state.ecst"', r'path = "bad\\u0000name"', t),
         r"line 3: \[state\] path: expected a file path, found 'bad\\x00name'$"),
        (lambda t: t.replace('method = "kl"', 'method = "kl"\nformat = "nope"'), r"line 9: \[output\] format: unknown format 'nope'"),
        (lambda t: t.replace('method = "kl"', 'method = "kl"\noptions = {bogus = 1}'), r"line 9: \[output\] options: "),
        (lambda t: t.replace("table.json", "table.weird"), r"line 7: \[output\] path: "),
        (lambda t: "calibrator = 5\n" + t, r"line 1: \[calibrator\]: expected a table, found 5$"),
        (lambda t: "source = [1, 2]\n" + t.split("[[source]]")[0], r"line 1: \[\[source\]\]: expected an array of tables"),
        (lambda t: t.replace("[state]", "[[state]]"), r"line 2: \[state\]: expected a table, found \[\{"),
        (lambda t: t.replace("checkpoint_interval = 0.2", "checkpoint_interval = inf"), r"line 4: \[state\] checkpoint_interval: expected a finite number"),
        (lambda t: t.split("[[source]]")[0] + '[[source]]\nkind = "runner"\nmodel = "m.onnx"\ninputs = "a"\nentry_point = "b:c"\n',
         r"line 15: \[\[source\]\] #1: source runner: give exactly one of inputs or entry_point"),
    ],
)
@pytest.mark.needs_host  # spawns sys.executable
def test_bad_config_is_one_error_naming_key_and_line_before_anything_starts(tmp_path, edit, message):
    cfg = write_config(tmp_path)
    cfg.write_text(edit(cfg.read_text()))
    done = subprocess.run([sys.executable, "-m", "edgecal", "daemon", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgecal: error: ") and str(cfg) in lines[0], done.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "state.ecst").exists() and not (tmp_path / "table.json").exists()


@pytest.mark.needs_host  # spawns sys.executable
def test_missing_state_folder_is_a_config_error(tmp_path):
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace(str(tmp_path / "state.ecst"), str(tmp_path / "nope" / "s.ecst")))
    done = subprocess.run([sys.executable, "-m", "edgecal", "daemon", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "[state] path: folder" in done.stderr and "does not exist" in done.stderr


# -- in-process: full disk, damaged checkpoints -------------------------------------------------
def test_disk_full_keeps_the_old_files_logs_and_retries(tmp_path, monkeypatch, caplog):
    cfg = write_config(tmp_path)
    d = Daemon(cfg)
    rng = np.random.default_rng(4)
    drop(tmp_path / "spool", 0, rng)
    d._start_sources()
    wait_until(lambda: not d.queue.empty())
    d._fold(*d.queue.get())
    assert d._checkpoint() and d._emit()
    good_state, good_table = (tmp_path / "state.ecst").read_bytes(), (tmp_path / "table.json").read_bytes()
    d._fold(d.runners[0], Sample({"conv": np.ones(3, np.float32)}))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert not d._checkpoint() and not d._emit()
    assert (tmp_path / "state.ecst").read_bytes() == good_state
    assert (tmp_path / "table.json").read_bytes() == good_table
    assert d.counts["write_errors"] == 2 and "No space left on device" in caplog.text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and "tmp" in p.name] == []
    assert list((tmp_path / "spool").glob("*.npz")) == []  # the file was deleted after the good checkpoint
    monkeypatch.undo()
    assert d._checkpoint() and d._emit()  # space is back: the retry succeeds
    assert Calibrator.load_state(tmp_path / "state.ecst").stats("conv").count == 32 + 3
    for r in d.runners:
        r.stop()


def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    path = tmp_path / "state.ecst"
    old, new = Calibrator(bins=16), Calibrator(bins=16)
    old.observe("t", np.arange(5.0))
    new.observe("t", np.arange(9.0))
    (tmp_path / "state.ecst.prev").write_bytes(old.to_bytes())
    data = new.to_bytes()
    for cut in range(0, len(data), 7):
        path.write_bytes(data[:cut])
        assert load_checkpoint(path, 16, None) == old
    for pos in range(len(data)):
        broken = bytearray(data)
        broken[pos] ^= 0x40
        path.write_bytes(bytes(broken))
        assert load_checkpoint(path, 16, None) == old
    path.write_bytes(data)
    assert load_checkpoint(path, 16, None) == new
    (tmp_path / "state.ecst.prev").write_bytes(b"junk")
    path.write_bytes(b"junk")
    assert load_checkpoint(path, 16, "m").names() == [] and "unusable" in caplog.text


@pytest.mark.needs_host  # runs systemd-analyze of the host
def test_systemd_units_verify(tmp_path):
    analyze = "/usr/bin/systemd-analyze"
    if not os.path.exists(analyze):
        pytest.skip("systemd-analyze is not installed")
    exe = Path(sys.executable).with_name("edgecal")
    units = Path(__file__).resolve().parent.parent / "scripts" / "systemd"
    for unit in sorted(units.glob("*.service")):
        text = unit.read_text()
        assert "/opt/edgecal/venv/bin/edgecal" in text
        (tmp_path / unit.name).write_text(text.replace("/opt/edgecal/venv/bin/edgecal", str(exe)))
    for unit in sorted(tmp_path.glob("*.service")):
        done = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)
        assert done.returncode == 0, (unit.name, done.stderr)
    daemon = (units / "edgecal.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "StateDirectory=edgecal", "CacheDirectory=edgecal", "NUMBA_CACHE_DIR="):
        assert line in daemon
    boot = (units / "edgecal-boot.service").read_text()
    for line in ("Type=oneshot", "ConditionPathExists=!", "TimeoutStartSec="):
        assert line in boot


def test_the_example_config_is_valid(tmp_path):
    from edgecal.daemon.settings import load_settings

    example = Path(__file__).resolve().parent.parent / "scripts" / "edgecal.toml"
    text = example.read_text().replace("/var/lib/edgecal", str(tmp_path)).replace("/var/spool/edgecal", str(tmp_path))
    (tmp_path / "edgecal.toml").write_text(text)
    s = load_settings(tmp_path / "edgecal.toml")
    assert s.output.every_seconds == 3600.0 and [(src.kind, dict(src.options), src.label) for src in s.sources] == [
        ("spool", {"path": str(tmp_path), "poll_interval": 0.5, "min_age": 0.0, "max_file_bytes": 256 << 20,
                   "max_pending": 10000, "drain": False}, "spool#1")]
    blocks = text.split("\n\n")
    live = [b for b in blocks if b.startswith("# [[source]]") and ('"socket"' in b or '"serial"' in b)]
    assert len(live) == 2
    for block in live:  # the commented socket and serial examples are valid once uncommented
        text = text.replace(block, "\n".join(line[2:] for line in block.splitlines()))
    (tmp_path / "edgecal.toml").write_text(text)
    assert [src.kind for src in load_settings(tmp_path / "edgecal.toml").sources] == ["spool", "socket", "serial"]


def huge_counter_state(cal: Calibrator, value: int = 1 << 63) -> bytes:
    """``cal``'s state with its first histogram's total and zero counter set to ``value``, every CRC valid."""
    import struct
    import zlib

    data = cal.to_bytes()
    head = Calibrator._HEAD
    raw = bytearray(zlib.decompress(data[head.size:-4]))
    (mlen,) = struct.unpack_from("<I", raw)
    hist = 4 + mlen
    hsize = len(cal.histogram(cal.names()[0]).to_bytes())
    struct.pack_into("<QQ", raw, hist + 16, value, value)  # count, zeros: they still add up
    struct.pack_into("<I", raw, hist + hsize - 4, zlib.crc32(bytes(raw[hist:hist + hsize - 4])))
    payload = zlib.compress(bytes(raw))
    _, schema, _, bins, count, _ = head.unpack_from(data)
    body = head.pack(Calibrator._MAGIC, schema, 0, bins, count, len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def test_a_checkpoint_with_a_counter_of_2_63_falls_back_to_the_previous_one(tmp_path, caplog):
    path = tmp_path / "state.ecst"
    old, bomb = Calibrator(bins=16), Calibrator(bins=16)
    old.observe("t", np.arange(5.0))
    bomb.observe("t", np.zeros(3))
    path.write_bytes(huge_counter_state(bomb))
    (tmp_path / "state.ecst.prev").write_bytes(old.to_bytes())
    assert load_checkpoint(path, 16, None) == old
    assert "state.ecst is unusable (" in caplog.text
    (tmp_path / "state.ecst.prev").write_bytes(huge_counter_state(bomb, (1 << 64) - 1))
    assert load_checkpoint(path, 16, "m").names() == []  # neither is usable: a fresh start, not a crash


@pytest.mark.needs_host  # spawns sys.executable
def test_the_daemon_starts_from_prev_when_the_checkpoint_holds_a_counter_of_2_63(tmp_path):
    cfg = write_config(tmp_path, drain=True)
    cfg.write_text(cfg.read_text().replace("[state]", "[calibrator]\nbins = 16\n\n[state]"))
    rng = np.random.default_rng(8)
    before = [drop(tmp_path / "spool", i, rng) for i in range(2)]
    prev = Calibrator(bins=16)
    for s in before:
        prev.observe_many(s)
    bomb = Calibrator(bins=16)
    bomb.observe("conv", np.zeros(3, np.float32))
    (tmp_path / "state.ecst").write_bytes(huge_counter_state(bomb))
    (tmp_path / "state.ecst.prev").write_bytes(prev.to_bytes())
    for p in (tmp_path / "spool").glob("*.npz"):
        p.unlink()
    for i in range(3):
        drop(tmp_path / "spool", 10 + i, rng)
    done = subprocess.run([sys.executable, "-m", "edgecal", "daemon", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "state.ecst is unusable (" in done.stderr
    assert Calibrator.load_state(tmp_path / "state.ecst").samples("conv") == 5  # 2 from .prev, 3 new


def unit_writable_paths(text: str) -> list[Path]:
    """The folders a unit may write under ProtectSystem=strict."""
    roots = {"StateDirectory": "/var/lib", "CacheDirectory": "/var/cache", "RuntimeDirectory": "/run",
             "LogsDirectory": "/var/log"}
    out = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        for item in value.split():
            if key in roots:
                out.append(Path(roots[key]) / item)
            elif key == "ReadWritePaths":
                out.append(Path(item.lstrip("-+")))
    return out


def example_written_paths(text: str) -> dict[str, Path]:
    """Every folder the example config (its commented sources enabled) makes the daemon write in."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    for block in text.split("\n\n"):  # the commented [[source]] examples, enabled
        if block.startswith("# [[source]]"):
            text = text.replace(block, "\n".join(line[2:] for line in block.splitlines()))
    cfg = tomllib.loads(text)
    out = {"[state] path": Path(cfg["state"]["path"]).parent, "[output] path": Path(cfg["output"]["path"]).parent}
    for i, src in enumerate(cfg["source"]):
        if src["kind"] == "spool":
            out[f"spool #{i + 1}"] = Path(src["path"])  # files deleted, bad ones moved to rejected/
        elif src["kind"] == "socket":
            out[f"socket #{i + 1}"] = Path(src["path"]).parent  # the socket file is created and removed
    return out


def test_the_daemon_unit_may_write_every_path_the_example_config_writes():
    root = Path(__file__).resolve().parent.parent / "scripts"
    unit = (root / "systemd" / "edgecal.service").read_text()
    assert "ProtectSystem=strict" in unit
    writable = unit_writable_paths(unit)
    written = example_written_paths((root / "edgecal.toml").read_text())
    assert {"[state] path", "[output] path", "spool #1", "socket #2"} <= set(written)
    for what, path in written.items():
        assert any(path == w or w in path.parents for w in writable), f"{what}: {path} is read-only under {writable}"
    cache = re.search(r"NUMBA_CACHE_DIR=%C/(\S+)", unit).group(1)
    assert any(Path("/var/cache") / cache == w or w in (Path("/var/cache") / cache).parents for w in writable)
