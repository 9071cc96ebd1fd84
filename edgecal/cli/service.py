"""`daemon` and `warmup`: running edgecal as a service on the device."""

from __future__ import annotations

import argparse
import logging
from typing import Any


def cmd_daemon(args: argparse.Namespace) -> int:
    from ..daemon.service import Daemon

    daemon = Daemon(args.config)  # the whole config is checked here, before anything starts
    logging.getLogger("edgecal").setLevel(logging.INFO)  # stderr goes to the journal under systemd
    return daemon.run()


def cmd_warmup(args: argparse.Namespace) -> int:
    from ..warmup import cache_dir, warm_all

    total = 0.0
    for names, seconds in warm_all():
        total += seconds
        print(f"{seconds:6.2f} s  {names}")
    print(f"{total:6.2f} s  in all; Numba cache: {cache_dir()}")
    return 0


def add_parsers(sub: Any, writer: argparse.ArgumentParser) -> None:
    d = sub.add_parser("daemon", help="run as a service: sources -> histograms -> checkpoints and tables")
    d.add_argument("--config", required=True, metavar="FILE.toml", help="daemon configuration (see scripts/edgecal.toml)")
    d.set_defaults(func=cmd_daemon)
    w = sub.add_parser("warmup", help="compile every kernel into the Numba cache (run once after installing)")
    w.set_defaults(func=cmd_warmup)
