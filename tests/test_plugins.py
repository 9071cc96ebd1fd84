"""Methods, formats and sources from entry points: one new module each, plus nothing else."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

from edgecal import plugins
from edgecal.errors import UnknownNameError
from edgecal.formats import registry as format_registry
from edgecal.methods import registry as method_registry
from edgecal.sources import base as source_base

ROOT = Path(__file__).resolve().parents[1]

METHOD_MODULE = '''
from edgecal.methods import register


@register("halfmax")
def halfmax(hist):
    """Half of max |x| (a method plugin)."""
    return hist.amax / 2
'''
FORMAT_MODULE = '''
from edgecal.formats import Format, register_format


def write(table):
    return "".join(f"{name}={entry.amax!r}\\n" for name, entry in table.items()).encode()


register_format(Format(name="newfmt", suffixes=(".nf",), write=write, description="name=amax lines"))
'''
SOURCE_MODULE = '''
import numpy as np

from edgecal.config import Field
from edgecal.sources import Sample, Source, SourceExhausted, register_source
from edgecal.sources.fields import checked_config


@register_source
class Ramp(Source):
    KIND = "ramp"
    FIELDS = {"count": Field(int, 3)}

    def __init__(self, **config):
        super().__init__(**checked_config(self.KIND, self.FIELDS, config))
        self.done = 0

    def open(self):
        pass

    def read(self, timeout):
        if self.done == self.config["count"]:
            raise SourceExhausted("ramp done")
        self.done += 1
        return Sample({"ramp": np.arange(8, dtype=np.float32) * self.done})
'''
ENTRY_POINTS = """
[edgecal.methods]
halfmax = plugin_halfmax
broken = plugin_missing_module

[edgecal.formats]
newfmt = plugin_newfmt

