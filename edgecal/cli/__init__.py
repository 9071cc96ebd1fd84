"""The `edgecal` command line. Thin: parse, call the library, print.

Exit codes: 0 success, 2 bad input (a one-line ``edgecal: error: ...`` on stderr,
no partial output), 130 interrupted (progress kept in ``--state`` when given).
Each subcommand lives in a module of this package with its parser block.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from .._jit import on_cold_compile
from .._version import __version__
from ..errors import EdgecalError

log = logging.getLogger("edgecal")

# Every command: the module of this package that defines it, and its one-line help. Only the
# module of the command being run is imported (with numpy and the library behind it), so
# `edgecal --help` starts without numpy; tests/test_lazy_imports.py checks this table against
# the parsers the modules build.
COMMANDS: dict[str, tuple[str, str]] = {
    "calibrate": ("files_parsers", "calibrate .npy/.npz files or folders into a table"),
    "export": ("files_parsers", "convert a table to another format, or compute one from a state (-m, -p, --scheme)"),
    "show": ("files_parsers", "summarise a table or a state file"),
    "merge": ("files_parsers", "merge state files (exact)"),
    "check": ("examples", "run a float ONNX model in float and in int8 with a table, compare accuracy"),
    "demo": ("examples", "calibrate the bundled sample and compare methods"),
    "quantize": ("onnx", "write the int8 (QDQ) model ONNX Runtime makes with a table's ranges"),
    "stream": ("stream", "calibrate from a device on a serial link (firmware_interface)"),
    "daemon": ("service", ("run as a service: sources -> histograms -> checkpoints and tables; `daemon status` "
                           "shows its checkpoint and table")),
    "warmup": ("service", "compile every kernel into the Numba cache (run once after installing)"),
    "report": ("report", ("an HTML page and a PNG per tensor: histograms, each method's range, clipping, SQNR, "
                          "flags (extra: report)")),
    "ports": ("ports", "list serial ports and the boards behind their USB ids"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command (``command`` None), or of ``command`` alone with the others as stubs.

    A stub has its name and one-line help, enough for ``edgecal --help``; ``command`` "" builds
    stubs only, and a name not in `COMMANDS` builds every parser (the error lists every command).
    """
    p = argparse.ArgumentParser(prog="edgecal", description="Streaming int8 calibration for edge devices.")
    p.add_argument("--version", action="version", version=f"edgecal {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = COMMANDS[command][0] if command in COMMANDS else ("" if command == "" else None)
    writer = _writer() if wanted != "" else argparse.ArgumentParser(add_help=False)
    for name in dict.fromkeys(module for module, _ in COMMANDS.values()):
        if wanted is None or name == wanted:
            importlib.import_module(f"{__name__}.{name}").add_parsers(sub, writer)
        else:
            for cmd, (module, summary) in COMMANDS.items():
                if module == name:
                    sub.add_parser(cmd, help=summary, add_help=False)
    return p


def _writer() -> argparse.ArgumentParser:
    """The options of commands that write a table (imports the format registry)."""
    from ..names import format_names

    writer = argparse.ArgumentParser(add_help=False)
    writer.add_argument("--format", help=f"table format: {', '.join(format_names())} (default: from the --out suffix)")
    writer.add_argument("-O", "--option", action="append", metavar="KEY=VALUE", help="format option, e.g. trt_version=100300")
    return writer


def _command_in(argv: Sequence[str]) -> str:
    """The command ``argv`` names: its first word that is not an option ("" when none)."""
    return next((arg for arg in argv if not arg.startswith("-")), "")


class _StderrFormatter(logging.Formatter):
    """``edgecal: <level>: <message>``, the message escaped: names in it come from files, sockets and devices."""

    def format(self, record: logging.LogRecord) -> str:
        from .common import terminal_safe

        return f"edgecal: {record.levelname.lower()}: {terminal_safe(record.getMessage())}"


def _compile_notice() -> None:
    print("edgecal: compiling kernels once for this machine (a few seconds, more on a small board); "
          "later runs load them from the cache and start at once", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StderrFormatter())
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False
    on_cold_compile(_compile_notice)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except EdgecalError as err:
        from .common import terminal_safe

        print(f"edgecal: error: {terminal_safe(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgecal: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        log.removeHandler(handler)
