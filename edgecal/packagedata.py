"""`load_npz`: arrays shipped inside the package (`edgecal/data/`)."""

from __future__ import annotations

from importlib import resources

import numpy as np


def load_npz(name: str) -> dict[str, np.ndarray]:
    """Every array of the bundled ``edgecal/data/<name>``, by key."""
    with resources.files("edgecal").joinpath(f"data/{name}").open("rb") as fh:
        with np.load(fh) as npz:
            return {k: npz[k] for k in npz.files}
