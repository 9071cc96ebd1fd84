"""Reading states and tables: regular files only, bounded memory, and content checked beyond its CRC."""

from __future__ import annotations

import os
import threading
import tracemalloc
import zlib

import numpy as np
import pytest

from crafted_files import histogram_bytes, state_bytes
from edgecal import Calibrator
from edgecal.errors import EdgecalError, StateError
from edgecal.formats import load_table

# 16 bins per sign over [0, 4) (exp 2, width 0.25): 0.5 in positive bin 2, -3.0 in negative bin 12, one zero
GOOD = dict(bins=16, exp=2, pos=[0, 0, 1], neg=[0] * 12 + [1], zeros=1, vmin=-3.0, vmax=0.5)


def hist(**changes) -> bytes:
    return histogram_bytes(**{**GOOD, **changes})


def test_the_crafted_good_state_loads_so_the_cases_below_fail_for_their_one_flaw():
    cal = Calibrator.from_bytes(state_bytes(16, [("a", 2, hist())], consumed=["f|1|2|3:4"]))
    s = cal.stats("a")
    assert (s.samples, s.count, s.zeros, s.min, s.max) == (2, 3, 1, -3.0, 0.5)
    assert cal.histogram("a").range == 4.0 and cal.consumed == {"f|1|2|3:4"}


