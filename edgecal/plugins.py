"""Methods, formats and sources from other distributions, found through entry points.

A distribution extends edgecal by declaring entry points in one of three groups::

    [project.entry-points."edgecal.methods"]
    crush = "edgecal_crush"            # a module that registers itself on import

    [project.entry-points."edgecal.formats"]
    csvfmt = "edgecal_csv:FORMAT"      # or the object itself: a `Format`, a `Source`
                                       # subclass, or a method function (registered
                                       # under the entry point's name)

Each group is loaded lazily, once, the first time a registry of that kind is asked
for a name or for its list of names. A plugin that fails to import or that names
the wrong kind of object is skipped with one warning naming it: a broken third-party
package must not stop calibration with the built-in methods.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

log = logging.getLogger(__name__)

GROUPS = ("edgecal.methods", "edgecal.formats", "edgecal.sources")

_loaded: set[str] = set()
_lock = threading.RLock()


def load_group(group: str, register: Callable[[str, Any], None]) -> None:
    """Load every entry point of ``group`` once; ``register(name, obj)`` registers what a module did not."""
    with _lock:
        if group in _loaded:
            return
        _loaded.add(group)  # before loading: a plugin that asks the registry must not load itself again
        for ep in _entry_points(group):
            _load_one(group, ep, register)


def entry_point_names(group: str) -> list[str]:
    """Names of the entry points of ``group``, sorted, without loading them (for help texts)."""
    return [ep.name for ep in _entry_points(group)]


def _entry_points(group: str) -> list[EntryPoint]:
    try:
        return sorted(entry_points(group=group), key=lambda ep: ep.name)
    except Exception as err:  # unreadable metadata of some installed distribution
        log.warning("cannot list %s plugins (%s: %s); using the built-in ones only", group, type(err).__name__, err)
        return []


def _load_one(group: str, ep: EntryPoint, register: Callable[[str, Any], None]) -> None:
    try:
        register(ep.name, ep.load())
    except Exception as err:  # any failure of third-party code: skip it, keep the built-ins
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        log.warning("plugin %s %r (%s) skipped: %s: %s", group, ep.name, ep.value, type(err).__name__, message)


def reset() -> None:
    """Forget which groups were loaded, so the next registry look-up loads them again (tests, long-lived hosts)."""
    with _lock:
        _loaded.clear()
