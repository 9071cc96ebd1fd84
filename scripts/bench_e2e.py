"""End-to-end benchmark sections, run by scripts/bench.py (``--only calibrate,network``).

m. calibrate: `edgecal calibrate` over 1 GiB of float32 .npy files (64 files x 16 MiB, 4 tensors in
   folders of numbered samples; 128 MiB with --quick), written to a temp dir and deleted after,
   against reading every file with numpy and taking ``np.abs(x).max()``. Both in-process
   (`edgecal.cli.main` vs the numpy loop, kernels already loaded) and as commands in fresh
   processes (`python -m edgecal calibrate` vs `python -c` running the numpy loop), best of N.
n. network: the activation shapes of the bundled digits CNN (`edgecal/data/digits_cnn.onnx`, every
   node output, batch 64) as seeded random data, N batches, fed through `Calibrator.observe_many`
   (with the KL table computed), through `edgecal calibrate` on the same batches saved as .npz, and
   through ONNX Runtime's `HistogramCollector` (entropy, 2048/128, the collector its
   `create_calibrator(..., CalibrationMethod.Entropy)` uses); wall time and peak RSS of each in a
   fresh process.

Each section is a pair (bench(cfg) -> dict, print(dict)). Speeds are ratios to baselines measured
in the same run.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20
CAL_TENSORS = 4
FILE_BYTES = 16 * MB

# -- m. calibrate end to end --------------------------------------------------------------
_NUMPY_LOOP = ("import sys, numpy as np\nfrom pathlib import Path\n"
               "amax = max(float(np.abs(np.load(f)).max()) for f in sorted(Path(sys.argv[1]).rglob('*.npy')))\n")


def _write_npy_files(folder: Path, total_bytes: int) -> int:
    """``total_bytes`` of seeded float32 in FILE_BYTES .npy files, ``t<k>/<nnnn>.npy`` (tensor t<k>)."""
    rng = np.random.default_rng(0)
    files = max(CAL_TENSORS, total_bytes // FILE_BYTES)
    for i in range(files):
        sub = folder / f"t{i % CAL_TENSORS}"
        sub.mkdir(parents=True, exist_ok=True)
        x = rng.standard_normal(FILE_BYTES // 4, dtype=np.float32) * (1 + i % CAL_TENSORS)
        np.save(sub / f"{i:04d}.npy", x.reshape(64, -1))
    return files


def _numpy_loop(folder: Path) -> float:
    return max(float(np.abs(np.load(f)).max()) for f in sorted(folder.rglob("*.npy")))


def _best(fn, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _run(argv: list[str]) -> None:
    subprocess.run([sys.executable, *argv], cwd=REPO, check=True, capture_output=True)


def bench_calibrate(cfg: dict) -> dict:
    """Seconds of `edgecal calibrate` and of the numpy read + max loop, in-process and as commands."""
    import contextlib
    import io

    from edgecal.cli import main

    total = 1 << 30 if cfg.get("mode") == "full" else 128 * MB
    repeats = 3 if cfg.get("mode") == "full" else 2
    folder = Path(tempfile.mkdtemp(prefix="edgecal-calibrate-"))
    try:
        files = _write_npy_files(folder / "acts", total)
        out = folder / "table.json"
        argv = ["calibrate", str(folder / "acts"), "-o", str(out), "-q"]
        with contextlib.redirect_stdout(io.StringIO()):
            main(argv)  # kernels loaded (and compiled once) before timing
            res = {"files": files, "bytes": total, "repeats": repeats,
                   "numpy_s": _best(lambda: _numpy_loop(folder / "acts"), repeats),
                   "inproc_s": _best(lambda: main(argv), repeats)}
        res["numpy_cmd_s"] = _best(lambda: _run(["-c", _NUMPY_LOOP, str(folder / "acts")]), repeats)
        res["cmd_s"] = _best(lambda: _run(["-m", "edgecal", *argv]), repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return res


def print_calibrate(r: dict) -> None:
    print(f"\n[m] edgecal calibrate, {r['files']} .npy files, {r['bytes'] / MB:.0f} MiB float32, {CAL_TENSORS} tensors "
          f"(best of {r['repeats']}; baseline: np.load + np.abs(x).max() per file)")
    print(f"{'how':<14}{'numpy s':>9}{'edgecal s':>11}{'ratio':>8}{'edgecal MB/s':>14}")
    for label, base, ours in (("in-process", "numpy_s", "inproc_s"), ("command", "numpy_cmd_s", "cmd_s")):
        print(f"{label:<14}{r[base]:>9.3f}{r[ours]:>11.3f}{r[ours] / r[base]:>8.2f}{r['bytes'] / 1e6 / r[ours]:>14.0f}")


# -- n. a real network's shapes ------------------------------------------------------------
def network_shapes() -> dict[str, tuple[int, ...]]:
    """Every activation of the bundled digits CNN (graph input, then node outputs) and its shape, batch left out."""
    from edgecal.model.float_run import run_float
    from edgecal.model.graph import load_graph

    graph = load_graph(REPO / "edgecal" / "data" / "digits_cnn.onnx")
    with np.load(REPO / "edgecal" / "data" / "digits_split.npz") as split:
        x = split["calib_x"][:1]
    seen: dict[str, tuple[int, ...]] = {}
    run_float(graph, {graph.inputs[0][0]: x}, observe=lambda name, a: seen.setdefault(name, tuple(a.shape[1:])))
    return seen


_NET_CHILD = r"""
import contextlib, io, json, sys, time
from pathlib import Path
import numpy as np

