"""`daemon` and `warmup`: running edgecal as a service on the device."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..errors import InputError
from .common import fmt, print_rows, say
from .jsonout import emit, state_tensors


def cmd_daemon(args: argparse.Namespace) -> int:
    if args.action == "status":
        return cmd_daemon_status(args)
    if args.json:
        raise InputError("--json applies to `edgecal daemon status`; the running daemon logs to stderr")
    from ..daemon.service import Daemon

    daemon = Daemon(args.config)  # the whole config is checked here, before anything starts
    logging.getLogger("edgecal").setLevel(logging.INFO)  # stderr goes to the journal under systemd
    return daemon.run()


def cmd_daemon_status(args: argparse.Namespace) -> int:
    """The daemon's checkpoint and table as found on disk; exit 2 when either is damaged."""
    from ..daemon.status import read_status

    st = read_status(args.config)
    if args.json:
        _status_json(st)
    else:
        _status_text(st)
    if not st.ok:
        damaged = [*st.state_errors, *([st.table_error] if st.table_error else [])]
        raise InputError(f"{'; '.join(damaged)}; expected whole files (a restart resumes from the other "
                         "checkpoint, or from nothing)")
    return 0


def _status_json(st: Any) -> None:
    from dataclasses import asdict

    state = None if st.state is None else {"bins": st.state.bins, "consumed": len(st.state.consumed),
                                           "model_hash": st.state.model_hash, "tensors": state_tensors(st.state)}
    table = None if st.table is None else {**st.table.meta(), "tensors": [e.to_dict() for e in st.table.values()]}
    emit("daemon status", ok=st.ok, config=st.config,
         checkpoint={**asdict(st.checkpoint), "previous": asdict(st.previous), "loaded_from": st.state_from,
                     "errors": st.state_errors, "state": state},
         output={**asdict(st.output), "format": st.table_format, "readable": st.table_readable,
                 "error": st.table_error, "table": table})


def _age(facts: Any) -> str:
    return f"written {facts.modified} ({facts.age_seconds:.0f} s ago)" if facts.exists else "not written yet"


def _status_text(st: Any) -> None:
    say(f"config {st.config}")
    say(f"checkpoint {st.checkpoint.path}: {_age(st.checkpoint)}; previous {_age(st.previous)}")
    for err in st.state_errors:
        say(f"  unusable: {err}")
    if st.state is not None:
        cal = st.state
        say(f"  resumes from {st.state_from}: {len(cal.names())} tensors, {cal.bins} bins, "
            f"{len(cal.consumed)} inputs consumed, model {cal.model_hash or '-'}")
        rows = [("  tensor", "arrays", "values", "nonfinite", "min", "max")]
        for name in cal.names():
            s = cal.stats(name)
            rows.append((f"  {name}", str(s.samples), str(s.count), str(s.nonfinite), fmt(s.min), fmt(s.max)))
        if len(rows) > 1:
            print_rows(rows)
    say(f"table {st.output.path} ({st.table_format}): {_age(st.output)}")
    if st.table_error:
        say(f"  unusable: {st.table_error}")
    elif st.table is not None:
        samples = st.table.provenance.get("daemon", {}).get("samples")
        note = f", from {samples} samples" if samples is not None else ""
        say(f"  {len(st.table)} tensors, created {st.table.created}{note}")


def cmd_warmup(args: argparse.Namespace) -> int:
    from ..warmup import cache_dir, warm_all

    total = 0.0
    for names, seconds in warm_all():
        total += seconds
        print(f"{seconds:6.2f} s  {names}")
    print(f"{total:6.2f} s  in all; Numba cache: {cache_dir()}")
    return 0


def add_parsers(sub: Any, writer: argparse.ArgumentParser) -> None:
    d = sub.add_parser("daemon", help="run as a service: sources -> histograms -> checkpoints and tables; "
                       "`daemon status` shows its checkpoint and table")
    d.add_argument("action", nargs="?", default="run", choices=("run", "status"),
                   help="run (default) the daemon, or show the status of its checkpoint and table")
    d.add_argument("--config", required=True, metavar="FILE.toml", help="daemon configuration (see scripts/edgecal.toml)")
    d.add_argument("--json", action="store_true", help="with status: print it as JSON (schema in the README)")
    d.set_defaults(func=cmd_daemon)
    w = sub.add_parser("warmup", help="compile every kernel into the Numba cache (run once after installing)")
    w.set_defaults(func=cmd_warmup)
