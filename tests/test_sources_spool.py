"""The spool source: files in, samples out, deleted only after commit, bad files set aside."""

from __future__ import annotations

import io
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgecal import Calibrator
from edgecal.errors import InputError
from edgecal.identity import file_identity
from edgecal.sources import SourceError, SourceExhausted, SpoolSource


def drop(folder: Path, name: str, **arrays: np.ndarray) -> Path:
    """Write like a well-behaved application: a temporary name, then a rename."""
    tmp = folder / f".{name}.partial"
    with open(tmp, "wb") as fh:
        if name.endswith(".npz"):
            np.savez(fh, **arrays)
        else:
            np.save(fh, next(iter(arrays.values())))
    os.replace(tmp, folder / name)
    return folder / name


def opened(folder: Path, **config) -> SpoolSource:
    src = SpoolSource(path=str(folder), poll_interval=0.02, **config)
    src.open()
    return src


def read_all(src: SpoolSource, timeout: float = 0.1) -> list:
    out = []
    while (sample := src.read(timeout)) is not None:
        out.append(sample)
    return out


def test_files_become_samples_and_are_deleted_only_on_commit(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    x, y = np.linspace(-1, 1, 5), np.array([[1, 2], [3, 4]], np.int16)
    drop(tmp_path, "a.npy", a=a)
    drop(tmp_path, "b.npz", x=x, y=y)
    (tmp_path / "c.npy.tmp").write_bytes(b"being written")
    (tmp_path / ".d.npy").write_bytes(b"hidden")
    (tmp_path / "notes.txt").write_text("not an array")
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "e.npy", a)  # only the spool folder itself is watched
    src = opened(tmp_path)
    first, second = read_all(src)
    assert list(first.arrays) == ["a"] and np.array_equal(first.arrays["a"], a) and first.arrays["a"].dtype == np.float32
    assert sorted(second.arrays) == ["x", "y"] and np.array_equal(second.arrays["x"], x)
    assert np.array_equal(second.arrays["y"], y) and second.arrays["y"].dtype == np.int16
    assert first.token == str(tmp_path / "a.npy") and first.nbytes == 24
    assert (tmp_path / "a.npy").exists() and (tmp_path / "b.npz").exists()  # not before the checkpoint
    src.commit([first.token])
    assert not (tmp_path / "a.npy").exists() and (tmp_path / "b.npz").exists()
    src.commit([second.token, first.token])  # a file already gone is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.npy", "c.npy.tmp", "notes.txt", "sub"]
    stats = src.stats()
    assert (stats["samples"], stats["files_deleted"], stats["files_rejected"], stats["pending"]) == (2, 2, 0, 0)
    assert SpoolSource.LIVE is False


def test_a_file_renamed_into_the_folder_later_is_picked_up(tmp_path):
    src = opened(tmp_path)
    assert src.read(0.05) is None
    drop(tmp_path, "late.npy", v=np.ones(3))
    sample = src.read(1.0)
    assert sample is not None and list(sample.arrays) == ["late"]


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


BAD_FILES = {
    "garbage.npy": (b"not numpy at all", "not a NumPy array file"),
    "truncated.npy": (_npy_bytes(np.arange(100.0))[:-40], "truncated, found 760 bytes of data, expected 800"),
    "objects.npy": (_npy_bytes(np.array([{"a": 1}], dtype=object)), "dtype object is not real numbers"),
    "complex.npy": (_npy_bytes(np.ones(3, np.complex64)), "dtype complex64 is not real numbers"),
    "empty.npy": (_npy_bytes(np.zeros((0, 3), np.float32)), "is empty"),
    "broken.npz": (b"PK\x03\x04 not really a zip", "not a readable .npz archive"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_is_moved_to_rejected_and_the_source_carries_on(tmp_path, caplog, name):
    content, reason = BAD_FILES[name]
    (tmp_path / name).write_bytes(content)
    drop(tmp_path, "z_good.npy", v=np.full(4, 2.5))
    src = opened(tmp_path)
    with caplog.at_level(logging.ERROR, "edgecal"):
        samples = read_all(src)
    assert [list(s.arrays) for s in samples] == [["z_good"]]
    assert (tmp_path / "rejected" / name).read_bytes() == content and not (tmp_path / name).exists()
    assert reason in caplog.text and name in caplog.text
    assert src.stats()["files_rejected"] == 1


def test_a_damaged_npz_member_and_a_file_over_the_size_cap_are_rejected(tmp_path, caplog):
    drop(tmp_path, "a.npz", x=np.arange(100.0))
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        member = zf.read("x.npy")
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as zf:  # a member cut short inside a valid archive
        zf.writestr("x.npy", member[:-100])
    drop(tmp_path, "big.npy", v=np.zeros(1000))
    np.savez_compressed(tmp_path / "bomb.npz", v=np.zeros(1000))  # a small file that expands past the cap
    assert (tmp_path / "bomb.npz").stat().st_size < 4000
    src = opened(tmp_path, max_file_bytes=4000)
    with caplog.at_level(logging.ERROR, "edgecal"):
        assert read_all(src) == []
    assert sorted(p.name for p in (tmp_path / "rejected").iterdir()) == ["a.npz", "big.npy", "bomb.npz"]
    lines = {name: next(m for m in caplog.messages if f"/{name}: " in m) for name in ("a.npz", "big.npy", "bomb.npz")}
    assert "a.npz[x.npy]: truncated, found 700 bytes of data, expected 800" in lines["a.npz"] and "8128 bytes" in lines["big.npy"]
    assert "holds 8000 bytes of arrays" in lines["bomb.npz"] and "max_file_bytes" in lines["bomb.npz"]


def test_rejected_names_never_overwrite_each_other(tmp_path):
    src = opened(tmp_path)
    for content in (b"first", b"second"):
        (tmp_path / "bad.npy").write_bytes(content)
        assert src.read(0.1) is None
    assert (tmp_path / "rejected" / "bad.npy").read_bytes() == b"first"
    assert (tmp_path / "rejected" / "bad.npy.1").read_bytes() == b"second"


def test_a_restart_between_checkpoint_and_deletion_does_not_fold_a_file_twice(tmp_path):
    path = drop(tmp_path, "act.npy", v=np.arange(10.0))
    first = opened(tmp_path)
    sample = first.read(0.5)
    key = first.consumed_key(sample.token)
    assert key == file_identity(path)  # the same identity `edgecal calibrate --state` records
    cal = Calibrator()
    cal.observe_many(sample.arrays)
    cal.consumed.add(key)  # the checkpoint holds the data and the key ... and then the process dies
    second = opened(tmp_path)  # after the restart the file is still there
    again = second.read(0.5)
    assert again is not None and second.consumed_key(again.token) in cal.consumed
    second.commit([again.token])  # what the daemon does for a sample it skips
    assert not path.exists()


def test_a_file_replaced_after_it_was_read_is_kept_and_read_again(tmp_path):
    path = drop(tmp_path, "act.npy", v=np.zeros(3))
    src = opened(tmp_path)
    old = src.read(0.5)
    drop(tmp_path, "act.npy", v=np.ones(5))
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))
    src.commit([old.token])
    assert path.exists() and src.stats()["files_replaced"] == 1
    new = src.read(0.5)
    assert np.array_equal(new.arrays["act"], np.ones(5))


