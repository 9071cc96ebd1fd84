"""Daemon [output] params bounded when the config is read, and table or loop failures that must not lose data."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from edgecal.config import ConfigError
from edgecal.daemon.service import Daemon
from edgecal.daemon.settings import load_settings
from edgecal.methods import get_method

from test_daemon import records, write_config

def with_params(tmp_path, params: str):
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("every_samples = 0", f"every_samples = 0\nparams = {params}"))
    return cfg


def test_an_out_of_bounds_parameter_is_a_config_error_naming_the_params_line(tmp_path):
    cfg = with_params(tmp_path, "{num_levels = 1000000000}")
    with pytest.raises(ConfigError, match=r"edgecal.toml: line 10: \[output\] params: method 'kl' parameter "
                                          r"'num_levels' must be in \[1, 65536\], found 1000000000$"):
        load_settings(cfg)
    assert load_settings(with_params(tmp_path, "{num_levels = 256}")).output.params == {"num_levels": 256}


def test_whatever_resolve_raises_is_a_config_error_not_a_crash(tmp_path, monkeypatch):
    def resolve(self, params):
        raise TypeError("'<=' not supported between instances of 'str' and 'int'")

    monkeypatch.setattr(type(get_method("kl")), "resolve", resolve)
    with pytest.raises(ConfigError, match=r"line 10: \[output\] params: '<=' not supported"):
        load_settings(with_params(tmp_path, '{num_levels = "many"}'))


def test_a_reload_with_an_out_of_bounds_parameter_keeps_the_running_params(tmp_path, caplog):
    cfg = with_params(tmp_path, "{num_levels = 128}")
    d = Daemon(cfg)
    running = d.settings
    with_params(tmp_path, "{num_levels = 1000000000}")
    d._reload()
    assert d.settings is running and d.settings.output.params == {"num_levels": 128}
    refused = [r.getMessage() for r in records(caplog) if "reload refused" in r.getMessage()]
    assert len(refused) == 1 and "num_levels" in refused[0] and "\n" not in refused[0]


@pytest.mark.needs_host  # spawns sys.executable
def test_edgecal_daemon_refuses_a_billion_kl_levels_at_once(tmp_path):
    cfg = with_params(tmp_path, "{num_levels = 1000000000}")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "edgecal", "daemon", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and time.monotonic() - started < 60
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "line 10: [output] params:" in lines[0] and "num_levels" in lines[0], done.stderr


def test_a_table_that_cannot_be_computed_is_logged_and_retried_not_fatal(tmp_path, monkeypatch, caplog):
    import numpy as np

    from edgecal.sources import Sample

    d = Daemon(write_config(tmp_path))
    d._fold(type("R", (), {"source": d.sources[0], "label": "spool#1"})(), Sample({"t": np.arange(5.0)}))

    def broken(*args, **kwargs):
        raise TypeError("'<=' not supported between instances of 'str' and 'int'")

    monkeypatch.setattr(d.cal, "compute", broken)
    assert d._emit() is False and d.counts["write_errors"] == 1 and d.due["emit_time"] is not None
    assert "writing table" in caplog.text and "TypeError" in caplog.text
    monkeypatch.undo()
    assert d._emit() and (tmp_path / "table.json").exists()


def test_an_unexpected_failure_in_the_loop_checkpoints_before_the_daemon_exits(tmp_path, monkeypatch):
    import numpy as np

    from edgecal import Calibrator
    from edgecal.sources import Sample

    d = Daemon(write_config(tmp_path))
    d._fold(type("R", (), {"source": d.sources[0], "label": "spool#1"})(), Sample({"t": np.arange(5.0)}))

    def step():
        raise RuntimeError("a bug")

    monkeypatch.setattr(d, "_step", step)
    try:
        with pytest.raises(RuntimeError, match="a bug"):
            d.run()
    finally:
        for r in d.runners:
            r.stop()
    assert Calibrator.load_state(tmp_path / "state.ecst").samples("t") == 1


def test_a_config_without_sources_is_refused(tmp_path):
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().split("[[source]]")[0])
    with pytest.raises(ConfigError, match=r"edgecal.toml: no \[\[source\]\] table; expected at least one activation source$"):
        load_settings(cfg)
