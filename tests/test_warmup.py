"""`edgecal warmup` fills the Numba cache; an unusable cache is a warning, never a crash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})


@pytest.mark.needs_host  # spawns sys.executable
def test_warmup_writes_the_cache_and_a_second_process_loads_it(tmp_path):
    cache = tmp_path / "numba"
    first = subprocess.run([sys.executable, "-m", "edgecal", "warmup"], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})
    assert first.returncode == 0, first.stderr
    assert "histogram float32" in first.stdout and str(cache) in first.stdout
    files = {p.name for p in cache.rglob("*.nbi")}
    assert any("_fill" in f for f in files) and any("_kl_search" in f for f in files) and any("_conv_acc" in f for f in files)
    # a new process finds every kernel it needs in the cache: every cache lookup hits
    check = run_python("""
        from edgecal.warmup import warm_kernels
        from numba.core.caching import Cache
        loaded = []
        orig_load = Cache.load_overload
        def load(self, *a, **k):
            r = orig_load(self, *a, **k)
            loaded.append(r is not None)
            return r
        Cache.load_overload = load
        warm_kernels()
        print(sum(loaded), len(loaded))
    """, {"NUMBA_CACHE_DIR": str(cache)})
    assert check.returncode == 0, check.stderr
    hits, lookups = map(int, check.stdout.split())
    assert lookups > 0 and hits == lookups


@pytest.mark.needs_host  # spawns sys.executable
def test_unusable_cache_gives_one_warning_and_in_memory_jit(tmp_path):
    # Numba raises at decoration when no cache location is writable (read-only root file
    # system, no HOME). Tests run as root, which can write anywhere, so the failure is
    # reproduced by making numba.njit(cache=True) raise exactly that error.
    done = run_python("""
        import sys, numba
        real = numba.njit
        def njit(*args, **kw):
            if kw.get("cache"):
                raise RuntimeError("cannot cache function '_fill': no locator available for file 'histogram.py'")
            return real(*args, **kw)
        numba.njit = njit
        from edgecal.cli import main
        sys.exit(main(["warmup"]))
    """, {})
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Numba cache unavailable") == 1 and "NUMBA_CACHE_DIR" in done.stderr
    assert "histogram float32" in done.stdout


def test_warm_kernels_takes_the_methods_to_warm_and_keeps_its_sample_out_of_the_log(caplog):
    import logging

    from edgecal.errors import UnknownNameError
    from edgecal.methods import method_names
    from edgecal.warmup import warm_kernels

    assert warm_kernels(256, ["minmax"])[3:] == ["method minmax"]
    level = logging.getLogger("edgecal").level
    with caplog.at_level(logging.WARNING, logger="edgecal"):
        names = warm_kernels(256)
    assert names[3:] == [f"method {m}" for m in method_names()]
    assert [r.getMessage() for r in caplog.records] == []  # kl-refine etc. warn about the tiny sample without this
    assert logging.getLogger("edgecal").level == level
    with pytest.raises(UnknownNameError, match="nosuch"):
        warm_kernels(256, ["nosuch"])
