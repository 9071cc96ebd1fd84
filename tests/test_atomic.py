"""Atomic writes: through symlinks, never over devices, FIFOs or folders, no stale temp files left."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import pytest

from edgecal.atomic import atomic_write
from edgecal.errors import InputError


def test_a_symlink_keeps_being_a_link_and_its_target_gets_the_new_bytes(tmp_path):
    target = tmp_path / "real" / "table.json"
    target.parent.mkdir()
    target.write_bytes(b"stale")
    link = tmp_path / "table.json"
    link.symlink_to(target)
    atomic_write(link, b"fresh")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"fresh"
    assert sorted(os.listdir(target.parent)) == ["table.json"]


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "out.ecal"
    link.symlink_to(tmp_path / "made.ecal")
    atomic_write(link, b"new")
    assert link.is_symlink() and (tmp_path / "made.ecal").read_bytes() == b"new"


def _fifo(path):
    os.mkfifo(path)


def _socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


def _folder(path):
    path.mkdir()


def _device(path):
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null


@pytest.mark.parametrize("make, kind", [(_fifo, "a FIFO"), (_socket, "a socket"), (_folder, "a folder"),
                                        (_device, "a character device")])
def test_a_path_that_is_not_a_regular_file_is_refused_and_left_as_it_was(tmp_path, make, kind):
    path = tmp_path / "out.json"
    make(path)
    before = os.lstat(path)
    with pytest.raises(InputError, match=f"cannot write {path}: it is {kind}; expected a regular file or a new name"):
        atomic_write(path, b"data")
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


def test_a_missing_or_non_folder_parent_is_one_line(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(InputError, match="folder .*nope does not exist"):
        atomic_write(tmp_path / "nope" / "t.json", b"data")
    with pytest.raises(InputError, match=r"cannot write .*file/t.json: Not a directory"):
        atomic_write(tmp_path / "file" / "t.json", b"data")


@pytest.mark.needs_host  # spawns sys.executable
def test_a_write_killed_midway_leaves_a_temp_file_the_next_write_removes(tmp_path):
    path = tmp_path / "state.ecst"
    killed = ("import os, signal, sys\n"
              "import edgecal.atomic as a\n"
              "os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\n"
              "a.atomic_write(sys.argv[1], b'x' * 100000)\n")
    done = subprocess.run([sys.executable, "-c", killed, str(path)], timeout=120)
    assert done.returncode == -9
    (left,) = os.listdir(tmp_path)
    assert left.startswith(".state.ecst.") and left.endswith(".tmp")
    mine = tmp_path / ".other.ecst.edgecal-999999999-abcdefgh.tmp"  # another target's: not this write's to touch
    user = tmp_path / ".state.ecst.notes.tmp"  # does not match the pattern
    mine.write_bytes(b"keep")
    user.write_bytes(b"keep")
    atomic_write(path, b"whole")
    assert path.read_bytes() == b"whole"
    assert sorted(os.listdir(tmp_path)) == sorted([mine.name, user.name, "state.ecst"])


@pytest.mark.needs_host  # spawns sys.executable
def test_a_temp_file_of_a_live_writer_is_left_alone(tmp_path):
    path = tmp_path / "t.json"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = tmp_path / f".t.json.edgecal-{live.pid}-abcdefgh.tmp"
        other.write_bytes(b"being written")
        atomic_write(path, b"x")
        assert other.exists() and path.read_bytes() == b"x"
    finally:
        live.kill()
        live.wait()


def test_a_temp_file_with_our_pid_from_before_this_process_started_is_stale(tmp_path):
    """In a container the daemon may get the same pid after every restart."""
    path = tmp_path / "t.json"
    old = tmp_path / f".t.json.edgecal-{os.getpid()}-oldoldol.tmp"
    new = tmp_path / f".t.json.edgecal-{os.getpid()}-newnewne.tmp"
    old.write_bytes(b"left by a killed run")
    new.write_bytes(b"another thread's")
    os.utime(old, (1e9, 1e9))
    atomic_write(path, b"x")
    assert not old.exists() and new.exists()


def test_disk_errors_stay_oserrors_for_callers_that_retry(tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    (tmp_path / "t.json").write_bytes(b"old")
    with pytest.raises(OSError, match="No space left on device"):
        atomic_write(tmp_path / "t.json", b"new")
    assert (tmp_path / "t.json").read_bytes() == b"old" and os.listdir(tmp_path) == ["t.json"]
