"""Rebuild docs/report-attn_scores.png, the README's picture of `edgecal report`, from the bundled demo data.

The bundled activations are streamed into a state one sample at a time, as `edgecal demo`
does, and `edgecal report` draws it; the picture of the attention scores is kept.

    .venv/bin/python docs/make_report_example.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from edgecal.calibrator import Calibrator
from edgecal.cli import main
from edgecal.demo import load_sample

DOCS = Path(__file__).resolve().parent
TENSOR = "attn_scores"


def build() -> int:
    cal = Calibrator()
    for name, batch in load_sample().items():
        for row in batch:
            cal.observe(name, row)
    with tempfile.TemporaryDirectory() as tmp:
        cal.save_state(Path(tmp) / "demo.ecst")
        code = main(["report", str(Path(tmp) / "demo.ecst"), "--out", str(Path(tmp) / "report")])
        if code:
            return code
        (picture,) = (Path(tmp) / "report").glob(f"*-{TENSOR}.png")
        shutil.copyfile(picture, DOCS / f"report-{TENSOR}.png")
    print(f"wrote {DOCS / f'report-{TENSOR}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(build())
