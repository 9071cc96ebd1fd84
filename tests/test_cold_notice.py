"""The one-line notice before kernels compile into an empty Numba cache, and its absence once warm.

Each run is a fresh process with its own NUMBA_CACHE_DIR, as a first command after
installing is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import edgecal

NOTICE = "edgecal: compiling kernels once for this machine"


def _run(cache: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(Path(edgecal.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    env.pop("NUMBA_DISABLE_JIT", None)
    return subprocess.run([sys.executable, "-m", "edgecal", *argv], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def test_a_cold_cache_prints_the_notice_once_and_a_warm_one_nothing(tmp_path):
    np.save(tmp_path / "a.npy", np.linspace(-3, 5, 1000, dtype=np.float32))
    argv = ("calibrate", str(tmp_path / "a.npy"), "-m", "minmax", "-o", str(tmp_path / "t.json"))
    cold = _run(tmp_path / "cache", *argv)
    assert cold.returncode == 0, cold.stderr
    assert cold.stderr.count(NOTICE) == 1 and cold.stderr.startswith(NOTICE)
    assert any((tmp_path / "cache").rglob("*.nbi"))  # the kernels went into the fresh cache
    warm = _run(tmp_path / "cache", *argv)
    assert warm.returncode == 0 and warm.stderr == ""
    assert cold.stdout == warm.stdout  # the notice never reaches stdout


def test_a_command_that_compiles_nothing_prints_no_notice(tmp_path):
    done = _run(tmp_path / "empty-cache", "ports", "--json")
    assert done.returncode == 0 and NOTICE not in done.stderr
