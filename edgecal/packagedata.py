"""`load_npz`: arrays shipped inside the package (`edgecal/data/`), read by `edgecal.arrays`."""

from __future__ import annotations

from importlib import resources

import numpy as np

from .arrays import read_arrays

MAX_BUNDLED_BYTES = 64 << 20  # the bundled files hold a few MB; anything bigger is not ours


def load_npz(name: str) -> dict[str, np.ndarray]:
    """Every array of the bundled ``edgecal/data/<name>``, by key."""
    with resources.as_file(resources.files("edgecal").joinpath(f"data/{name}")) as path:
        return read_arrays(path, MAX_BUNDLED_BYTES)
