"""The spool and damaged or re-dropped files: bad files go to rejected/, a same-size re-drop is never lost."""

from __future__ import annotations

import io
import logging
import os
import zipfile

import numpy as np
import pytest

from crafted_files import corrupt_deflate, npy_bytes, npz_bytes, patch_zip_headers


def npy_of(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


from test_sources_spool import opened, read_all  # noqa: E402  (one pair of spool helpers for both files)


_PLAIN = npz_bytes([("x.npy", npy_of(np.ones(3)))])
DAMAGED = {
    "huge_header.npz": (npz_bytes([("x.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
                                                       bytes(16), (2, 0), 1 << 30))], zipfile.ZIP_DEFLATED),
                        ".npy header of 1073741824 bytes; expected at most 10000"),
    "deflate.npz": (corrupt_deflate(np.random.default_rng(0).standard_normal(5000)), "damaged data"),
    "encrypted.npz": (patch_zip_headers(_PLAIN, flag_bits=1), "encrypted member"),
    "method99.npz": (patch_zip_headers(_PLAIN, method=99), "compression method 99"),
    "duplicate.npz": (npz_bytes([("x.npy", npy_of(np.ones(3))), ("x.npy", npy_of(np.ones(3)))]),
                      "a second member of this name"),
    "negative.npy": (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }", bytes(16)),
                     "non-negative integers"),
    "long_header.npy": (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }" + " " * 20000,
                                  bytes(16)), ".npy header of {} bytes; expected at most 10000"),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_a_damaged_file_goes_to_rejected_with_where_in_the_log_and_later_files_are_read(tmp_path, caplog, name):
    content, reason = DAMAGED[name]
    reason = reason.format(int.from_bytes(content[8:10], "little"))  # the length field as written
    (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "z_after.npy", np.full(4, 2.5))
    src = opened(tmp_path, drain=False)
    with caplog.at_level(logging.ERROR, "edgecal"):
        samples = read_all(src)
    assert [list(s.arrays) for s in samples] == [["z_after"]]
    moved = tmp_path / "rejected" / name
    assert moved.read_bytes() == content and not (tmp_path / name).exists()
    (line,) = [m for m in caplog.messages if "rejected" in m]
    assert reason in line and line.endswith(f"moved to {moved}") and "\n" not in line
    assert src.stats()["files_rejected"] == 1


def test_a_big_endian_file_is_a_sample_with_native_values(tmp_path):
    np.save(tmp_path / "be.npy", np.array([1.5, -2.0, 3.25], ">f4"))
    (sample,) = read_all(opened(tmp_path))
    assert sample.arrays["be"].dtype == np.float32 and sample.arrays["be"].tolist() == [1.5, -2.0, 3.25]


def test_a_same_name_same_size_re_drop_within_the_mtime_resolution_is_kept_unread(tmp_path):
    """FAT/exFAT keep mtime in seconds: the new file has the old one's path, size and mtime."""
    path = tmp_path / "act.npy"
    np.save(path, np.zeros(4))
    stamp = os.stat(path).st_mtime_ns
    src = opened(tmp_path)
    old = src.read(0.5)
    tmp = tmp_path / ".act.npy.partial"  # the writer drops again: new content, same size
    tmp.write_bytes(npy_of(np.arange(4.0)))
    os.utime(tmp, ns=(stamp, stamp))
    os.replace(tmp, path)
    assert os.stat(path).st_size == len(npy_of(np.zeros(4))) and os.stat(path).st_mtime_ns == stamp
    src.commit([old.token])
    assert path.exists() and src.stats()["files_replaced"] == 1
    new = src.read(0.5)
    assert new is not None and new.arrays["act"].tolist() == [0.0, 1.0, 2.0, 3.0]
