"""`file_identity`: the key under which an input file is recorded as consumed.

Path, size and modification time alone collide: on FAT/exFAT (SD cards) mtime has a
resolution of seconds, so a writer that drops a new file with the same name and size
soon after gets the same key, and the new file would be taken for the old one. The
inode number tells them apart: a new file (written elsewhere, then renamed into
place) always has a new inode while the old one still exists.

`edgecal calibrate --state` and the spool source both use this function, so a file
consumed by one is recognised by the other.
"""

from __future__ import annotations

import os
from pathlib import Path


def file_identity(path: str | os.PathLike[str], st: os.stat_result | None = None) -> str:
    """``resolved path|size|mtime ns|device:inode`` of ``path`` (``st`` saves a second ``stat``)."""
    st = os.stat(path) if st is None else st
    return f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_dev}:{st.st_ino}"


def legacy_identity(path: str | os.PathLike[str], st: os.stat_result | None = None) -> str:
    """The key edgecal recorded before inodes were part of it, so states written before it still resume."""
    st = os.stat(path) if st is None else st
    return f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"