def test_a_file_that_cannot_be_deleted_is_never_read_again_by_this_process(tmp_path, caplog, monkeypatch):
    path = drop(tmp_path, "act.npy", v=np.arange(3.0))
    src = opened(tmp_path)
    sample = src.read(0.5)
    real_unlink = os.unlink

    def refuse(p, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(os, "unlink", refuse)
    with caplog.at_level(logging.ERROR, "edgecal"):
        src.commit([sample.token])
    assert path.exists() and "cannot delete" in caplog.text and "Permission denied" in caplog.text
    assert src.read(0.1) is None  # still pending: not folded a second time
    assert (src.stats()["delete_errors"], src.stats()["pending"]) == (1, 1)
    monkeypatch.setattr(os, "unlink", real_unlink)
    src.commit([sample.token])
    assert not path.exists() and src.stats()["pending"] == 0


def test_reading_pauses_at_max_pending_until_a_commit(tmp_path, caplog):
    for i in range(3):
        drop(tmp_path, f"f{i}.npy", v=np.full(2, float(i)))
    src = opened(tmp_path, max_pending=2)
    a, b = src.read(0.2), src.read(0.2)
    with caplog.at_level(logging.WARNING, "edgecal"):
        assert src.read(0.1) is None
    assert "max_pending" in caplog.text and src.stats()["pending"] == 2
    src.commit([a.token])
    c = src.read(0.5)
    assert [s.arrays[next(iter(s.arrays))][0] for s in (a, b, c)] == [0.0, 1.0, 2.0]


def test_hundreds_of_files_each_arrive_once_across_listings(tmp_path):
    for i in range(600):  # more than one listing batch
        np.save(tmp_path / f"t{i:04d}.npy", np.array([i], np.int32))
    src = opened(tmp_path)
    seen = [int(s.arrays[next(iter(s.arrays))][0]) for s in read_all(src, 0.05)]
    assert sorted(seen) == list(range(600))


def test_min_age_waits_for_files_to_settle(tmp_path):
    path = drop(tmp_path, "fresh.npy", v=np.ones(2))
    src = opened(tmp_path, min_age=60.0, drain=True)
    assert src.read(0.05) is None  # too young, and drain waits for it
    os.utime(path, (1, 1))
    assert src.read(0.5) is not None
    with pytest.raises(SourceExhausted):
        src.read(0.05)


def test_drain_ends_once_the_folder_holds_nothing_new(tmp_path):
    drop(tmp_path, "a.npy", v=np.ones(2))
    src = opened(tmp_path, drain=True)
    assert src.read(0.2) is not None
    with pytest.raises(SourceExhausted, match="no more files"):
        src.read(0.2)


def test_a_missing_folder_is_transient_and_a_file_in_its_place_is_an_error(tmp_path):
    src = SpoolSource(path=str(tmp_path / "later"))
    with pytest.raises(SourceError, match="no such folder"):
        src.open()
    (tmp_path / "later").mkdir()
    src.open()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        SpoolSource(path=str(tmp_path / "file")).open()


def test_a_folder_that_vanishes_while_reading_is_a_source_error(tmp_path):
    folder = tmp_path / "spool"
    folder.mkdir()
    src = SpoolSource(path=str(folder), poll_interval=0.01)
    src.open()
    assert src.read(0.05) is None
    folder.rmdir()
    with pytest.raises(SourceError, match="cannot list the folder"):
        src.read(0.1)
