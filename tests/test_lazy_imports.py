"""Numba is imported only when a kernel runs: `edgecal --help` and the socket client stay light.

Each check runs in a fresh interpreter, since this test process has numba loaded already.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from edgecal.sources import SocketSource


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ), check=False)


HELP = """
    import argparse, contextlib, io, sys
    from edgecal.cli import build_parser, main
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helped = []
    for argv in [["--help"]] + [[name, "--help"] for name in sub.choices]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main(argv)
            except SystemExit as stop:
                assert stop.code == 0, (argv, stop.code)
        assert "usage: edgecal" in out.getvalue(), argv
        helped.append(argv[0])
    print(len(helped), "numba" in sys.modules)
"""


def test_help_of_every_command_leaves_numba_unimported():
    done = run_python(HELP)
    assert done.returncode == 0, done.stderr
    helped, numba_loaded = done.stdout.split()
    assert int(helped) > 5 and numba_loaded == "False"


TOP_HELP = """
    import contextlib, io, sys
    from edgecal.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(["--help"])
        except SystemExit as stop:
            assert stop.code == 0, stop.code
    print(sorted(m for m in ("numpy", "numba") if m in sys.modules), out.getvalue().count("usage: edgecal"))
"""


def test_top_level_help_imports_neither_numpy_nor_numba():
    done = run_python(TOP_HELP)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[] 1"


def test_the_table_of_commands_matches_the_parsers_the_modules_build():
    """`edgecal --help` lists COMMANDS without importing the modules: same names, order and help as theirs."""
    import argparse

    from edgecal.cli import COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert [(a.dest, a.help) for a in sub._choices_actions] == [(n, h) for n, (_, h) in COMMANDS.items()]
    for name, (module, _) in COMMANDS.items():
        assert sub.choices[name].get_default("func").__module__ == f"edgecal.cli.{module}", name


def test_a_command_parser_built_alone_is_the_one_built_with_every_command():
    """`main` builds the parser of the command it runs only; its help and defaults are those of the full parser."""
    import argparse

    from edgecal.cli import COMMANDS, build_parser

    def choices(parser: argparse.ArgumentParser) -> dict:
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    full = choices(build_parser())
    for name in COMMANDS:
        alone = choices(build_parser(name))[name]
        assert alone.format_help() == full[name].format_help(), name
        assert alone.get_default("func") is full[name].get_default("func"), name


CLIENT = """
    import sys
    import numpy as np
    from edgecal.sources.client import SocketClient
    from edgecal import _jit
    with SocketClient(sys.argv[1], timeout=10) as client:
        sent = client.push({"act": np.arange(-3, 4, dtype=np.float32), "q": np.array([[1, -2]], np.int8)})
    print(sent, "numba" in sys.modules, _jit.numba_loaded())
"""


def test_socket_client_sends_a_sample_without_numba(tmp_path):
    src = SocketSource(path=str(tmp_path / "edgecal.sock"))
    src.open()
    try:
        done = run_python(CLIENT, src.path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["True", "False", "False"]
        deadline, sample = time.monotonic() + 20, None
        while sample is None and time.monotonic() < deadline:
            sample = src.read(0.2)
    finally:
        src.close()
    assert sample is not None, "the pushed sample never reached the listener"
    assert np.array_equal(sample.arrays["act"], np.arange(-3, 4, dtype=np.float32))
    assert np.array_equal(sample.arrays["q"], np.array([[1, -2]], np.int8))


KERNELS = """
    import sys
    import numpy as np
    from edgecal import _jit, histogram
    from edgecal.link import cobs
    stand_in = cobs._decode_blocks
    assert isinstance(stand_in, _jit.LazyKernel) and "numba" not in sys.modules
    print(cobs.cobs_decode(bytes.fromhex("0311220233")).hex())
    print(type(stand_in).__name__, type(cobs._decode_blocks).__name__, type(histogram.__dict__[sys.argv[1]]).__name__)
    h = histogram.StreamingHistogram(64)
    h.update(np.array([1.0, -2.0, 0.0, np.nan], np.float32))
    print(h.count, _jit.numba_loaded())
"""


def test_first_kernel_call_compiles_every_kernel_and_rebinds_the_module_globals():
    done = run_python(KERNELS, "_fold")
    assert done.returncode == 0, done.stderr
    decoded, types, count = done.stdout.splitlines()
    assert decoded == "11220033"
    assert types.split() == ["LazyKernel", "CPUDispatcher", "CPUDispatcher"]
    assert count.split() == ["4", "True"]



COLD = """
    import sys
    import numpy as np
    from edgecal import _jit
    calls = []
    _jit.on_cold_compile(lambda: calls.append("numba" in sys.modules))
    before = "numba" in sys.modules
    from edgecal import Calibrator
    cal = Calibrator(64)
    cal.observe("a", np.arange(5, dtype=np.float32))
    cal.observe("b", np.arange(5, dtype=np.float64))  # another kernel signature: no second call
    print(before, calls)
"""


@pytest.mark.slow  # compiles the histogram kernels into an empty cache: 10-30 s
def test_the_cold_compile_callback_waits_for_numba_and_fires_once_per_cold_cache(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    cold = subprocess.run([sys.executable, "-c", textwrap.dedent(COLD)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env}, check=False)
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout.split("\n")[0] == "False [True]"  # registered without numba; called once, numba loaded
    warm = subprocess.run([sys.executable, "-c", textwrap.dedent(COLD)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env}, check=False)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.split("\n")[0] == "False []"  # every kernel came from the cache
