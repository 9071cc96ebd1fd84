"""`merge_states` and `merge_state_files`: the exact merge of any number of states in bounded memory.

States are folded one at a time into the first, each loaded only when its turn
comes and dropped once added, so merging thousands of state files holds two states
at once, never all of them. `Calibrator.merge` is exact and associative (histograms
are aligned on their common power-of-two lattice), so this left fold, a tree of
merges (`edgecal.dask`) and one calibrator fed every input give the same state: same
tensors in the same order (first seen first), same counts, same bytes.

>>> import numpy as np
>>> parts = [Calibrator(16) for _ in range(3)]
>>> for k, part in enumerate(parts):
...     part.observe("x", np.array([10.0 ** k]))
>>> merged = merge_states(iter(parts))
>>> merged.histogram("x").max, merged.samples("x")
(100.0, 3)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from .calibrator import Calibrator
from .errors import InputError

StatePath = str | os.PathLike[str]


def merge_states(states: Iterable[Calibrator]) -> Calibrator:
    """The first state with every later one merged into it, in order; the iterable is read lazily."""
    it = iter(states)
    merged = next(it, None)
    if merged is None:
        raise InputError("no states to merge; expected at least one")
    for other in it:
        merged.merge(other)
    return merged


def merge_state_files(paths: Iterable[StatePath],
                      load: Callable[[StatePath], Calibrator] = Calibrator.load_state) -> Calibrator:
    """The states in ``paths`` merged in order, each loaded by ``load`` only when it is added.

    A state that cannot be merged (other bins, another model, an input already
    counted) is named in the one-line error.
    """
    merged: Calibrator | None = None
    for path in paths:
        state = load(path)
        if merged is None:
            merged = state
            continue
        try:
            merged.merge(state)
        except InputError as err:
            raise InputError(f"{path}: {err}") from None
        del state  # dropped before the next load: at most two states are alive
    if merged is None:
        raise InputError("no states to merge; expected at least one")
    return merged
