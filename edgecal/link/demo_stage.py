"""The serial stage of ``edgecal demo``: the C example device streams over a pty to the host.

The example device (firmware_interface/examples) is built with the host's gcc and
run as a separate process on a pty pair, exactly as `edgecal stream` would meet a
board; a bit is flipped every 25 frames so the link has something to recover from.
The table that arrives is compared with the one computed directly from the tensors
the device reports it sent intact (its --truth log and --dump mode, no link). The
stage returns text lines; the CLI prints them.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import tty
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..calibrator import Calibrator
from ..table import CalibrationTable
from .build import ROOT, build, compiler
from .errors import LinkError
from .session import StreamSession
from .host import SerialHost

SAMPLES = 40
FLIP_EVERY = 25


@dataclass
class SerialStage:
    """What the serial stage did, or why it was skipped."""

    skipped: str = ""
    port: str = ""
    table: CalibrationTable | None = None
    direct: CalibrationTable | None = None
    provenance: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The stage's report, for printing."""
        if self.skipped:
            return [f"serial stage skipped: {self.skipped}"]
        assert self.table is not None and self.direct is not None
        p, same = self.provenance, _same_entries(self.table, self.direct)
        return [
            f"serial stage: the C example device (firmware_interface/examples) streamed {SAMPLES} samples over a pty"
            f" ({self.port}) to the host, one bit flipped every {FLIP_EVERY} frames",
            f"  firmware {p['firmware']}, link protocol {p['protocol']}, {len(self.table)} tensors",
            f"  tensors used {p['tensors_used']}, discarded {p['tensors_discarded']} ({p['frames_missing']} frames lost,"
            f" {p['frames_corrupt']} corrupt, {p['resync_bytes']} bytes skipped to resynchronise)",
            f"  table over the link == table computed directly from the intact tensors (kl): {'yes' if same else 'NO'}",
            "  the same with a board: edgecal stream --port /dev/ttyACM0 --out table.ecal [--push]",
        ]


def _same_entries(a: CalibrationTable, b: CalibrationTable) -> bool:
    return [(e.name, e.amax, e.scale, e.stats) for e in a.values()] == [(e.name, e.amax, e.scale, e.stats) for e in b.values()]


def _direct_table(exe: Path, truth: Path, names: list[str], dtypes: list[tuple[np.dtype, tuple]]) -> CalibrationTable:
    """The kl table of exactly the tensors the device says it sent intact (no link involved)."""
    raw = subprocess.run([str(exe), "--dump", str(SAMPLES)], capture_output=True, check=True, timeout=60).stdout
    sizes = [dt.itemsize * int(np.prod(shape)) for dt, shape in dtypes]
    cal = Calibrator()
    for line in truth.read_text().splitlines():
        kind, *rest = line.split()
        if kind == "intact":
            sample, t = int(rest[0]), int(rest[1])
            start = sample * sum(sizes) + sum(sizes[:t])
            dt, shape = dtypes[t]
            cal.observe(names[t], np.frombuffer(raw[start : start + sizes[t]], dtype=dt).reshape(shape))
    return cal.compute()


def run_serial_stage() -> SerialStage:
    """Run the stage; a missing compiler or source tree skips it with the reason."""
    if compiler() is None:
        return SerialStage(skipped="no C compiler (install gcc) to build the example device")
    if not ROOT.is_dir():
        return SerialStage(skipped=f"firmware_interface/ is not next to the installed package ({ROOT})")
    with tempfile.TemporaryDirectory(prefix="edgecal-serial-") as tmp:
        try:
            exe = build("ecal_device", tmp)
        except LinkError as err:
            return SerialStage(skipped=str(err).splitlines()[0])
        truth = Path(tmp) / "truth.txt"
        master, slave = os.openpty()
        tty.setraw(slave)  # raw before the device writes anything
        args = ["--fd", str(master), "--count", str(SAMPLES), "--flip-every", str(FLIP_EVERY), "--truth", str(truth)]
        proc = subprocess.Popen([str(exe), *args], pass_fds=[master])
        os.close(master)
        try:
            with SerialHost(os.ttyname(slave)) as src:
                info = src.open()
                cal = Calibrator()
                result = StreamSession(src, cal, max_loss=1.0).run()
            table = cal.compute()
        finally:
            proc.terminate()
            proc.wait()
            os.close(slave)
        names = [t.name for t in info.tensors]
        direct = _direct_table(exe, truth, names, [(t.dtype, t.shape) for t in info.tensors])
        return SerialStage(port=src.url, table=table, direct=direct, provenance=result.provenance)
