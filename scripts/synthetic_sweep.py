#!/usr/bin/env python3
"""How much each method clips, and what its int8 round trip costs, over sample sizes and shapes.

For every distribution (uniform, Gaussian, post-ReLU, Laplace, Student-t with 2
degrees of freedom, bimodal, a hard-swish-like one-sided tensor with a small
negative tail, a sparse tensor of mostly zeros) and every size from 100 values
to 100M (``--max-size``), each method's table entry (both schemes) is applied to
the very values it was calibrated on:

* clipped: the share of values more than half a step outside the entry's range;
* flagged: whether the entry carries ``clipped_heavy`` (the promise: nothing
  clips more than 1 % unflagged);
* SQNR of the int8 round trip, and its loss against the best method on that case.

Run: ``.venv/bin/python scripts/synthetic_sweep.py [--max-size 100000000]``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections import defaultdict

import numpy as np

from edgecal import Calibrator
from edgecal.methods import DEFAULT_METHOD
from edgecal.metrics import sqnr_from_sums

METHODS = [DEFAULT_METHOD, "auto", "kl", "minmax", "percentile"]
SCHEMES = ["symmetric", "tflite"]


DISTRIBUTIONS = {  # name -> (rng, n) -> float32 values; made one at a time so 100M values stay within memory
    "uniform": lambda r, n: r.uniform(-1, 1, n).astype(np.float32),
    "gauss": lambda r, n: r.standard_normal(n, dtype=np.float32),
    "relu": lambda r, n: np.maximum(r.standard_normal(n, dtype=np.float32), 0),
    "laplace": lambda r, n: r.laplace(size=n).astype(np.float32),
    "student-t2": lambda r, n: r.standard_t(2, n).astype(np.float32),
    "bimodal": lambda r, n: np.concatenate([r.normal(1, 0.05, n // 2), r.normal(6, 0.05, n - n // 2)]).astype(np.float32),
    "hard-swish": lambda r, n: np.maximum(r.standard_normal(n, dtype=np.float32) * 30, np.float32(-0.375)),
    "mostly zeros": lambda r, n: np.where(r.random(n, dtype=np.float32) < 0.95, np.float32(0),
                                          r.standard_normal(n, dtype=np.float32)),
}


def round_trip(x: np.ndarray, entry) -> tuple[float, float]:
    """(clipped share, SQNR dB) of ``x`` through ``entry``'s grid, in chunks (bounded memory)."""
    clipped = 0
    err = sig = 0.0
    lo, hi = entry.range
    for start in range(0, x.size, 1 << 22):
        v = x[start:start + (1 << 22)].astype(np.float64)
        clipped += int(np.count_nonzero((v > hi + entry.scale / 2) | (v < lo - entry.scale / 2)))
        q = np.clip(np.round(v / entry.scale) + entry.zero_point, entry.qmin, entry.qmax)
        err += float(np.sum((v - (q - entry.zero_point) * entry.scale) ** 2))
        sig += float(np.sum(v * v))
    return clipped / x.size, sqnr_from_sums(sig, err)


def sweep(sizes: list[int], seeds: int) -> list[dict]:
    rows = []
    for n in sizes:
        for seed in range(seeds):
            for name, make in DISTRIBUTIONS.items():
                x = make(np.random.default_rng(seed), n)
                cal = Calibrator()
                cal.observe(name, x)
                for scheme in SCHEMES:
                    for method in METHODS:
                        entry = cal.compute(method, scheme=scheme)[name]
                        clipped, sqnr = round_trip(x, entry)
                        rows.append(dict(n=n, seed=seed, dist=name, scheme=scheme, method=method, clipped=clipped,
                                         flagged="clipped_heavy" in entry.flags, sqnr=sqnr))
    return rows


def report(rows: list[dict]) -> list[str]:
    best: dict[tuple, float] = defaultdict(lambda: -math.inf)
    for r in rows:
        key = (r["n"], r["seed"], r["dist"], r["scheme"])
        best[key] = max(best[key], r["sqnr"])
    out = ["| method | cases | max clipped (unflagged) | max clipped (flagged) | flagged cases | "
           "mean SQNR loss vs best | worst SQNR loss |", "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        loss = [best[(r["n"], r["seed"], r["dist"], r["scheme"])] - r["sqnr"] for r in mine]
        unflagged = max((r["clipped"] for r in mine if not r["flagged"]), default=0.0)
        flagged = max((r["clipped"] for r in mine if r["flagged"]), default=0.0)
        out.append(f"| {method} | {len(mine)} | {100 * unflagged:.2f} % | {100 * flagged:.2f} % | "
                   f"{sum(r['flagged'] for r in mine)} | {np.mean(loss):.2f} dB | {max(loss):.2f} dB |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-size", type=int, default=100_000_000, help="largest tensor (default 100M values)")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)  # the flags are counted below instead
    sizes = [n for n in (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000) if n <= args.max_size]
    rows = sweep(sizes, args.seeds)
    print(f"sizes {sizes}, {args.seeds} seeds, {len(DISTRIBUTIONS)} distributions, "
          f"schemes {', '.join(SCHEMES)}\n")
    print("\n".join(report(rows)))
    worst = max((r for r in rows if r["method"] == DEFAULT_METHOD and not r["flagged"]), key=lambda r: r["clipped"])
    print(f"\ndefault ({DEFAULT_METHOD}): largest unflagged clipping {100 * worst['clipped']:.3f} % "
          f"({worst['dist']}, {worst['n']} values, {worst['scheme']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
