"""The README's Python blocks run verbatim, as a user would paste them (in an empty folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_python_blocks():
    assert BLOCKS, "README.md lost its Python examples"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
@pytest.mark.needs_host  # spawns sys.executable
def test_readme_python_block_runs_verbatim(index, tmp_path):
    done = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
