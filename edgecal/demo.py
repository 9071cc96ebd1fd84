"""`edgecal demo`: calibrate the bundled sample and compare methods.

The sample (`edgecal/data/demo_activations.npz`, made by scripts/make_demo_data.py)
holds four tensors of different character. Each is streamed into a `Calibrator`
one batch row at a time, exactly as live activations would arrive; the table of the
default method is written in every format, and every method's threshold, clipping and SQNR are
reported side by side: every registered method (plugins included), the default first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .calibrator import Calibrator
from .packagedata import load_npz
from .formats import format_names, get_format
from .methods import DEFAULT_METHOD
from .methods.registry import demo_methods
from .metrics import clipped_fraction, sqnr_db
from .table import CalibrationTable

def load_sample() -> dict[str, np.ndarray]:
    """The bundled activations, by tensor name."""
    return load_npz("demo_activations.npz")


@dataclass(frozen=True)
class DemoRow:
    """One tensor's comparison across methods."""

    name: str
    values: int
    amax: dict[str, float]
    scale: float
    clipped: dict[str, float]
    sqnr: dict[str, float]
    flags: tuple[str, ...]


@dataclass(frozen=True)
class DemoReport:
    methods: tuple[str, ...]
    rows: list[DemoRow]
    written: dict[str, Path]
    table: CalibrationTable


def run_demo(out_dir: Path) -> DemoReport:
    """Calibrate the sample, write the default method's table in every format to ``out_dir``."""
    sample = load_sample()
    cal = Calibrator()
    for name, batch in sample.items():
        for row in batch:  # one sample at a time, as a live source delivers them
            cal.observe(name, row)
    methods = tuple(demo_methods())
    tables = {m: cal.compute(m) for m in methods}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in format_names():
        path = out_dir / f"table{get_format(fmt).suffixes[0]}"
        tables[DEFAULT_METHOD].save(path, format=fmt)
        written[fmt] = path
    rows = []
    for name, x in sample.items():
        entries = {m: tables[m][name] for m in methods}
        rows.append(
            DemoRow(
                name=name,
                values=int(x.size),
                amax={m: e.amax for m, e in entries.items()},
                scale=entries[DEFAULT_METHOD].scale,
                clipped={m: clipped_fraction(x, e) for m, e in entries.items()},
                sqnr={m: sqnr_db(x, e) for m, e in entries.items()},
                flags=entries[DEFAULT_METHOD].flags,
            )
        )
    return DemoReport(methods, rows, written, tables[DEFAULT_METHOD])
