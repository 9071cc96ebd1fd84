#!/usr/bin/env python3
"""Rewrite the golden table files in tests/golden/ from tests/golden_table.py.

Run it only when a format changes on purpose, then review the diff and commit it:
the tests compare every writer's bytes with these files and never rewrite them.

    .venv/bin/python scripts/regen_golden.py [--check]

``--check`` writes nothing and exits 1 if a file differs. tests/golden/real_trt.cache
is a hand-written fixture and is not touched. tests/golden/state.ecst is the calibrator
state of tests/golden_state.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"

# file name -> (format, writer options)
FILES = {
    "table.json": ("json", {}),
    "table.ecal": ("ecal", {}),
    "table.cache": ("trt", {}),
    "table.table": ("ncnn", {"skip_unsupported": True}),  # the golden table has a name with spaces
    "table.flatbuffers": ("ort", {}),
    "table.h": ("c", {}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from golden_table import golden_table

    from edgecal.formats import get_format

    table = golden_table()
    GOLDEN.mkdir(exist_ok=True)
    stale = []
    for filename, (fmt, options) in FILES.items():
        data = get_format(fmt).write(table, **options)
        path = GOLDEN / filename
        if path.exists() and path.read_bytes() == data:
            continue
        stale.append(filename)
        if not args.check:
            path.write_bytes(data)
    from golden_state import golden_calibrator

    state = golden_calibrator().to_bytes()
    if not (GOLDEN / "state.ecst").exists() or (GOLDEN / "state.ecst").read_bytes() != state:
        stale.append("state.ecst")
        if not args.check:
            (GOLDEN / "state.ecst").write_bytes(state)
    verb = "differ" if args.check else "rewritten"
    print(f"{len(stale)} golden file(s) {verb}: {', '.join(stale) or 'none'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
