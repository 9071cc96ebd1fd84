"""Helpers of the link tests: the C example device as a real process, its truth log, references.

Nothing here decodes frames: the reference tables come from the device's --dump mode
(the same model code, no link in between) and its --truth log (which tensors it sent
intact, which it damaged or dropped).
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
import tty
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecal import Calibrator
from edgecal.methods import DEFAULT_METHOD

# The example device's tensor table (firmware_interface/examples/model.c).
TENSORS = [("input", "<f4", (1, 64)), ("conv1_relu", "<f4", (1, 8, 8, 8)), ("fc1", "<f4", (1, 128)),
           ("logits", "<f4", (1, 10)), ("fc1_q", "i1", (1, 128))]
NAMES = [t[0] for t in TENSORS]
SAMPLE_BYTES = sum(np.dtype(d).itemsize * int(np.prod(s)) for _, d, s in TENSORS)


def dump(exe: Path, first: int, count: int) -> list[dict[str, np.ndarray]]:
    """Tensors of inputs first..first+count-1, straight from the model (no link)."""
    raw = subprocess.run([str(exe), "--dump", str(count), "--input-offset", str(first)], capture_output=True,
                         check=True, timeout=60).stdout
    assert len(raw) == count * SAMPLE_BYTES
    out, pos = [], 0
    for _ in range(count):
        sample = {}
        for name, dtype, shape in TENSORS:
            n = np.dtype(dtype).itemsize * int(np.prod(shape))
            sample[name] = np.frombuffer(raw[pos : pos + n], dtype=dtype).reshape(shape)
            pos += n
        out.append(sample)
    return out


@dataclass
class Truth:
    """What a device process says it did (--truth)."""

    intact: list[tuple[int, int]] = field(default_factory=list)  # (input, tensor id)
    damaged: list[tuple[int, int]] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    samples: dict[tuple[int, int], int] = field(default_factory=dict)  # (boot, sample id) -> input
    faults: Counter = field(default_factory=Counter)
    boots: list[int] = field(default_factory=list)
    final: bool = False

    @property
    def link_faults(self) -> int:
        """Faults that cost a frame (each leaves one sequence gap)."""
        return sum(self.faults[k] for k in ("flip", "drop_bytes", "cut", "lose"))


def read_truth(*paths: Path) -> Truth:
    t = Truth()
    for path in paths:
        for line in Path(path).read_text().splitlines():
            kind, *rest = line.split()
            if kind == "boot":
                t.boots.append(int(rest[0]))
            elif kind == "sample":
                t.samples[(t.boots[-1], int(rest[1]))] = int(rest[0])
            elif kind in ("intact", "damaged"):
                getattr(t, kind).append((int(rest[0]), int(rest[1])))
            elif kind == "dropped":
                t.dropped.append(int(rest[0]))
            elif kind == "fault":
                t.faults[rest[0]] += 1
            elif kind == "final":
                t.final = True
    return t


def reference(exe: Path, pairs: list[tuple[int, int]], method: str = DEFAULT_METHOD):
    """The table computed directly from exactly these (input, tensor) pairs."""
    cal = Calibrator()
    inputs = sorted({i for i, _ in pairs})
    data = {}
    for start in sorted({i // 1000 * 1000 for i in inputs}):  # inputs come in blocks per device process
        block = [i for i in inputs if start <= i < start + 1000]
        for k, sample in enumerate(dump(exe, block[0], block[-1] - block[0] + 1)):
            data[block[0] + k] = sample
    for i, t in sorted(pairs):
        cal.observe(NAMES[t], data[i][NAMES[t]])
    return cal.compute(method)


def entries(table) -> list[tuple]:
    return [(e.name, e.amax, e.scale, e.stats) for e in table.values()]


class Device:
    """One run of the example device on a pty pair or a TCP port; stopped by `close`."""

    def __init__(self, exe: Path, args: list[str], truth: Path, transport: str = "pty") -> None:
        self.truth = truth
        self.slave: int | None = None
        cmd = [str(exe), "--truth", str(truth), *args]
        if transport == "pty":
            master, self.slave = os.openpty()
            tty.setraw(self.slave)  # before anything is written: the slave starts in cooked mode
            self.proc = subprocess.Popen([*cmd, "--fd", str(master)], pass_fds=[master])
            os.close(master)  # only the device holds the master: its exit is a hang-up for the host
            self.url = os.ttyname(self.slave)
        else:
            self.proc = subprocess.Popen([*cmd, "--tcp", "0"], stdout=subprocess.PIPE, text=True)
            ready, _, _ = select.select([self.proc.stdout], [], [], 10)
            assert ready, "device did not start listening"
            port = re.search(r":(\d+)", self.proc.stdout.readline()).group(1)
            self.url = f"socket://127.0.0.1:{port}"

    def wait_exit(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.slave is not None:
            os.close(self.slave)
            self.slave = None


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:
    """Bounded wait on a condition (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def freestanding_object(source: str, folder: Path) -> tuple[Path, set[str]]:
    """``firmware_interface/src/<source>`` compiled freestanding, warning-free (asserted), and the libc symbols
    it leaves undefined: what a microcontroller build must provide."""
    from edgecal.link.build import ROOT, WARNINGS, compiler

    obj = folder / (Path(source).stem + ".o")
    done = subprocess.run([compiler(), *WARNINGS, "-O2", "-ffreestanding", f"-I{ROOT / 'include'}", "-c",
                           str(ROOT / "src" / source), "-o", str(obj)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    undefined = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split()
    return obj, set(undefined) - {"U"}
