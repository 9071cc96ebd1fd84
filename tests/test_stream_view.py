"""What `stream` shows on stderr while it runs: the live block (--progress or a terminal),
plain periodic lines (not a terminal), nothing (--quiet).

The device is the scripted one of test_link_host on a real pty; the figures shown are
checked against the state file the same run wrote, read back with the Python API."""

from __future__ import annotations

import re

from test_link_host import fake  # noqa: F401  (fixture)

from edgecal import Calibrator
from edgecal.cli import main
from edgecal.cli.live import MAX_TENSOR_LINES, LiveView

ESC = "\x1b["


def _stream(dev, tmp_path, *extra):
    return main(["stream", "--port", dev.url, "-o", str(tmp_path / "t.json"), "--state", str(tmp_path / "s.ecst"),
                 *extra])


def _last_block(err: str) -> list[str]:
    """The lines of the last drawing of the block (each drawing ends by clearing below it)."""
    last = err.rstrip(f"{ESC}J").split(f"{ESC}J")[-1]
    last = re.sub(r"\x1b\[\d+F", "", last)
    return [line.replace(f"{ESC}K", "") for line in last.splitlines()]


def test_progress_draws_a_block_with_samples_per_tensor(fake, tmp_path, capsys):  # noqa: F811
    dev = fake(lengths=(4, 8, 2), count=40)
    assert _stream(dev, tmp_path, "--progress") == 0
    err = capsys.readouterr().err
    assert f"{ESC}K" in err  # drawn in place
    block = _last_block(err)
    state = Calibrator.load_state(tmp_path / "s.ecst")
    assert re.match(r"edgecal: 40 samples \([\d.]+/s\), 120 tensors, ", block[0])
    assert block[1] == "  link: 0 frames lost, 0 corrupt, 0 tensors discarded"
    shown = {line.split()[0]: int(line.split()[1]) for line in block[2:]}
    assert shown == {name: state.samples(name) for name in state.names()} == {"t0": 40, "t1": 40, "t2": 40}


def test_without_a_terminal_progress_is_plain_lines(fake, tmp_path, capsys):  # noqa: F811
    dev = fake(count=30)
    assert _stream(dev, tmp_path, "--log-every", "0", "-m", "minmax") == 0
    err = capsys.readouterr().err
    assert ESC not in err and "\r" not in err
    lines = err.splitlines()
    assert lines and all(line.startswith("edgecal: ") for line in lines)
    state = Calibrator.load_state(tmp_path / "s.ecst")
    counts = [state.samples(n) for n in state.names()]
    assert lines[-1].startswith("edgecal: 30 samples") and "0 frames lost, 0 corrupt" in lines[-1]
    assert lines[-1].endswith(f"samples per tensor {min(counts)} ('t0') to {max(counts)}")


def test_quiet_shows_nothing(fake, tmp_path, capsys):  # noqa: F811
    dev = fake(count=10)
    assert _stream(dev, tmp_path, "-q", "--progress", "-m", "minmax") == 0  # minmax: no clipping warning
    assert capsys.readouterr().err == ""


def test_the_block_stays_bounded_with_many_tensors(capsys):
    cal = Calibrator(64)
    for i in range(MAX_TENSOR_LINES + 5):
        for _ in range(i + 1):
            cal.observe(f"t{i:02d}", [1.0, -1.0])
    p = {"samples": 3, "tensors": 3, "discarded": 0, "bytes_per_s": 10.0, "frames_missing": 1, "frames_corrupt": 2,
         "elapsed": 1.0}
    block = LiveView(cal, "live").block(p)
    assert len(block) == 2 + MAX_TENSOR_LINES + 1
    assert block[-1] == f"  ... 5 more tensors, the fewest samples {MAX_TENSOR_LINES + 1} ('t{MAX_TENSOR_LINES:02d}')"
    assert block[1] == "  link: 1 frames lost, 2 corrupt, 0 tensors discarded"


def test_a_terminal_on_stderr_gets_the_live_block_unasked(fake, tmp_path):  # noqa: F811
    """`edgecal stream` in its own process whose stderr is a real pty (no --progress)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import edgecal

    dev = fake(count=20)
    master, slave = os.openpty()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(edgecal.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "edgecal", "stream", "--port", dev.url, "-m", "minmax", "-o",
                             str(tmp_path / "t.json")], stderr=slave, stdout=subprocess.PIPE, env=env)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the process closed the pty
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0 and b"streamed 20 complete samples" in proc.stdout.read()
    proc.stdout.close()
    text = seen.decode()
    assert "\x1b[K" in text and "edgecal: 20 samples (" in text and "  link: 0 frames lost, 0 corrupt" in text
    assert "  t0  20 samples" in text
