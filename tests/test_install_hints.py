"""Messages that name an extra give the command that works from a checkout (`pip install -e '.[extra]'`)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = re.compile(r"pip install ['\"]?edgecal\[")


def texts():
    yield ROOT / "README.md"
    yield from sorted((ROOT / "edgecal").rglob("*.py"))


def test_no_message_or_readme_line_names_the_unpublished_package():
    found = [f"{p.relative_to(ROOT)}:{n}" for p in texts()
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if PUBLISHED.search(line)]
    assert found == []


def test_the_hint_pattern_catches_the_old_form():
    assert PUBLISHED.search("install it with: pip install 'edgecal[onnx]'")
    assert not PUBLISHED.search("install it with: pip install -e '.[onnx]'")
