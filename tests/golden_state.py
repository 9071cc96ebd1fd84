"""The fixed calibrator state tests/golden/state.ecst is written from (scripts/regen_golden.py).

The file pins the ECST/EHST state layout: states written by earlier edgecal versions
must keep loading, with every counter as `naive.lattice_histogram` gives it. The
batches cover range growth, NaN, +-Inf, +-0, subnormals, float64 and integer input.
"""

from __future__ import annotations

import numpy as np

BINS = 256
MODEL_HASH = "sha256:" + "fedcba9876543210" * 4
CONSUMED = ["inputs/a.npy|1|2|3:4", "inputs/b.npz|5|6|7:8"]


def golden_batches() -> dict[str, list[np.ndarray]]:
    """name -> the arrays observed, in order (seeded: the same on every machine)."""
    rng = np.random.default_rng(20261201)
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -3e-39, 7.5], np.float32)
    return {
        "conv1/out": [rng.standard_normal(1000).astype(np.float32) * 0.01, special,
                      rng.standard_normal(500).astype(np.float32) * 300.0],
        "relu 2": [np.maximum(rng.standard_normal(777), 0.0), np.array([1e6, 0.0])],
        "logits:int8": [rng.integers(-128, 128, 300, dtype=np.int8)],
    }


def golden_calibrator():
    from edgecal import Calibrator

    cal = Calibrator(BINS, model_hash=MODEL_HASH)
    for name, batches in golden_batches().items():
        for batch in batches:
            cal.observe(name, batch)
    cal.consumed = set(CONSUMED)
    return cal
