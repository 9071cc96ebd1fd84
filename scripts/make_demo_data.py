#!/usr/bin/env python3
"""Regenerate edgecal/data/demo_activations.npz, the sample `edgecal demo` calibrates.

Deterministic (seeded). Four tensors of different character, shaped like the
activations of a small network over a batch of inputs:

- conv1_relu: post-ReLU feature maps (about half exact zeros, a long right tail);
- fc1: Gaussian-like pre-activations;
- attn_scores: heavy-tailed (Laplace) with rare large outliers (0.02% at up to 40x);
- logits: a few large values per row over a bulk of small ones.
"""

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "edgecal" / "data" / "demo_activations.npz"


def main() -> None:
    rng = np.random.default_rng(20261127)
    pre = rng.normal(0.2, 1.0, size=(8, 8, 16, 16)) * rng.gamma(2.0, 0.6, size=(1, 8, 1, 1))
    conv1 = np.maximum(pre, 0.0)
    fc1 = rng.normal(0.0, 0.8, size=(16, 1024))
    attn = rng.laplace(0.0, 0.5, size=(8, 4096))
    hits = rng.choice(attn.size, size=attn.size // 5000, replace=False)
    attn.flat[hits] *= rng.uniform(10.0, 40.0, size=hits.size)
    logits = rng.normal(0.0, 1.0, size=(64, 10))
    logits[np.arange(64), rng.integers(0, 10, 64)] += rng.uniform(6.0, 12.0, 64)
    arrays = {k: v.astype(np.float32) for k, v in
              {"conv1_relu": conv1, "fc1": fc1, "attn_scores": attn, "logits": logits}.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): " + ", ".join(f"{k}{v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