BAD_STATES = {
    "max outside the range": (state_bytes(16, [("a", 1, hist(vmax=5.0))]), r"outside its range"),
    "min above max": (state_bytes(16, [("a", 1, hist(neg=[], zeros=0, vmin=1.0, vmax=0.5))]), r"min > max"),
    "max not in the last bin": (state_bytes(16, [("a", 1, hist(vmax=0.9))]), r"do not end at the bin"),
    "zeros but min above 0": (state_bytes(16, [("a", 1, hist(neg=[], vmin=0.5, vmax=0.5))]), r"holds zeros"),
    "nothing finite but a min": (state_bytes(16, [("a", 1, hist(pos=[], neg=[], zeros=0, specials=(1, 0, 0)))]),
                                 r"no finite values but min"),
    "counts wrapping int64": (state_bytes(16, [("a", 1, hist(pos=[1 << 62] * 4, neg=[], zeros=1, vmin=0.0,
                                                              vmax=0.0))]), r"beyond int64"),
    "negative sample count": (state_bytes(16, [("a", -1, hist())]), r"sample counts are not integers"),
    "more samples than values": (state_bytes(16, [("a", 4, hist())]), r"4 arrays of 3 values"),
    "duplicate tensor names": (state_bytes(16, [("a", 1, hist()), ("a", 1, hist())]), r"expected distinct"),
    "deeply nested metadata": (state_bytes(16, [], meta_text=b"[" * 200000), r"nested too deeply"),
    "4300-digit number": (state_bytes(16, [], meta_text=b'{"tensors": [], "consumed": [], "model_hash": '
                                      + b"1" * 5000 + b"}"), r"not valid JSON"),
    "trailing payload": (state_bytes(16, [("a", 1, hist())], raw_tail=b"xx"), r"more than its header says"),
    "short payload": (state_bytes(16, [("a", 1, hist())], count=2), r"lists 1 tensors; header says 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_a_state_with_a_valid_crc_but_inconsistent_content_is_refused(case):
    data, match = BAD_STATES[case]
    with pytest.raises(StateError, match=match) as info:
        Calibrator.from_bytes(data)
    assert "\n" not in str(info.value)


def test_a_small_state_claiming_huge_histograms_is_refused_before_decompressing():
    zeros = zlib.compress(bytes(1 << 24), 9)  # 16 MiB of zeros in a few kB
    body = b"ECST" + (1).to_bytes(2, "little") + bytes(2) + (1 << 24).to_bytes(4, "little") + (8).to_bytes(4, "little")
    body += len(zeros).to_bytes(4, "little") + zeros
    data = body + zlib.crc32(body).to_bytes(4, "little")
    tracemalloc.start()
    try:
        with pytest.raises(StateError, match=r"claims 8 tensors of 16777216 bins \(\d+ bytes in memory\); expected "
                                             r"at most \d+ bytes \(max_memory\)"):
            Calibrator.from_bytes(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(data) + (1 << 20)


def test_the_memory_limit_is_a_parameter():
    data = state_bytes(16, [("a", 1, hist())])
    with pytest.raises(StateError, match=r"claims 1 tensors of 16 bins \(640 bytes in memory\); expected at most "
                                         r"600 bytes"):
        Calibrator.from_bytes(data, max_memory=600)
    assert Calibrator.from_bytes(data, max_memory=640).names() == ["a"]


def _blocks(fn, *args) -> bool:
    """Whether ``fn(*args)`` is still running after 5 s (it then stays blocked in a daemon thread)."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(_outcome(fn, *args)), daemon=True)
    t.start()
    t.join(5.0)
    return t.is_alive()


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as err:
        return err


@pytest.mark.parametrize("reader", [Calibrator.load_state, load_table])
def test_a_fifo_is_refused_without_blocking(tmp_path, reader):
    os.mkfifo(tmp_path / "pipe")
    assert not _blocks(reader, tmp_path / "pipe")
    with pytest.raises(EdgecalError, match=r"pipe: it is a FIFO; expected a regular file"):
        reader(tmp_path / "pipe")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("reader", [Calibrator.load_state, load_table])
def test_an_endless_device_is_refused_before_reading(reader):
    with pytest.raises(EdgecalError, match=r"/dev/zero: it is a character device; expected a regular file"):
        reader("/dev/zero")


def test_files_over_the_format_limits_are_refused_before_reading(tmp_path, monkeypatch):
    from edgecal import calibrator
    from edgecal.formats import registry

    cal = Calibrator(16)
    cal.observe("a", np.ones(3))
    cal.save_state(tmp_path / "s.ecst")
    size = os.path.getsize(tmp_path / "s.ecst")
    monkeypatch.setattr(calibrator, "MAX_STATE_BYTES", size - 1)
    with pytest.raises(EdgecalError, match=rf"s.ecst: {size} bytes; expected at most {size - 1}"):
        Calibrator.load_state(tmp_path / "s.ecst")
    cal.compute("minmax").save(tmp_path / "t.json")
    tsize = os.path.getsize(tmp_path / "t.json")
    monkeypatch.setattr(registry, "MAX_TABLE_BYTES", tsize - 1)
    with pytest.raises(EdgecalError, match=rf"t.json: {tsize} bytes; expected at most {tsize - 1}"):
        load_table(tmp_path / "t.json")


@pytest.mark.parametrize("text, match", [("[" * 200000, "nested too deeply"),
                                         ('{"crc32": ' + "7" * 5000 + "}", "not valid JSON")])
def test_json_tables_that_break_the_parser_are_one_line(tmp_path, text, match):
    (tmp_path / "t.json").write_text(text)
    with pytest.raises(StateError, match=match) as info:
        load_table(tmp_path / "t.json")
    assert "\n" not in str(info.value)


def test_ecal_metadata_that_breaks_the_parser_is_one_line():
    import struct

    from edgecal.formats.ecal import read_ecal

    meta = b"[" * 100000
    body = b"ECAL" + struct.pack("<HHII", 1, 16, 0, len(meta)) + meta
    data = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(StateError, match=r".ecal metadata is nested too deeply"):
        read_ecal(data)


def test_reading_a_small_file_allocates_its_size_not_the_limit(tmp_path):
    from edgecal.regular_file import read_regular

    (tmp_path / "small").write_bytes(b"x" * 300)
    tracemalloc.start()
    try:
        assert read_regular(tmp_path / "small", 1 << 30) == b"x" * 300
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # a buffer of the 1 GiB limit was asked for before
