"""`LiveView`: what `stream` shows on stderr while it runs.

Three modes: ``live`` redraws a block in place (the rate, the link's loss counters
and the samples each tensor has received), for a terminal or ``--progress``;
``log`` writes one plain line every ``every`` seconds, for a journal or a log
file, where cursor movements would be noise (the final figures are in the summary
on stdout, so a short run adds nothing to stderr and an error stays one line); ``off`` (``--quiet``)
writes nothing. The block is bounded: at most `MAX_TENSOR_LINES` tensors are listed,
the rest summarised in one line, however many tensors the device declares.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

from ..calibrator import Calibrator
from .common import mb, terminal_safe

MAX_TENSOR_LINES = 8
MODES = ("live", "log", "off")


def _figures(p: dict[str, Any]) -> str:
    rate = p["samples"] / max(p["elapsed"], 1e-9)
    return (f"edgecal: {p['samples']} samples ({rate:.1f}/s), {p['tensors']} tensors, {mb(p['bytes_per_s'])}/s, "
            f"{p['elapsed']:.0f} s")


def _losses(p: dict[str, Any]) -> str:
    return f"{p['frames_missing']} frames lost, {p['frames_corrupt']} corrupt, {p['discarded']} tensors discarded"


class LiveView:
    """Progress of a stream on stderr in one of `MODES`; `update` with the session's figures, `done` once."""

    def __init__(self, cal: Calibrator, mode: str, every: float = 10.0) -> None:
        self.cal, self.mode, self.every = cal, mode, every
        self._drawn = 0  # lines of the block on screen
        self._last = time.monotonic()

    def update(self, p: dict[str, Any]) -> None:
        """Redraw (live) or, when ``every`` seconds have passed, write one line (log)."""
        now = time.monotonic()
        if self.mode == "live":
            self._draw(p)
        elif self.mode == "log" and now - self._last >= self.every:
            self._last = now
            self._write(self._line(p) + "\n")

    def done(self, p: dict[str, Any]) -> None:
        """The final figures, left on screen (live); a log has them in the summary on stdout already."""
        if self.mode == "live":
            self._draw(p)

    def _counts(self) -> list[tuple[str, int]]:
        return [(name, self.cal.samples(name)) for name in self.cal.names()]

    def _line(self, p: dict[str, Any]) -> str:
        counts, line = self._counts(), f"{_figures(p)}, {_losses(p)}"
        if not counts:
            return line
        name, fewest = min(counts, key=lambda c: c[1])
        most = max(c for _, c in counts)
        return f"{line}; samples per tensor {fewest} ({name!r}) to {most}"

    def block(self, p: dict[str, Any]) -> list[str]:
        """The live block's lines: the figures, the link's losses, up to `MAX_TENSOR_LINES` tensors' samples."""
        counts = self._counts()
        width = max((len(terminal_safe(n)) for n, _ in counts[:MAX_TENSOR_LINES]), default=0)
        lines = [_figures(p), f"  link: {_losses(p)}"]
        lines += [f"  {terminal_safe(n).ljust(width)}  {c} samples" for n, c in counts[:MAX_TENSOR_LINES]]
        if len(counts) > MAX_TENSOR_LINES:
            rest = counts[MAX_TENSOR_LINES:]
            name, fewest = min(rest, key=lambda c: c[1])
            lines.append(f"  ... {len(rest)} more tensors, the fewest samples {fewest} ({terminal_safe(repr(name))})")
        return lines

    def _draw(self, p: dict[str, Any]) -> None:
        columns = max(shutil.get_terminal_size().columns - 1, 20)  # a wrapped line would break the redraw
        lines = [terminal_safe(line)[:columns] for line in self.block(p)]
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self._write(up + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        self._drawn = len(lines)

    @staticmethod
    def _write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()
