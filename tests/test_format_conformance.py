"""What every registered table format must do; a new format is covered by registering it.

Each test is parametrised over `format_names()`, so a format registered by a new
module (or an ``edgecal.formats`` plugin installed in the environment) runs them all:

* round trip: a readable format reads back what it wrote (names, thresholds) and
  writing what it read gives the same bytes; a write-only format's text is parsed
  by an independent parser here (`PARSERS`: a new write-only format adds one);
* damage: every truncation, flipped bytes and garbage give a one-line edgecal error
  or, for formats without a checksum, a table that is still a table of the same
  tensors (never a crash: IndexError, struct.error, UnicodeDecodeError, ...);
* options: a value of the wrong kind and an unknown option are one-line errors; each
  declared option changes the output as documented (`OPTION_EFFECTS`: a new option adds one);
* atomic write: a write that fails leaves no file, and the old file whole.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgecal.errors import EdgecalError, InputError
from edgecal.formats import format_names, get_format, save_table
from edgecal.table import CalibrationTable, TensorCalibration

FORMATS = format_names()
CHECKSUMMED = {"ecal"}  # formats whose encoding carries a checksum: every damage must be refused
NAMES = ("conv1", "block2/relu", "fc_out")
AMAX = (0.75, 6.0, 31.25)


def table() -> CalibrationTable:
    entries = [TensorCalibration.symmetric(n, a, method="kl", params={}) for n, a in zip(NAMES, AMAX)]
    return CalibrationTable(entries, created="2026-01-02T03:04:05Z", edgecal_version="0.1.0")


# -- independent parsers of the write-only formats: name -> scale ------------------------------
def parse_ncnn(text: str) -> dict[str, float]:
    """ncnn's table: ``<blob> <127/amax>`` per line (ncnn2int8 reads them with sscanf)."""
    out = {}
    for line in text.splitlines():
        name, value = line.split(" ")
        out[name] = 1.0 / float(value)
    return out


def parse_c(text: str) -> dict[str, float]:
    """The C header's name and scale arrays, by the C syntax alone."""
    names = re.search(r"_names\[\w+\] = \{(.*?)\};", text, re.DOTALL)
    scales = re.search(r"_scales\[\w+\] = \{(.*?)\};", text, re.DOTALL)
    assert names and scales, text
    count = int(re.search(r"#define \w+_NUM_TENSORS (\d+)", text).group(1))
    keys = re.findall(r'"((?:[^"\\]|\\.)*)"', names.group(1))
    values = [float(v.rstrip("f")) for v in re.findall(r"[-+0-9.e]+f", scales.group(1))]
    assert len(keys) == len(values) == count
    return dict(zip(keys, values))


PARSERS: dict[str, Callable[[str], dict[str, float]]] = {"ncnn": parse_ncnn, "c": parse_c}

# -- each declared option: a value other than the default, and how the output must show it ------
OptionCheck = Callable[[bytes, bytes], bool]  # (default output, output with the option) -> documented change seen
OPTION_EFFECTS: dict[tuple[str, str], tuple[object, OptionCheck]] = {
    ("c", "prefix"): ("mynet", lambda _d, o: b"mynet_scales[" in o and b"edgecal_scales" not in o),
    ("trt", "trt_version"): ("100300", lambda _d, o: o.startswith(b"TRT-100300-")),
    ("trt", "algorithm"): ("MinMaxCalibration", lambda _d, o: o.split(b"\n")[0].endswith(b"-MinMaxCalibration")),
    ("ncnn", "skip_unsupported"): (True, lambda d, o: d == o),  # no unsupported name here: nothing left out
    # lines renamed after the layer reading each tensor; a tensor no layer reads (fc_out) is left out
    ("ncnn", "param"): (str(Path(__file__).parent / "golden" / "conformance.param"),
                        lambda d, o: o.split(b"\n")[:2] == [b"conv_a 169.333328", b"fc_b 21.166666"] and b"fc_out" not in o),
}
BAD_VALUES = {bool: "perhaps", int: "seven", float: "wide", str: 7}  # of the wrong kind
# a value of the right kind that the writer refuses (an option whose kind admits no bad value: None)
BAD_OPTION_VALUES: dict[tuple[str, str], object] = {
    ("c", "prefix"): "1x", ("trt", "trt_version"): "8.6", ("trt", "algorithm"): "Entropy Calibration",
    ("ncnn", "skip_unsupported"): None, ("ncnn", "param"): "/nonexistent/model.param",
}


def one_line_error(read: Callable[[bytes], CalibrationTable], data: bytes) -> CalibrationTable | None:
    """The table ``read`` makes of ``data``, or None when it raised a one-line edgecal error (anything else fails)."""
    try:
        return read(data)
    except EdgecalError as err:
        assert "\n" not in str(err) and str(err), repr(err)
        return None


def same_tensors(got: CalibrationTable, want: CalibrationTable) -> bool:
    return sorted(got) == sorted(want)  # a format may keep tensors in its own order (ort sorts them)


def close_amax(got: CalibrationTable, want: CalibrationTable) -> None:
    for name in want:
        assert math.isclose(got[name].amax, want[name].amax, rel_tol=1e-6), (name, got[name].amax)


