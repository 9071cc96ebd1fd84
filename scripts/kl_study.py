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
A fourth compares 8-bit codebooks (``codebook``, objective mse = Lloyd-Max and kl)
with uniform int8 (``mse``) on SQNR, a fifth gives run-time cost per value
(Python: `edgecal.reference`; C: ``firmware_interface/src/ecal_lut.c`` built with
gcc -O2, when gcc is installed), and a sixth the packaged digits CNN (top-1
agreement with float, accuracy, SQNR of the logits and mean SQNR over the
activations the integer runner quantizes: uniform int8 through edgecal's integer
runner against LUT-quantized activations, which also snaps the pre-activation
tensors the integer runner fuses away), when onnx is installed.
"""

from __future__ import annotations

import argparse
from typing import Any
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecal import StreamingHistogram
from edgecal.methods import get_method
from edgecal.methods.kl_refine import density, kl_at
from edgecal.metrics import sqnr_between

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
    """SQNR of the symmetric int8 round trip of ``x`` with range ``amax`` (round half to even)."""
    s = amax / 127.0
    return sqnr_between(x, np.clip(np.rint(x / s), -127, 127) * s)


def tflite_sqnr_db(x: np.ndarray, lo: float, hi: float) -> tuple[float, int]:
    s = (hi - lo) / 255.0
    zp = int(min(max(round(-128.0 - lo / s), -128), 127))
    return sqnr_between(x, (np.clip(np.rint(x / s) + zp, -128, 127) - zp) * s), zp


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


def codebook_table(n: int) -> None:
    from edgecal.reference import lut_dequantize, lut_quantize

    print()
    print("| distribution | uniform int8 (mse) SQNR dB | codebook mse SQNR dB | codebook kl SQNR dB | fit ms (mse / kl) |")
    print("|---|---|---|---|---|")
    for name, make in DISTS.items():
        x = make(np.random.default_rng(0), n)
        h = StreamingHistogram(8192)
        h.update(x)
        row = [f"{sqnr_db(x, float(get_method('mse')(h))):.2f}"]
        times = []
        for objective in ("mse", "kl"):
            value, secs = timed(lambda objective=objective, h=h: get_method("codebook")(h, objective=objective), 1)
            q = lut_dequantize(lut_quantize(x, value.lut), value.lut).astype(np.float64)
            row.append(f"{sqnr_between(x, q):.2f}")
            times.append(f"{secs * 1e3:.0f}")
        print(f"| {name} | {' | '.join(row)} | {' / '.join(times)} |")


def runtime_table() -> None:
    from edgecal.reference import lut_quantize, quantize

    x = np.random.default_rng(1).standard_normal(1 << 20).astype(np.float32)
    levels = tuple(np.sort(np.random.default_rng(2).standard_normal(256)).tolist())
    _, lut_s = timed(lambda: lut_quantize(x, levels))
    _, uni_s = timed(lambda: quantize(x, 0.03, 0))
    print()
    print("| quantize 2^20 float32 values | ns / value |")
    print("|---|---|")
    print(f"| Python, uniform int8 (`edgecal.reference.quantize`) | {uni_s / x.size * 1e9:.2f} |")
    print(f"| Python, 256-level codebook (`edgecal.reference.lut_quantize`) | {lut_s / x.size * 1e9:.2f} |")
    c = _c_bench(levels)
    print(f"| C, 256-level codebook (`ecal_lut_quantize_array`, gcc -O2) | {c} |")


def _c_bench(levels: tuple[float, ...]) -> str:
    import shutil
    import subprocess
    import tempfile

    from edgecal.reference import lut_bounds

    cc = shutil.which("gcc")
    if cc is None:
        return "gcc not installed"
    fw = Path(__file__).resolve().parents[1] / "firmware_interface"
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "lut"
        subprocess.run([cc, "-std=c99", "-O2", "-D_POSIX_C_SOURCE=199309L", f"-I{fw / 'include'}",
                        str(fw / "src/ecal_lut.c"), str(fw / "tests/test_ecal_lut.c"), "-o", str(exe)], check=True)
        text = "\n".join([str(len(levels)), *map(repr, levels), *map(repr, lut_bounds(levels).tolist())]) + "\n"
        out = subprocess.run([str(exe), "bench"], input=text, capture_output=True, text=True, check=True).stdout
    return f"{float(out.split()[1]):.2f}"


def digits_table() -> None:
    try:
        from importlib import resources

        from edgecal import Calibrator
        from edgecal.model import check_model
        from edgecal.model.digits import load_digits_split
        from edgecal.model.float_run import run_float
        from edgecal.model.graph import load_graph
        from edgecal.model.lut_check import check_codebook
    except ImportError as err:
        print(f"\n(digits model skipped: {err})")
        return
    graph = load_graph(str(resources.files("edgecal").joinpath("data/digits_cnn.onnx")))
    split = load_digits_split()
    cal = Calibrator()
    run_float(graph, {graph.inputs[0][0]: split["calib_x"]}, observe=cal.observe)
    feeds, y = {graph.inputs[0][0]: split["eval_x"]}, split["eval_y"]
    print()
    print("| digits CNN, 597 images | top-1 agreement with float | top-1 accuracy (float 98.32 %) | "
          "logits SQNR dB | mean SQNR dB, activations after the input |")
    print("|---|---|---|---|---|")
    shared = None
    for label, table, check in (("uniform int8, mse, symmetric", cal.compute("mse"), check_model),
                                ("uniform int8, mse, tflite", cal.compute("mse", scheme="tflite"), check_model),
                                ("codebook 8-bit, mse", cal.compute("codebook"), check_codebook),
                                ("codebook 8-bit, kl", cal.compute("codebook", objective="kl"), check_codebook),
                                ("codebook 4-bit, mse", cal.compute("codebook", bits=4), check_codebook)):
        r = check(graph, table, feeds, y)
        db = {t.name: t.sqnr_db for t in r.tensors}
        shared = shared or [n for n in db if n != graph.inputs[0][0]]  # the tensors the integer runner quantizes
        print(f"| {label} | {100 * r.top1_agreement:.2f} % | {100 * r.int8_accuracy:.2f} % | "
              f"{db[graph.outputs[0]]:.2f} | {np.mean([db[n] for n in shared]):.2f} |")


def timed(fn, repeats: int = 3) -> tuple[Any, float]:
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
    codebook_table(n)
    runtime_table()
    digits_table()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
