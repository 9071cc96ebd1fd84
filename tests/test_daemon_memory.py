"""The daemon's service loop in this process, fed by memory sources: its outputs equal a direct Calibrator's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecal import CalibrationTable, Calibrator
from edgecal.config import ConfigError
from edgecal.daemon.service import Daemon
from edgecal.sources import MemorySource, SourceExhausted, source_class

CONFIG = """
[calibrator]
bins = {bins}

[state]
path = "{state}"
checkpoint_interval = 60

[output]
path = "{table}"
method = "{method}"
scheme = "{scheme}"

[daemon]
queue_samples = 2
status_interval = 60
{sources}
"""
SOURCE = """
[[source]]
kind = "memory"
channel = "{channel}"
"""


def samples(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    """Tensors of different character: one-signed, two-signed heavy-tailed, with exact zeros."""
    rng = np.random.default_rng(seed)
    return [{"relu": np.maximum(rng.standard_normal(64), 0).astype(np.float32),
             "fc": (rng.laplace(size=32) * (1 + i)).astype(np.float32),
             "mixed": np.where(rng.random(16) < 0.3, 0.0, rng.standard_normal(16)).astype(np.float64)}
            for i in range(count)]


def run_daemon(tmp: Path, channels: dict[str, list[dict[str, np.ndarray]]], method: str = "kl",
               scheme: str = "symmetric", bins: int = 2048) -> Daemon:
    """Publish the channels, write a config naming them, run the loop until the sources are exhausted."""
    for name, data in channels.items():
        MemorySource.publish(name, data)
    cfg = tmp / "edgecal.toml"
    cfg.write_text(CONFIG.format(bins=bins, state=tmp / "state.ecst", table=tmp / "table.json", method=method,
                                 scheme=scheme, sources="".join(SOURCE.format(channel=c) for c in channels)))
    daemon = Daemon(cfg)
    assert daemon.run() == 0
    return daemon


def direct(data: list[dict[str, np.ndarray]], bins: int = 2048) -> Calibrator:
    cal = Calibrator(bins)
    for sample in data:
        for name, array in sample.items():
            cal.observe(name, array)
    return cal


@pytest.mark.parametrize("method, scheme", [("kl", "symmetric"), ("kl", "tflite"), ("minmax", "tflite")])
def test_one_source_checkpoint_and_table_equal_a_direct_calibrator(tmp_path, method, scheme):
    data = samples(1, 9)
    daemon = run_daemon(tmp_path, {f"one-{method}-{scheme}": data}, method, scheme)
    expected = direct(data)
    state = Calibrator.load_state(tmp_path / "state.ecst")
    assert state.names() == expected.names()
    for name in expected.names():
        assert state.histogram(name).to_bytes() == expected.histogram(name).to_bytes(), name
        assert state.samples(name) == 9
    table = CalibrationTable.load(tmp_path / "table.json")
    want = expected.compute(method, scheme=scheme)
    assert list(table) == list(want)
    for name in want:
        assert (table[name].range, table[name].scale, table[name].zero_point) == \
               (want[name].range, want[name].scale, want[name].zero_point), name
    assert daemon.counts["samples"] == 9 and daemon.counts["rejected"] == 0
    assert daemon.provenance()["sources"]["memory#1"]["committed"] == 9


def test_two_sources_fold_into_one_state_in_any_interleaving(tmp_path):
    a, b = samples(2, 5), samples(3, 7)
    run_daemon(tmp_path, {"two-a": a, "two-b": b})
    expected = direct(a + b)
    state = Calibrator.load_state(tmp_path / "state.ecst")
    for name in expected.names():  # histograms are counts: the order the two threads delivered in does not matter
        assert state.histogram(name).to_bytes() == expected.histogram(name).to_bytes(), name
        assert state.samples(name) == 12


def test_a_rejected_sample_is_counted_and_the_rest_still_calibrate(tmp_path):
    data = samples(4, 3)
    data.insert(1, {"relu": np.array([[1.0, 2.0]], dtype=object)})  # not a numeric array
    daemon = run_daemon(tmp_path, {"rejects": data})
    assert daemon.counts == {**daemon.counts, "samples": 3, "rejected": 1}
    state = Calibrator.load_state(tmp_path / "state.ecst")
    assert state.histogram("relu").to_bytes() == direct(samples(4, 3)).histogram("relu").to_bytes()


def test_memory_source_protocol_reopen_and_config_errors():
    src = MemorySource([{"x": np.arange(3.0)}, {"x": np.arange(4.0)}])
    src.open()
    first = src.read(0.0)
    assert first is not None and first.token == 0 and first.arrays["x"].size == 3
    src.open()  # a reopen after a transient failure delivers what was not read yet, nothing twice
    second = src.read(0.0)
    assert second is not None and second.token == 1 and second.arrays["x"].size == 4
    with pytest.raises(SourceExhausted, match="all 2 samples delivered"):
        src.read(0.0)
    src.commit([0, 1])
    assert src.stats() == {"samples": 2, "bytes": 7 * 8, "committed": 2}
    assert source_class("memory") is MemorySource
    with pytest.raises(ConfigError, match="source memory channel: "):
        MemorySource(channel="")
    with pytest.raises(ConfigError, match="speed"):
        MemorySource(speed=3)


def test_an_unpublished_channel_is_exhausted_at_once():
    src = MemorySource(channel="never-published")
    src.open()
    with pytest.raises(SourceExhausted, match="all 0 samples"):
        src.read(0.0)


@pytest.mark.parametrize("method", ["mse", "minmax"])
def test_the_daemon_warms_the_kernels_of_its_own_method_only(tmp_path, monkeypatch, method):
    import edgecal.warmup as warmup

    calls, real = [], warmup.warm_kernels
    monkeypatch.setattr(warmup, "warm_kernels", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    run_daemon(tmp_path, {"warm-" + method: samples(5, 2)}, method=method, bins=512)
    assert calls == [((512, [method]), {})]


def test_the_daemon_stages_with_its_configured_block_and_a_reload_changes_it(tmp_path):
    data = samples(9, 6)
    cfg_extra = "\n[calibrator]\nbins = 512\nstage_bytes = {n}\n"
    MemorySource.publish("stage-a", data)
    cfg = tmp_path / "edgecal.toml"
    base = CONFIG.replace("[calibrator]\nbins = {bins}\n", "").format(
        state=tmp_path / "state.ecst", table=tmp_path / "table.json", method="minmax", scheme="symmetric",
        sources=SOURCE.format(channel="stage-a"))
    cfg.write_text(base + cfg_extra.format(n=4096))
    daemon = Daemon(cfg)
    assert daemon.cal.stage_bytes == 4096
    cfg.write_text(base + cfg_extra.format(n=0))
    daemon._reload()
    assert daemon.cal.stage_bytes == 0
    assert daemon.run() == 0
    direct = Calibrator(512, stage_bytes=0)
    for sample in data:
        direct.observe_many(sample)
    assert Calibrator.load_state(tmp_path / "state.ecst").to_bytes() == direct.to_bytes()


def test_a_negative_stage_size_is_a_config_error_naming_the_key(tmp_path):
    cfg = tmp_path / "edgecal.toml"
    cfg.write_text(CONFIG.format(bins=512, state=tmp_path / "s.ecst", table=tmp_path / "t.json", method="kl",
                                 scheme="symmetric", sources=SOURCE.format(channel="x"))
                   .replace("bins = 512\n", "bins = 512\nstage_bytes = -1\n"))
    with pytest.raises(ConfigError, match=r"stage_bytes"):
        Daemon(cfg)
