"""`SpoolSource`: a folder where applications drop `.npy` / `.npz` files, one sample per file.

A ``.npy`` file is one tensor named by the file's stem; a ``.npz`` archive is one
tensor per key. The folder is polled (no inotify needed) and files are read one at a
time, oldest name first within each listing. Only complete files are taken: a writer
saves to a dotfile or a ``*.tmp`` name and renames it into place (a rename is atomic),
or, if it cannot, the source is given ``min_age`` seconds to let files settle.

A file whose header or data is bad (anything `edgecal.arrays` refuses), or that is
larger than ``max_file_bytes``, is moved to the ``rejected/`` subfolder (``name.1``,
``name.2``, ... when that name is taken) with an error saying why and where it went;
the source carries on with the next file. A good
file stays where it is until `SpoolSource.commit` is called for its token (its path):
the daemon does that once the file's data is in a checkpoint, so nothing is lost to a
crash. Its `consumed_key` (`edgecal.identity.file_identity`: path, size, modification
time and inode, as ``edgecal calibrate --state`` records) is recorded in that
checkpoint, so a restart between the checkpoint and the deletion never folds a file
twice, and a file dropped again under the same name and size is never taken for the
one already read (the inode differs even where mtime has a resolution of seconds).

>>> import numpy as np, tempfile, os
>>> folder = tempfile.mkdtemp()
>>> np.save(os.path.join(folder, "conv1.npy"), np.ones((2, 3), np.float32))
>>> src = SpoolSource(path=folder)
>>> src.open(); sample = src.read(timeout=1.0)
>>> sorted(sample.arrays), sample.arrays["conv1"].shape, os.path.basename(sample.token)
(['conv1'], (2, 3), 'conv1.npy')
>>> src.commit([sample.token]); os.listdir(folder)
[]
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from ..arrays import SUFFIXES, arrays_in
from ..config import Field
from ..errors import InputError
from ..identity import file_identity
from .base import Sample, Source, SourceError, SourceExhausted, register_source
from .fields import Counters, at_least, checked_config, non_empty, non_negative, positive

log = logging.getLogger("edgecal")
REJECTED = "rejected"
SCAN_BATCH = 256  # names taken from one listing: memory stays small however full the folder is


def load_sample_file(path: str, max_bytes: int) -> dict[str, np.ndarray]:
    """Every array of one spool file; `InputError` saying what is wrong with it."""
    described = arrays_in(path)  # every header and size checked before any data is read
    total = sum(a.nbytes for a in described)
    if total > max_bytes:
        raise InputError(f"{path}: holds {total} bytes of arrays; this spool takes at most {max_bytes} "
                         "per file (max_file_bytes)")
    return {a.name: a.read() for a in described}


@register_source
class SpoolSource(Source):
    """Samples from the ``.npy`` / ``.npz`` files dropped into a folder.

    Parameters (keys of a ``[[source]]`` table with ``kind = "spool"``)
    ----------
    path : str
        The spool folder (not created: a missing folder is retried with backoff).
    poll_interval : float
        Seconds between listings of a folder that had nothing new (default 0.5).
    min_age : float
        Take only files last modified at least this many seconds ago (default 0: writers rename).
    max_file_bytes : int
        Larger files are rejected (default 256 MiB): one file is one sample in memory.
    max_pending : int
        Files read but not yet committed; at this many the source waits for a checkpoint (default 10000).
    drain : bool
        Raise `SourceExhausted` once the folder holds nothing new (a one-shot run); default false.
    """

    KIND = "spool"
    FIELDS = {
        "path": Field(str, check=non_empty),
        "poll_interval": Field(float, 0.5, positive),
        "min_age": Field(float, 0.0, non_negative),
        "max_file_bytes": Field(int, 256 << 20, at_least(1)),
        "max_pending": Field(int, 10000, at_least(1)),
        "drain": Field(bool, False),
    }
    LIVE = False

    def __init__(self, **config: Any) -> None:
        super().__init__(**checked_config(self.KIND, self.FIELDS, config))
        self.folder = os.path.normpath(self.config["path"])
        self._queue: deque[str] = deque()
        self._pending: dict[str, str] = {}  # path -> consumed key: read, not yet committed
        self._unmovable: set[str] = set()  # rejected files that could not be moved away
        self._lock = threading.Lock()
        self._next_scan = 0.0
        self._more = False  # the last listing stopped at SCAN_BATCH
        self._waiting = 0  # files too young at the last listing
        self._full_logged = False
        self._counters = Counters("samples", "bytes", "files_rejected", "files_deleted", "files_replaced",
                                  "delete_errors")

    def open(self) -> None:
        if not os.path.isdir(self.folder):
            if os.path.exists(self.folder):
                raise InputError(f"spool {self.folder}: not a folder; expected the folder applications write to")
            raise SourceError(f"spool {self.folder}: no such folder (yet); expected the folder applications write to")
        self._queue.clear()
        self._next_scan = 0.0

    def read(self, timeout: float) -> Sample | None:
        deadline = time.monotonic() + timeout
        while True:
            full = len(self._pending) >= self.config["max_pending"]
            if full:
                self._log_full()
            else:
                path = self._next()
                if path is not None:
                    sample = self._take(path)
                    if sample is not None:
                        return sample
                    continue
                if self.config["drain"] and not self._waiting and not self._more:
                    raise SourceExhausted(f"spool {self.folder}: no more files")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            wake = self.config["poll_interval"] if full else self._next_scan - time.monotonic()
            time.sleep(min(remaining, max(wake, 0.001)))

    def commit(self, tokens: list[Any]) -> None:
        for token in tokens:
            path = str(token)
            with self._lock:
                key = self._pending.get(path)
            if self._delete(path, key):
                with self._lock:
                    self._pending.pop(path, None)

    def consumed_key(self, token: Any) -> str | None:
        with self._lock:
            key = self._pending.get(token)
        if key is None:
            try:
                key = file_identity(str(token))
            except OSError:
                return None
        return key

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pending = len(self._pending)
        return {**self._counters.snapshot(), "pending": pending}

    # -- listing and reading ----------------------------------------------------------------
    def _next(self) -> str | None:
        due = self._more or self.config["drain"] or time.monotonic() >= self._next_scan
        if not self._queue and due:
            self._scan()
        return self._queue.popleft() if self._queue else None

    def _scan(self) -> None:
        found: list[str] = []
        waiting, min_age, now = 0, self.config["min_age"], time.time()
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    if not self._candidate(entry.name) or entry.path in self._pending or entry.path in self._unmovable:
                        continue
                    try:
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        if min_age and now - entry.stat(follow_symlinks=False).st_mtime < min_age:
                            waiting += 1
                            continue
                    except FileNotFoundError:
                        continue
                    found.append(entry.path)
                    if len(found) >= SCAN_BATCH:
                        break
        except OSError as err:
            raise SourceError(f"spool {self.folder}: cannot list the folder ({err.strerror or err})") from err
        self._queue.extend(sorted(found))
        self._more, self._waiting = len(found) >= SCAN_BATCH, waiting
        self._next_scan = time.monotonic() + self.config["poll_interval"]

    @staticmethod
    def _candidate(name: str) -> bool:
        return not name.startswith(".") and not name.endswith(".tmp") and name.lower().endswith(SUFFIXES)

    def _take(self, path: str) -> Sample | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None  # taken away meanwhile
        except OSError as err:
            self._reject(path, f"cannot read ({err.strerror or err})")
            return None
        if st.st_size > self.config["max_file_bytes"]:
            self._reject(path, f"{st.st_size} bytes; this spool takes at most {self.config['max_file_bytes']} "
                               "per file (max_file_bytes)")
            return None
        try:
            arrays = load_sample_file(path, self.config["max_file_bytes"])
        except InputError as err:
            if not os.path.exists(path):
                return None
            self._reject(path, str(err).removeprefix(f"{path}: "))
            return None
        with self._lock:
            self._pending[path] = file_identity(path, st)
        self._full_logged = False
        sample = Sample(arrays, token=path)
        self._counters.add("samples")
        self._counters.add("bytes", sample.nbytes)
        return sample

    def _log_full(self) -> None:
        if not self._full_logged:
            log.warning("spool %s: %d files read and waiting for a checkpoint (max_pending); reading pauses until "
                        "they are committed", self.folder, len(self._pending))
            self._full_logged = True

    # -- rejecting and deleting ---------------------------------------------------------------
    def _reject(self, path: str, reason: str) -> None:
        self._counters.add("files_rejected")
        target_dir = os.path.join(self.folder, REJECTED)
        name = os.path.basename(path)
        try:
            os.makedirs(target_dir, exist_ok=True)
            target, n = os.path.join(target_dir, name), 0
            while os.path.exists(target):
                n += 1
                target = os.path.join(target_dir, f"{name}.{n}")
            os.rename(path, target)
        except OSError as err:
            self._unmovable.add(path)
            log.error("spool: rejected %s: %s; could not move it to %s/ (%s), it is ignored from now on",
                      path, reason, REJECTED, err.strerror or err)
            return
        log.error("spool: rejected %s: %s; moved to %s", path, reason, target)

    def _delete(self, path: str, key: str | None) -> bool:
        """Delete a committed file; False when it cannot be (it then stays pending, never read again)."""
        try:
            st = os.stat(path)
            if key is not None and file_identity(path, st) != key:
                self._counters.add("files_replaced")  # a new file under the same name: read it later
                log.info("spool: %s changed after it was read; keeping the new file", path)
                return True
            os.unlink(path)
        except FileNotFoundError:
            return True
        except OSError as err:
            self._counters.add("delete_errors")
            log.error("spool: cannot delete %s after its checkpoint (%s); this process will not read it again, "
                      "but a restart would: let edgecal delete files in %s", path, err.strerror or err, self.folder)
            return False
        self._counters.add("files_deleted")
        return True