[edgecal.sources]
ramp = plugin_ramp
"""


def write_distribution(folder: Path) -> None:
    """A distribution as an installer leaves it: its modules and a .dist-info with entry_points.txt."""
    (folder / "plugin_halfmax.py").write_text(METHOD_MODULE)
    (folder / "plugin_newfmt.py").write_text(FORMAT_MODULE)
    (folder / "plugin_ramp.py").write_text(SOURCE_MODULE)
    info = folder / "edgecal_example_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgecal-example-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)


def edgecal_cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "edgecal", *args], capture_output=True, text=True, env=env,
                          cwd=folder, timeout=300, check=False)


@pytest.mark.needs_host  # spawns sys.executable
def test_a_new_method_format_and_source_are_one_module_each(tmp_path):
    write_distribution(tmp_path)
    x = np.linspace(-4.0, 8.0, 97, dtype=np.float32)
    np.save(tmp_path / "act.npy", x)
    done = edgecal_cli(tmp_path, "calibrate", "act.npy", "-m", "halfmax", "--format", "newfmt", "-o", "t.nf")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t.nf").read_text() == "act=4.0\n"  # half of max |x| = 8
    assert "plugin edgecal.methods 'broken' (plugin_missing_module) skipped: ModuleNotFoundError" in done.stderr
    assert len([line for line in done.stderr.splitlines() if "broken" in line]) == 1
    helped = edgecal_cli(tmp_path, "calibrate", "--help")  # names from the entry points, no plugin imported
    assert helped.returncode == 0 and "halfmax" in helped.stdout and "newfmt" in helped.stdout, helped.stderr
    assert "skipped" not in helped.stderr

    (tmp_path / "edgecal.toml").write_text(textwrap.dedent(f"""
        [state]
        path = "{tmp_path / 'state.ecst'}"
        [output]
        path = "{tmp_path / 'table.json'}"
        method = "halfmax"
        [[source]]
        kind = "ramp"
        count = 4
        """))
    done = edgecal_cli(tmp_path, "daemon", "--config", "edgecal.toml")
    assert done.returncode == 0, done.stderr
    entry = json.loads((tmp_path / "table.json").read_text())["tensors"][0]
    assert entry["name"] == "ramp" and entry["method"] == "halfmax" and entry["amax"] == 14.0  # 7 * 4 / 2


@pytest.fixture
def fresh_registries(monkeypatch):
    """Registries and loaded groups as they were, whatever a test registers."""
    monkeypatch.setattr(method_registry, "_METHODS", dict(method_registry._METHODS))
    monkeypatch.setattr(format_registry, "_FORMATS", dict(format_registry._FORMATS))
    monkeypatch.setattr(source_base, "_SOURCES", dict(source_base._SOURCES))
    monkeypatch.setattr(plugins, "_loaded", set())
    yield monkeypatch
    plugins.reset()


def fake_entry_points(monkeypatch, points: dict[str, list[tuple[str, str]]]) -> list[str]:
    calls: list[str] = []

    def entry_points(group: str) -> list[EntryPoint]:
        calls.append(group)
        return [EntryPoint(name, value, group) for name, value in points.get(group, [])]

    monkeypatch.setattr(plugins, "entry_points", entry_points)
    return calls


def test_objects_named_by_entry_points_are_registered_under_their_names(fresh_registries, caplog):
    calls = fake_entry_points(fresh_registries, {
        "edgecal.methods": [("median_like", "edgecal.methods.basic:minmax")],
        "edgecal.formats": [("json", "edgecal.formats.jsonfmt")],  # a module: it registered itself
        "edgecal.sources": [("memory2", "edgecal.sources.memory:MemorySource")],
    })
    assert "median_like" in method_registry.method_names()
    assert method_registry.get_method("median_like").fn is method_registry.get_method("minmax").fn
    assert format_registry.format_names() == sorted(format_registry._FORMATS)
    assert source_base.source_class("memory").__name__ == "MemorySource"
    method_registry.method_names()
    format_registry.get_format("json")
    assert calls == ["edgecal.methods", "edgecal.formats", "edgecal.sources"]  # each group loaded once
    assert not caplog.records


@pytest.mark.parametrize("group, value, message", [
    ("edgecal.methods", "json:dumps_not_here", "AttributeError"),
    ("edgecal.methods", "math:pi", "TypeError: expected a module or a method function, found float"),
    ("edgecal.formats", "math:pi", "TypeError: expected a module or an edgecal.formats.Format, found float"),
    ("edgecal.sources", "math:sqrt", "TypeError: expected a module or an edgecal.sources.Source subclass"),
    ("edgecal.sources", "no_such_module_here", "ModuleNotFoundError: No module named 'no_such_module_here'"),
])
def test_a_broken_plugin_is_one_warning_naming_it_and_the_built_ins_stay(fresh_registries, caplog, group, value,
                                                                          message):
    fake_entry_points(fresh_registries, {group: [("bad", value)]})
    with caplog.at_level(logging.WARNING, logger="edgecal"):
        names = {"edgecal.methods": method_registry.method_names, "edgecal.formats": format_registry.format_names,
                 "edgecal.sources": source_base.source_kinds}[group]()
    assert "bad" not in names and len(names) >= 3
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith(f"plugin {group} 'bad' ({value}) skipped: {message}")
    assert "\n" not in caplog.records[0].getMessage()
    with pytest.raises(UnknownNameError):
        {"edgecal.methods": method_registry.get_method, "edgecal.formats": format_registry.get_format,
         "edgecal.sources": source_base.source_class}[group]("bad")


def test_the_calibrator_takes_a_methods_one_sign_parameters_from_its_registration(fresh_registries):
    from edgecal import Calibrator

    seen: list[dict] = []

    def spy(hist, levels: int = 7):
        """Records its parameters."""
        seen.append({"levels": levels})
        return hist.amax

    method_registry.register("spy", one_sign={"levels": 99})(spy)
    cal = Calibrator(256)
    cal.observe("pos", np.linspace(0.0, 3.0, 50))
    cal.observe("both", np.linspace(-1.0, 3.0, 50))
    table = cal.compute("spy", scheme="tflite")
    assert table["pos"].params == {"levels": 99} and table["both"].params == {"levels": 7}
    assert cal.compute("spy", scheme="tflite", levels=5)["pos"].params == {"levels": 5}  # the caller's value wins
    assert cal.compute("spy")["pos"].params == {"levels": 7}  # symmetric: no override
    with pytest.raises(TypeError, match="one_sign names 'depth', which is not a parameter"):
        method_registry.register("spy2", one_sign={"depth": 1})(spy)