def hwm():
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))

folder, who = Path(sys.argv[1]), sys.argv[2]
files = sorted(folder.glob("*.npz"))
batches = [dict(np.load(f)) for f in files]
if who == "edgecal":
    from edgecal import Calibrator
    warm = Calibrator()
    warm.observe("warm", np.arange(-4.0, 4.0, dtype=np.float32))
    warm.compute("kl")  # kernels loaded (compiled once into the cache) before timing
    t = time.perf_counter()
    cal = Calibrator()
    for b in batches:
        cal.observe_many(b)
    amax = {k: e.amax for k, e in cal.compute("kl").items()}
else:
    from onnxruntime.quantization.calibrate import HistogramCollector
    t = time.perf_counter()
    col = HistogramCollector(method="entropy", symmetric=True, num_bins=2048, num_quantized_bins=128,
                             percentile=99.999, scenario="same")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints on every call
        for b in batches:
            col.collect({k: [v] for k, v in b.items()})
        ranges = col.compute_collection_result()
    amax = {k: max(abs(float(r[0])), abs(float(r[1]))) for k, r in ranges.items()}
print(json.dumps({"s": time.perf_counter() - t, "hwm_mib": hwm(), "tensors": len(amax)}))
"""

# `python -m edgecal ARGS`, then its peak RSS (VmHWM: this process's own, unlike a fork's inherited ru_maxrss)
_CLI_CHILD = ("import atexit, json, sys\n"
              "atexit.register(lambda: print(json.dumps({'hwm_mib': next(int(l.split()[1]) / 1024 for l in "
              "open('/proc/self/status') if l.startswith('VmHWM'))})))\n"
              "from edgecal.cli import main\nsys.exit(main(sys.argv[1:]))\n")


def _write_batches(folder: Path, shapes: dict[str, tuple[int, ...]], batches: int, batch: int) -> int:
    """``batches`` .npz files, one array per activation of ``batch`` samples (post-ReLU-like, seeded); bytes."""
    rng = np.random.default_rng(1)
    total = 0
    for i in range(batches):
        arrays = {n: np.maximum(rng.standard_normal((batch, *s), dtype=np.float32), 0) * (1 + k % 5)
                  for k, (n, s) in enumerate(shapes.items())}
        np.savez(folder / f"{i:04d}.npz", **arrays)
        total += sum(a.nbytes for a in arrays.values())
    return total


def _child_json(argv: list[str], repeats: int) -> dict:
    """The fastest run of ``python argv`` of ``repeats``: its last stdout line (JSON) with its wall time."""
    best: dict = {"s": math.inf}
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t
        if proc.returncode:
            raise RuntimeError(f"benchmark child {argv[:2]} failed ({proc.returncode}):\n{proc.stderr}")
        row = {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_s": wall}
        if row.get("s", wall) < best["s"]:
            best = {**row, "s": row.get("s", wall)}
    return best


def bench_network(cfg: dict) -> dict:
    """observe_many, `edgecal calibrate` and ORT's HistogramCollector on a real network's activation shapes."""
    import importlib.util

    full = cfg.get("mode") == "full"
    batches, batch, repeats = (16, 64, 2) if full else (8, 64, 1)
    shapes = network_shapes()
    folder = Path(tempfile.mkdtemp(prefix="edgecal-network-"))
    try:
        data = folder / "batches"
        data.mkdir()
        res: dict = {"tensors": len(shapes), "batches": batches, "batch": batch, "repeats": repeats,
                     "bytes": _write_batches(data, shapes, batches, batch)}
        res["observe_many"] = _child_json(["-c", _NET_CHILD, str(data), "edgecal"], repeats)
        cmd = ["-c", _CLI_CHILD, "calibrate", str(data), "-o", str(folder / "t.json"), "-m", "kl", "-q"]
        res["calibrate_cmd"] = _child_json(cmd, repeats)
        if importlib.util.find_spec("onnxruntime") is None:
            res["ort"] = None
        else:
            res["ort"] = _child_json(["-c", _NET_CHILD, str(data), "ort"], 1)  # ~100x slower: one run
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return res


def print_network(r: dict) -> None:
    print(f"\n[n] digits CNN activation shapes ({r['tensors']} tensors), {r['batches']} random batches of "
          f"{r['batch']}, {r['bytes'] / MB:.1f} MiB float32, fresh processes (best of {r['repeats']}; ONNX Runtime once)")
    print(f"{'collector':<52}{'seconds':>9}{'x edgecal':>11}{'peak MiB':>10}")
    base = r["observe_many"]["s"]
    rows = [("edgecal Calibrator.observe_many + compute('kl')", r["observe_many"]),
            ("`edgecal calibrate -m kl` (whole command)", {**r["calibrate_cmd"], "s": r["calibrate_cmd"]["wall_s"]})]
    if r["ort"] is not None:
        rows.append(("onnxruntime HistogramCollector(entropy, 2048/128)", r["ort"]))
    for label, row in rows:
        print(f"{label:<52}{row['s']:>9.3f}{row['s'] / base:>11.2f}{row['hwm_mib']:>10.1f}")
    if r["ort"] is None:
        print("onnxruntime not installed: pip install -e '.[bench]'")


SECTIONS = {"calibrate": (bench_calibrate, print_calibrate), "network": (bench_network, print_network)}
