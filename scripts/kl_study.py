#!/usr/bin/env python3
"""KL study: the KL methods beside minmax, percentile and mse on synthetic tensors.

Run from the repository root with the project's venv (about 30 s on 2 cores)::

    .venv/bin/python scripts/kl_study.py            # markdown tables on stdout
    .venv/bin/python scripts/kl_study.py --quick    # 50 000 values per tensor

For every seeded distribution (400 000 values, histogram of 8192 bins per sign) and
every method: the symmetric int8 threshold, the continuous KL of `kl-refine`'s
objective at that threshold (128 levels, the |x| histogram read as a piecewise-uniform
density), the SQNR of symmetric int8 (127 levels each side, round half to even, clip)
on the raw values, and the time per tensor (best of 3 after a warm-up call, so JIT
compilation is excluded). A second table gives `kl-refine`'s record: grid threshold,
refined threshold, KL before and after, iterations. A third gives the asymmetric
(``tflite``) scheme: each method's range as `Calibrator.compute(scheme="tflite")`
stores it (scale and integer zero point) and the SQNR of that grid on the raw values.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecal import StreamingHistogram
from edgecal.methods import get_method
from edgecal.methods.kl_refine import density, kl_at

DISTS = {
    "gauss": lambda r, n: r.standard_normal(n),
    "relu(gauss)": lambda r, n: np.maximum(r.standard_normal(n), 0),
    "laplace": lambda r, n: r.laplace(size=n),
    "student-t3": lambda r, n: r.standard_t(3, n),
    "gauss + 0.01% at ±20": lambda r, n: np.concatenate([r.standard_normal(n), np.tile([20.0, -20.0], n // 20000)]),
    "bimodal 1/6": lambda r, n: np.concatenate([r.normal(1, 0.2, n // 2), r.normal(6, 0.5, n // 2)]),
    "lognormal": lambda r, n: r.lognormal(0, 1, n),
}
METHODS = [("kl", {}), ("kl-refine", {}), ("kl-onnxruntime", {"num_bins": 2048, "num_quantized_bins": 128}),
           ("kl-mxnet", {}), ("kl-ncnn", {}), ("minmax", {}), ("percentile", {}), ("mse", {})]


def sqnr_db(x: np.ndarray, amax: float) -> float:
    s = amax / 127.0
    q = np.clip(np.rint(x / s), -127, 127) * s
    return float(10 * np.log10(np.sum(x * x) / max(np.sum((x - q) ** 2), 1e-300)))


def tflite_sqnr_db(x: np.ndarray, lo: float, hi: float) -> tuple[float, int]:
    s = (hi - lo) / 255.0
    zp = int(min(max(round(-128.0 - lo / s), -128), 127))
    q = (np.clip(np.rint(x / s) + zp, -128, 127) - zp) * s
    return float(10 * np.log10(np.sum(x * x) / max(np.sum((x - q) ** 2), 1e-300))), zp


def tflite_table(n: int) -> None:
    print()
    print("| distribution | method | lo | hi | zero point | SQNR dB | ms / tensor |")
    print("|---|---|---|---|---|---|---|")
    for name, make in DISTS.items():
        x = make(np.random.default_rng(0), n)
        h = StreamingHistogram(8192)
        h.update(x)
        for method in ("kl", "kl-refine", "mse"):
            m = get_method(method)
            params = {"num_levels": 256} if method == "kl" and h.min >= 0 else {}
            (lo, hi), secs = timed(lambda m=m, h=h, params=params: m.fit_range(h, **params))
            sq, zp = tflite_sqnr_db(x, float(lo), float(hi))
            print(f"| {name} | {method} | {float(lo):.4g} | {float(hi):.4g} | {zp} | {sq:.2f} | {secs * 1e3:.1f} |")


def timed(fn, repeats: int = 3) -> tuple[float, float]:
    value = fn()
    best = min(_once(fn) for _ in range(repeats))
    return value, best


def _once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    n = 50_000 if ap.parse_args().quick else 400_000
    print("| distribution | method | amax | KL (continuous) | SQNR dB | ms / tensor |")
    print("|---|---|---|---|---|---|")
    records = []
    for name, make in DISTS.items():
        x = make(np.random.default_rng(0), n)
        h = StreamingHistogram(8192)
        h.update(x)
        pre, d, top = density(h)
        for method, params in METHODS:
            m = get_method(method)
            amax, secs = timed(lambda m=m, h=h, params=params: m(h, **params))
            t = min(float(amax) / h.bin_width, top)
            kl = kl_at(pre, d, top, max(t, 1.0), 128)
            print(f"| {name} | {method} | {float(amax):.4g} | {kl:.6f} | {sqnr_db(x, float(amax)):.2f} | {secs * 1e3:.1f} |")
            if method == "kl-refine":
                records.append((name, amax.trace, float(amax)))
    print()
    print("| distribution | grid amax | refined amax | KL grid | KL refined | iterations | last step | converged |")
    print("|---|---|---|---|---|---|---|---|")
    for name, tr, amax in records:
        print(f"| {name} | {tr['t_grid']:.6g} | {amax:.6g} | {tr['kl_grid']:.6f} | {tr['kl']:.6f} | "
              f"{tr['iterations']} | {tr['last_step']:.2g} | {tr['converged']} |")
    tflite_table(n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
