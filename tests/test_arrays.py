"""The one .npy/.npz reader: headers and archives checked before data, any byte order, bounded memory."""

from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest

from crafted_files import as_zip64_end, corrupt_deflate, npy_bytes, npz_bytes, patch_zip_headers
from edgecal import Calibrator
from edgecal.arrays import MAX_HEADER_BYTES, arrays_in, read_arrays
from edgecal.errors import InputError


def npy_of(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def one_line_error(path, match: str) -> str:
    with pytest.raises(InputError, match=match) as info:
        read_arrays(path, max_bytes=1 << 20)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_member_header_claiming_a_gigabyte_is_refused_before_it_is_read(tmp_path):
    member = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", bytes(16), (2, 0), 1 << 30)
    path = tmp_path / "huge.npz"
    path.write_bytes(npz_bytes([("x.npy", member + bytes(1 << 20))], zipfile.ZIP_DEFLATED))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=rf"huge.npz\[x.npy\]: .npy header of 1073741824 bytes; expected at "
                                             rf"most {MAX_HEADER_BYTES}"):
            arrays_in(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_a_header_claiming_more_data_than_the_file_holds_is_refused_before_reading(tmp_path):
    path = tmp_path / "liar.npy"
    path.write_bytes(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }", bytes(80)))
    with pytest.raises(InputError, match=r"liar.npy: truncated, found 80 bytes of data, expected 8796093022208"):
        arrays_in(path)
    member = tmp_path / "liar.npz"
    member.write_bytes(npz_bytes([("x.npy", path.read_bytes())], zipfile.ZIP_DEFLATED))
    with pytest.raises(InputError, match=r"liar.npz\[x.npy\]: truncated, found 80 bytes"):
        arrays_in(member)


def test_data_beyond_what_the_header_claims_is_refused(tmp_path):
    path = tmp_path / "long.npy"
    path.write_bytes(npy_of(np.ones(3)) + b"extra!!!")
    one_line_error(path, r"long.npy: 32 bytes of data, but its header claims shape \(3,\) of <f8 \(24 bytes\)")


@pytest.mark.parametrize("shape", ["(-1,)", "(2, -3)", "(3, 'a')", "[3]", "(True,)"])
def test_negative_or_non_integer_dimensions_are_refused(tmp_path, shape):
    path = tmp_path / "neg.npy"
    path.write_bytes(npy_bytes(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}", bytes(16)))
    one_line_error(path, r"neg.npy: .npy shape .*; expected a tuple of at most 64 non-negative integers")


def test_corrupt_deflate_stream_is_one_line(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(corrupt_deflate(np.random.default_rng(0).standard_normal(5000)))
    one_line_error(path, r"bad.npz\[x.npy\]: damaged data \(.*\); expected an intact .npy/.npz file")


def test_encrypted_member_and_unknown_compression_are_refused(tmp_path):
    plain = npz_bytes([("x.npy", npy_of(np.ones(3)))])
    (tmp_path / "enc.npz").write_bytes(patch_zip_headers(plain, flag_bits=1))
    (tmp_path / "m99.npz").write_bytes(patch_zip_headers(plain, method=99))
    one_line_error(tmp_path / "enc.npz", r"enc.npz\[x.npy\]: encrypted member; expected an unencrypted .npz")
    one_line_error(tmp_path / "m99.npz", r"m99.npz\[x.npy\]: compression method 99; expected one of stored, deflate")


def test_a_member_whose_local_header_disagrees_with_the_directory_is_one_line(tmp_path):
    data = bytearray(npz_bytes([("x.npy", npy_of(np.ones(3)))]))
    data[30:31] = b"y"  # the local header's copy of the name
    (tmp_path / "mismatch.npz").write_bytes(bytes(data))
    one_line_error(tmp_path / "mismatch.npz", r"mismatch.npz: not a readable .npz archive")


def test_duplicate_member_names_are_refused(tmp_path):
    path = tmp_path / "dup.npz"
    path.write_bytes(npz_bytes([("x.npy", npy_of(np.ones(3))), ("x.npy", npy_of(np.zeros(3)))]))
    one_line_error(path, r"dup.npz\[x.npy\]: a second member of this name; expected each array name once")


def test_pickled_objects_get_our_one_line_not_numpys_advice(tmp_path):
    path = tmp_path / "obj.npy"
    path.write_bytes(npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", bytes(8)))
    message = one_line_error(path, r"obj.npy: dtype object is not real numbers")
    assert "allow_pickle" not in message


@pytest.mark.parametrize("dtype", [">f4", ">i4", ">f8", ">u2", ">f2", "<i8"])
def test_any_byte_order_is_read_exactly(tmp_path, dtype):
    values = np.array([[-3.5, 0.0, 1.25], [7.0, 100.0, 2.0]]).astype(dtype)
    path = tmp_path / "x.npy"
    np.save(path, values)
    got = read_arrays(path, max_bytes=1 << 20)["x"]
    assert got.dtype == np.dtype(dtype).newbyteorder("=") and got.dtype.isnative
    assert got.tolist() == values.tolist()
    direct, streamed = Calibrator(64), Calibrator(64)
    direct.observe("x", values.astype(np.dtype(dtype).newbyteorder("=")))
    (array,) = arrays_in(path)
    streamed.observe_chunks("x", array.chunks(chunk_bytes=8))
    assert streamed.histogram("x") == direct.histogram("x")


def test_fortran_order_arrays_keep_their_values(tmp_path):
    values = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    np.save(tmp_path / "f.npy", values)
    assert read_arrays(tmp_path / "f.npy", max_bytes=1 << 20)["f"].tolist() == values.tolist()


def test_read_arrays_refuses_more_than_its_limit(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.ones(100), b=np.ones(100))
    with pytest.raises(InputError, match=r"two.npz: holds 1600 bytes of arrays; expected at most 1000"):
        read_arrays(tmp_path / "two.npz", max_bytes=1000)


def test_a_fifo_named_like_an_array_is_refused_without_blocking(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.npy")
    with pytest.raises(InputError, match=r"pipe.npy: it is a FIFO; expected a regular file"):
        arrays_in(tmp_path / "pipe.npy")


def test_an_archive_directory_claiming_more_entries_than_edgecal_holds_is_refused(tmp_path, monkeypatch):
    from edgecal import arrays

    np.savez(tmp_path / "many.npz", **{f"t{i}": np.ones(2) for i in range(5)})
    monkeypatch.setattr(arrays, "MAX_MEMBERS", 4)
    with pytest.raises(InputError, match=r"many.npz: archive directory of 5 entries in \d+ bytes; expected at most 4"):
        arrays_in(tmp_path / "many.npz")
    monkeypatch.setattr(arrays, "MAX_MEMBERS", 5)
    assert [a.name for a in arrays_in(tmp_path / "many.npz")] == [f"t{i}" for i in range(5)]


def test_a_zip64_end_record_is_read_and_its_entry_count_checked(tmp_path, monkeypatch):
    from edgecal import arrays

    path = tmp_path / "z64.npz"
    path.write_bytes(as_zip64_end(npz_bytes([(f"t{i}.npy", npy_of(np.arange(3.0) + i)) for i in range(5)])))
    assert read_arrays(path, max_bytes=1 << 20)["t4"].tolist() == [4.0, 5.0, 6.0]
    monkeypatch.setattr(arrays, "MAX_MEMBERS", 4)
    with pytest.raises(InputError, match=r"z64.npz: archive directory of 5 entries"):
        arrays_in(path)


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", ">i2"])
@pytest.mark.parametrize("container", ["npy", "npz", "npz-deflated"])
def test_chunks_read_into_one_buffer_give_the_same_values_as_fresh_chunks(tmp_path, dtype, container):
    values = np.random.default_rng(3).normal(0, 50, 1001).astype(dtype)
    path = tmp_path / f"x.{container[:3]}"
    {"npy": np.save, "npz": np.savez, "npz-deflated": np.savez_compressed}[container](
        path, **({} if container == "npy" else {"x": values})) if container != "npy" else np.save(path, values)
    (array,) = arrays_in(path)
    for start, stop, chunk_bytes in ((0, None, 1 << 20), (0, None, 24), (13, 977, 40), (500, 500, 8)):
        fresh = [c.copy() for c in array.chunks(chunk_bytes, start, stop)]
        reused = [c.copy() for c in array.chunks(chunk_bytes, start, stop, reuse=True)]  # copied before the next
        assert [c.tolist() for c in reused] == [c.tolist() for c in fresh]
        assert np.concatenate(reused or [np.zeros(0)]).tolist() == values[start:stop].astype(float).tolist()
    assert array.read().tolist() == values.tolist()


def test_a_reused_buffer_is_refilled_so_a_chunk_is_valid_until_the_next(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(12, dtype=np.float32))
    (array,) = arrays_in(tmp_path / "x.npy")
    chunks = array.chunks(chunk_bytes=16, reuse=True)
    first = next(chunks)
    assert first.tolist() == [0, 1, 2, 3]
    assert next(chunks).tolist() == [4, 5, 6, 7] and first.tolist() == [4, 5, 6, 7]  # one buffer, refilled


def test_a_truncated_file_read_into_a_buffer_is_one_line(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, np.arange(1000, dtype=np.float32))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match=r"t.npy: truncated, found 3990 bytes of data, expected 4000"):
        Calibrator(64).observe_chunks("t", next(iter(arrays_in(path))).chunks(chunk_bytes=1000, reuse=True))
