"""Helper of scripts/arm64-check: runs on the emulated aarch64 Python (``fingerprint`` on the host too).

    python scripts/arm64_probe.py info         one JSON line: machine, versions, the CPU LLVM compiles for
    python scripts/arm64_probe.py jit          run every kernel `edgecal.warmup` knows; print cache lookups,
                                               hits and seconds (a fresh cache misses, a filled one must hit)
    python scripts/arm64_probe.py fingerprint  histograms, thresholds and int8 images of fixed data, one line
                                               each, so two machines' outputs can be compared byte for byte

As a pytest plugin (``-p arm64_probe``) it loads a Hypothesis profile for emulation: no ``too_slow``
health check (generation is ~30x slower under qemu, which says nothing about the code), derandomized
and without the example database, so the emulated run tests the same examples every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time

import numpy as np


def pytest_configure() -> None:  # pytest hook
    from hypothesis import HealthCheck, settings

    settings.register_profile("arm64-emulated", suppress_health_check=[HealthCheck.too_slow],
                              derandomize=True, database=None)
    settings.load_profile("arm64-emulated")


def info() -> None:
    import llvmlite
    import llvmlite.binding as llvm
    import numba

    print(json.dumps({
        "platform.machine": platform.machine(), "os.uname.machine": os.uname().machine,
        "python": platform.python_version(), "numba": numba.__version__, "llvmlite": llvmlite.__version__,
        "numpy": np.__version__, "llvm_cpu": llvm.get_host_cpu_name(),
        "numba_cache": os.environ.get("NUMBA_CACHE_DIR", ""),
    }))


def jit() -> None:
    from numba.core.caching import Cache

    from edgecal.warmup import warm_all

    lookups: list[bool] = []
    load = Cache.load_overload

    def counting_load(self, *args, **kwargs):
        found = load(self, *args, **kwargs)
        lookups.append(found is not None)
        return found

    Cache.load_overload = counting_load
    start = time.perf_counter()
    warm_all()
    print(len(lookups), sum(lookups), f"{time.perf_counter() - start:.1f}")


def _synthetic() -> dict[str, np.ndarray]:
    """Seeded inputs that reach every conversion and special-value path of the histogram."""
    rng = np.random.default_rng(20240607)
    lap = rng.laplace(0, 2, 50_000)
    lap[::997] = np.nan
    lap[1::1499] = np.inf
    lap[2::1999] = -np.inf
    lap[3::97] = 0.0
    outliers = rng.standard_normal(40_000).astype(np.float32)
    outliers[::4001] *= 40
    return {
        "normal_f32": rng.standard_normal(65_536).astype(np.float32),
        "outliers_f32": outliers,
        "laplace_specials_f64": lap,
        "relu_strided_f32": np.maximum(rng.standard_normal((256, 64)), 0).astype(np.float32)[:, ::3],
        "half_f16": rng.standard_normal(10_000).astype(np.float16),
        "int8": rng.integers(-128, 128, 10_000, dtype=np.int8),
        "int32_wide": rng.integers(-(2**31), 2**31 - 1, 10_000, dtype=np.int32),
        "tiny_f32": (rng.standard_normal(5_000) * 1e-40).astype(np.float32),
        "huge_f64": rng.standard_normal(5_000) * 1e300,
    }


# Smaller searches for the methods whose defaults take seconds per table even natively (minutes under
# qemu): the same code runs, over fewer candidates. kl-mxnet's default is 8001 bins.
FINGERPRINT_PARAMS = {"kl-mxnet": {"num_bins": 1001}}


def fingerprint() -> None:
    import logging

    from edgecal import Calibrator
    from edgecal import reference as ref
    from edgecal.methods import method_names

    logging.getLogger("edgecal").setLevel(logging.ERROR)  # the non-finite values are on purpose
    data = dict(np.load(os.path.join(os.path.dirname(__file__), "..", "edgecal", "data", "demo_activations.npz")))
    data.update(_synthetic())
    for bins in (8192, 2048):
        cal = Calibrator(bins)
        for name, x in data.items():
            for chunk in np.array_split(x, 7):  # streamed: range growth and folds happen mid-tensor
                cal.observe(name, chunk)
        for name in cal.names():
            digest = hashlib.sha256(cal.histogram(name).to_bytes()).hexdigest()[:16]
            print(f"bins={bins} {name} histogram {digest}")
        for method in method_names():
            params = FINGERPRINT_PARAMS.get(method, {})
            for scheme in ("symmetric", "tflite"):
                for name, e in cal.compute(method, scheme=scheme, **params).items():
                    print(f"bins={bins} {name} {method} {scheme} amax={float(e.amax).hex()} "
                          f"scale={float(e.scale).hex()} zp={e.zero_point} flags={','.join(e.flags)}")
    edges = np.array([np.inf, -np.inf, 3e38, -3e38, 1e10, -1e10, 2.5, -2.5, 0.5, -0.5, 1.5, 127.49, -128.5],
                     np.float32)
    for rounding in ref.ROUNDINGS:
        for zp in (0, -128, 5):
            q = ref.quantize(edges, 0.5, zp, rounding)
            print(f"quantize {rounding} zp={zp} {q.tolist()}")


if __name__ == "__main__":
    commands = {"info": info, "jit": jit, "fingerprint": fingerprint}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(commands)}}}")
    commands[sys.argv[1]]()
