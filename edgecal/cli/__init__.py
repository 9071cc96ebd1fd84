"""The `edgecal` command line. Thin: parse, call the library, print.

Exit codes: 0 success, 2 bad input (a one-line ``edgecal: error: ...`` on stderr,
no partial output), 130 interrupted (progress kept in ``--state`` when given).
Each subcommand lives in a module of this package with its parser block.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from .._jit import on_cold_compile
from .ports import add_parsers as add_ports_parsers
from .._version import __version__
from ..errors import EdgecalError
from ..formats import format_names
from .common import terminal_safe
from . import examples, files, onnx, report, service, stream

log = logging.getLogger("edgecal")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgecal", description="Streaming int8 calibration for edge devices.")
    p.add_argument("--version", action="version", version=f"edgecal {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    writer = argparse.ArgumentParser(add_help=False)
    writer.add_argument("--format", help=f"table format: {', '.join(format_names())} (default: from the --out suffix)")
    writer.add_argument("-O", "--option", action="append", metavar="KEY=VALUE", help="format option, e.g. trt_version=100300")
    for module in (files, examples, onnx, stream, service, report):
        module.add_parsers(sub, writer)
    add_ports_parsers(sub, writer)
    return p


class _StderrFormatter(logging.Formatter):
    """``edgecal: <level>: <message>``, the message escaped: names in it come from files, sockets and devices."""

    def format(self, record: logging.LogRecord) -> str:
        return f"edgecal: {record.levelname.lower()}: {terminal_safe(record.getMessage())}"


def _compile_notice() -> None:
    print("edgecal: compiling kernels once for this machine (a few seconds, more on a small board); "
          "later runs load them from the cache and start at once", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