@pytest.fixture(params=FORMATS)
def fmt(request):
    return get_format(request.param)


def test_every_format_declares_a_name_a_suffix_and_a_description(fmt):
    assert fmt.name and fmt.suffixes and all(s.startswith(".") for s in fmt.suffixes) and fmt.description


def test_round_trip(fmt):
    data = fmt.write(table())
    assert isinstance(data, bytes) and data
    if fmt.read is None:
        assert fmt.name in PARSERS, f"write-only format {fmt.name!r} needs an independent parser in PARSERS"
        scales = PARSERS[fmt.name](data.decode())
        assert list(scales) == list(NAMES)
        for name, amax in zip(NAMES, AMAX):
            assert math.isclose(scales[name], amax / 127.0, rel_tol=1e-6), name
        return
    back = fmt.read(data)
    assert same_tensors(back, table())
    close_amax(back, table())
    assert fmt.write(back) == data  # what was read is what was written: a fixed point


def test_every_truncation_is_refused_or_keeps_the_tensors(fmt):
    if fmt.read is None:
        pytest.skip(f"{fmt.name} is write-only: nothing reads it back")
    data = fmt.write(table())
    for cut in range(len(data)):
        got = one_line_error(fmt.read, data[:cut])
        if got is not None:
            assert fmt.name not in CHECKSUMMED, f"{fmt.name} accepted {cut} of {len(data)} bytes"
            assert set(got) <= set(NAMES), cut  # never a tensor that was not written


def test_flipped_bytes_are_refused_or_give_a_table(fmt):
    if fmt.read is None:
        pytest.skip(f"{fmt.name} is write-only: nothing reads it back")
    data = fmt.write(table())
    rng = np.random.default_rng(0)
    positions = range(len(data)) if len(data) <= 512 else rng.choice(len(data), 512, replace=False)
    for pos in positions:
        for mask in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[pos] ^= mask
            got = one_line_error(fmt.read, bytes(damaged))
            if got is not None:
                assert fmt.name not in CHECKSUMMED, f"{fmt.name} accepted a flip of bit {mask:#x} at byte {pos}"
                assert isinstance(got, CalibrationTable) and len(got) <= len(NAMES)


def test_garbage_is_refused_in_one_line(fmt):
    if fmt.read is None:
        pytest.skip(f"{fmt.name} is write-only: nothing reads it back")
    rng = np.random.default_rng(1)
    blobs = [b"", b"\0" * 64, b"\xff" * 7, b"hello\nworld\n", bytes(rng.integers(0, 256, 300, dtype=np.uint8))]
    for blob in blobs:
        assert one_line_error(fmt.read, blob) is None, blob[:16]


def test_options_of_the_wrong_kind_or_unknown_are_one_line_errors(fmt):
    for key, kind in fmt.options.items():
        with pytest.raises(InputError, match=f"format '{fmt.name}' option '{key}'") as err:
            fmt.check_options({key: BAD_VALUES[kind]})
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=f"format '{fmt.name}' has no option 'bogus'; accepted: ") as err:
        fmt.check_options({"bogus": "1"})
    assert "\n" not in str(err.value)


def test_bad_option_values_are_one_line_errors_before_anything_is_written(fmt, tmp_path):
    for key in fmt.options:
        assert (fmt.name, key) in BAD_OPTION_VALUES, f"option {key!r} of {fmt.name!r} needs an entry in BAD_OPTION_VALUES"
        value = BAD_OPTION_VALUES[fmt.name, key]
        if value is None:
            continue
        path = tmp_path / f"t{fmt.suffixes[0]}"
        with pytest.raises(InputError, match=re.escape(repr(value)) + "|" + re.escape(str(value))) as err:
            save_table(table(), path, format=fmt.name, **{key: value})
        assert "\n" not in str(err.value) and not path.exists()


def test_each_option_changes_the_output_as_documented(fmt):
    default = fmt.write(table())
    for key, kind in fmt.options.items():
        assert (fmt.name, key) in OPTION_EFFECTS, f"option {key!r} of {fmt.name!r} needs an entry in OPTION_EFFECTS"
        value, documented = OPTION_EFFECTS[fmt.name, key]
        out = fmt.write(table(), **fmt.check_options({key: value if kind is str else str(value).lower()}))
        assert documented(default, out), (key, out[:120])


def test_a_failing_write_leaves_no_file_and_the_old_one_whole(fmt, tmp_path, monkeypatch):
    path = tmp_path / f"t{fmt.suffixes[0]}"

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(EdgecalError, match="No space left on device"):
        save_table(table(), path, format=fmt.name)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    path.write_bytes(b"old")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(EdgecalError):
        save_table(table(), path, format=fmt.name)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == [path.name]


def test_an_unencodable_table_writes_nothing(fmt, tmp_path):
    path = tmp_path / f"t{fmt.suffixes[0]}"
    with pytest.raises(InputError):
        save_table(table(), path, format=fmt.name, bogus="1")
    assert not Path(path).exists() and os.listdir(tmp_path) == []
