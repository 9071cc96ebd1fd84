"""The one small interface every activation source implements, and its registry.

A source delivers `Sample`s: the intact tensors of one inference (name -> array)
plus an optional ``token`` the source wants back through `Source.commit` once the
sample's data is safe in a checkpoint (a spool folder deletes its files then, not
before). Sources are configured from a ``[[source]]`` table of the daemon's TOML
config: ``kind`` picks the class, the other keys must be in its ``FIELDS``.

The daemon runs each source in its own thread and calls, in that thread:

* `open` (again after any `SourceError`, with backoff: a serial device that
  vanished, a socket peer that went away),
* `read` in a loop: a `Sample`, or None when nothing arrived within ``timeout``
  (so a stop request is noticed), or `SourceExhausted` when there will never be
  more (a finite folder of model inputs), and
* `close` at the end. `commit` and `stats` are called from the daemon's main
  thread and must be thread-safe.

`edgecal.sources.memory.MemorySource` is the shortest complete source: copy it to
write a new one. A source of another distribution registers through the
``edgecal.sources`` entry-point group (see `edgecal.plugins`).
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..config import Field
from ..errors import SourceError, SourceExhausted, UnknownNameError  # noqa: F401  (the first two: re-exported)
from ..plugins import load_group


@dataclass
class Sample:
    """The tensors of one inference; ``token`` comes back through `Source.commit`."""

    arrays: dict[str, np.ndarray]
    token: Any = None
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.nbytes = sum(int(np.asarray(a).nbytes) for a in self.arrays.values())


class Source(abc.ABC):
    """An activation source. Subclasses set ``KIND`` and ``FIELDS`` and are registered."""

    KIND: ClassVar[str] = ""
    FIELDS: ClassVar[Mapping[str, Field]] = {}
    #: True when the producer cannot wait (a device, a socket peer): a full queue drops
    #: whole samples and counts them. False: the reader thread waits (backpressure).
    LIVE: ClassVar[bool] = False
    #: True when the data behind a committed token stays readable (a model source's input
    #: files): its `consumed_key` must stay in the state for good. False: `commit` removes
    #: the data (a spool deletes its files), so the key may be dropped once that is checkpointed.
    KEEP_CONSUMED: ClassVar[bool] = False

    def __init__(self, **config: Any) -> None:
        self.config = config

    @abc.abstractmethod
    def open(self) -> None:
        """Connect / start; raise `SourceError` for a transient failure."""

    @abc.abstractmethod
    def read(self, timeout: float) -> Sample | None:
        """The next sample, None after ``timeout`` seconds without one, or `SourceExhausted`."""

    def commit(self, tokens: list[Any]) -> None:
        """The samples carrying ``tokens`` are in a checkpoint now; default: nothing to do."""

    def close(self) -> None:
        """Release the device, socket or files; default: nothing to do."""

    def stats(self) -> dict[str, Any]:
        """Counters for the status line and the table's provenance (JSON values)."""
        return {}

    def consumed_key(self, token: Any) -> str | None:
        """A key recorded in the checkpoint so a restart never folds the same data twice."""
        return None

    def model_hash(self) -> str | None:
        """The model the samples come from, once `open` succeeded (for the state and table), or None."""
        return None


_SOURCES: dict[str, type[Source]] = {}


def register_source(cls: type[Source]) -> type[Source]:
    """Class decorator: make ``cls`` available as ``kind = "<cls.KIND>"``.

    A module that applies it on import is a source plugin as it stands: name it in
    the ``edgecal.sources`` entry-point group (see `edgecal.plugins`).
    """
    if not cls.KIND:
        raise TypeError(f"{cls.__name__} has no KIND")
    _SOURCES[cls.KIND] = cls
    return cls


def _register_plugin(name: str, obj: Any) -> None:
    """An ``edgecal.sources`` entry point: a module that registered itself, or a `Source` subclass."""
    if isinstance(obj, type) and issubclass(obj, Source):
        register_source(obj)
    elif not inspect.ismodule(obj):
        raise TypeError(f"expected a module or an edgecal.sources.Source subclass, found {type(obj).__name__}")


def _sources() -> dict[str, type[Source]]:
    load_group("edgecal.sources", _register_plugin)
    return _SOURCES


def source_class(kind: str) -> type[Source]:
    """The source registered as ``kind``; `UnknownNameError` lists the known kinds."""
    _sources()
    try:
        return _SOURCES[kind]
    except KeyError:
        raise UnknownNameError("source kind", kind, list(_SOURCES)) from None


def source_kinds() -> list[str]:
    """Kinds of every registered source."""
    return sorted(_sources())


SourceFactory = Callable[..., Source]
