#!/usr/bin/env python3
"""edgecal benchmarks: ingest speed, KL search speed, JIT cost, memory, other calibrators.

Run from the repository root with the project's venv::

    .venv/bin/python scripts/bench.py                 # full run, about 1 minute on 2 cores
    .venv/bin/python scripts/bench.py --quick         # reduced sizes, 10-20 s, for smoke tests
    .venv/bin/python scripts/bench.py --json out.json # the same figures as JSON too

Every figure comes from seeded data generated here. Speeds are given as ratios to a
reference measured in the same run (best of several repeats), because absolute
times on a shared machine drift from one minute to the next.

a. ingest: `StreamingHistogram.update` and `Calibrator.observe` against a bare
   Numba max(|x|) loop over the same batches (DESIGN.md target: within 2x).
b. `kl_search` against literal O(n^2) evaluations of the same definition (NVIDIA
   semantics, see edgecal/methods/kl.py), in Numba and in numpy; all must agree on i.
c. JIT: import and first observe+compute in fresh processes with an empty, then a
   filled, NUMBA_CACHE_DIR.
d. memory: VmRSS/VmHWM of a process streaming 1 GiB of float32 through a Calibrator.
e. ONNX Runtime's HistogramCollector (entropy), PyTorch's HistogramObserver and NVIDIA
   ModelOpt's HistogramCalibrator on the same batches, when they are installed
   (`pip install -e '.[bench]'`; `pip install torch==2.13.0` for the torch one, and
   `pip install nvidia-modelopt requests huggingface_hub` on top for ModelOpt).
f. int8 reference kernels: conv 2D and fully connected MAC/s (edgecal.reference) beside numpy
   float32 on the same shapes.
g. serial link: host decode throughput of edgecal.link (COBS, CRC-32, checks, tensor
   reassembly) in MB/s of wire bytes (goal: >= 20 MB/s; 3 Mbaud carries 0.3 MB/s).
h. merge: peak RSS and time of `edgecal.merge.merge_state_files` over N state files, beside
   loading every state first and then folding (what `edgecal merge` did before).
i-l. footprint on the device (startup, daemon memory, many tensors, threads): scripts/bench_device.py;
   ``--only startup,...`` runs just those sections.
m-n. end to end (`edgecal calibrate` on 1 GiB of .npy; a real network's shapes beside ONNX Runtime's
   collector): scripts/bench_e2e.py.

Progress goes to stderr; the tables go to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

import edgecal
from edgecal import Calibrator, StreamingHistogram
from edgecal.methods import kl_search

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import SECTIONS, absmax  # noqa: E402  (a sibling script, not a package)
from bench_e2e import SECTIONS as E2E_SECTIONS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOAL_INGEST_RATIO = 2.0
GOAL_KL_MS = 1.0
GOAL_KL_SPEEDUP = 20.0
LEVELS = 128
START_BIN = 128
MB = 1 << 20
DISTRIBUTIONS = ("gaussian", "relu", "laplace+outliers")

FULL = {
    "mode": "full", "values": 32 * MB, "batches": (MB, 16 * 1024), "repeats": 5,
    "kl_bins": (2048, 4096, 8192), "kl_repeats": 50, "naive_repeats": 3, "numpy_repeats": 1,
    "jit_trials": 3, "rss_bytes": 1 << 30, "soak_bytes": 1 << 30, "rss_tensors": 8, "other_repeats": 2,
}
QUICK = {
    **FULL, "mode": "quick", "values": 4 * MB, "repeats": 3, "kl_repeats": 10,
    "naive_repeats": 1, "jit_trials": 1, "rss_bytes": 128 * MB, "soak_bytes": 128 * MB, "other_repeats": 1,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- data --------------------------------------------------------------------------------
def make_data(kind: str, n: int, seed: int = 0) -> np.ndarray:
    """n float32 values of one of DISTRIBUTIONS, seeded."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return rng.standard_normal(n, dtype=np.float32)
    if kind == "relu":  # post-ReLU: half the values are exact zeros
        x = rng.standard_normal(n, dtype=np.float32)
        return np.maximum(x, 0.0, out=x)
    if kind == "laplace+outliers":  # 1e-4 of the values from a 15x wider Laplace
        x = rng.laplace(size=n).astype(np.float32)
        idx = rng.integers(0, n, size=max(1, n // 10_000))
        x[idx] *= 15.0
        return x
    raise ValueError(f"unknown distribution {kind!r}; known: {', '.join(DISTRIBUTIONS)}")


def split(x: np.ndarray, batch: int) -> list[np.ndarray]:
    return [x[i : i + batch] for i in range(0, x.size, batch)]


def fmt_count(n: int) -> str:
    return f"{n // MB}M" if n % MB == 0 else f"{n // 1024}K" if n % 1024 == 0 else str(n)


# -- a. ingest ---------------------------------------------------------------------------
def timed(fn, repeats: int):
    """(best wall time of ``repeats`` calls, result of the last call)."""
    best, out = math.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def best_time(fn, repeats: int) -> float:
    return timed(fn, repeats)[0]


def bench_ingest(x: np.ndarray, kind: str, cfg: dict) -> list[dict]:
    rows = []
    hist_bins = StreamingHistogram(2048).bins
    cal_bins = Calibrator().bins
    for batch in cfg["batches"]:
        parts = split(x, batch)
        absmax(parts[0])  # compile outside the timing
        StreamingHistogram(2048).update(parts[0])
        Calibrator().observe("t", parts[0])

        def run_base():
            for p in parts:
                absmax(p)

        def run_hist():
            h = StreamingHistogram(2048)
            for p in parts:
                h.update(p)

        def run_cal():
            c = Calibrator()
            for p in parts:
                c.observe("t", p)
            c.flush()  # batches of up to 16K values are staged: their binning counts too

        best = {"base": math.inf, "hist": math.inf, "cal": math.inf}
        for _ in range(cfg["repeats"]):  # interleaved, so drift hits all three alike
            for key, fn in (("base", run_base), ("hist", run_hist), ("cal", run_cal)):
                best[key] = min(best[key], best_time(fn, 1))
        ns = {k: v / x.size * 1e9 for k, v in best.items()}
        rows.append({
            "distribution": kind, "values": int(x.size), "batch": batch,
            "hist_bins": hist_bins, "calibrator_bins": cal_bins,
            "absmax_ns_per_value": ns["base"], "histogram_ns_per_value": ns["hist"],
            "calibrator_ns_per_value": ns["cal"],
            "histogram_ratio": best["hist"] / best["base"], "calibrator_ratio": best["cal"] / best["base"],
        })
        log(f"ingest {kind} batch {fmt_count(batch)}: ratios {rows[-1]['histogram_ratio']:.2f} / {rows[-1]['calibrator_ratio']:.2f}")
    return rows


# -- b. KL search ------------------------------------------------------------------------
@numba.njit
def naive_kl_numba(counts, levels, start):
    """Literal O(n^2) search: build P and Q of every candidate i and sum p*log(p/q)."""
    n = counts.size
    p = np.empty(n)
    q = np.empty(n)
    mass = np.empty(levels)
    members = np.empty(levels)
    best_i = n
    best = np.inf
    for i in range(min(start, n), n + 1):
        for j in range(i):
            p[j] = counts[j]
        for j in range(i, n):
            p[i - 1] += counts[j]  # outliers fold into the last kept bin
        mass[:] = 0.0
        members[:] = 0.0
        for j in range(i):
            if counts[j] > 0:
                mass[j * levels // i] += counts[j]
                members[j * levels // i] += 1.0
        for j in range(i):  # each level's mass spread over its non-empty bins only
            q[j] = mass[j * levels // i] / members[j * levels // i] if counts[j] > 0 else 0.0
        psum = p[:i].sum()
        qsum = q[:i].sum()
        d = 0.0
        for j in range(i):
            if p[j] > 0:
                if q[j] == 0:
                    d = np.inf
                    break
                pj = p[j] / psum
                d += pj * math.log(pj / (q[j] / qsum))
        if d <= best:  # ties go to the larger i
            best = d
            best_i = i
    return best_i, best


def naive_kl_numpy(counts: np.ndarray, levels: int, start: int) -> tuple[int, float]:
    """The same literal search, one vectorised numpy evaluation per candidate."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.size
    best_i, best = n, math.inf
    for i in range(min(start, n), n + 1):
        kept = counts[:i]
        level = np.arange(i) * levels // i
        nonempty = kept > 0
        mass = np.bincount(level, weights=kept, minlength=levels)
        members = np.bincount(level, weights=nonempty, minlength=levels)
        q = np.where(nonempty, mass[level] / np.maximum(members[level], 1), 0.0)
        p = kept.copy()
        p[-1] += counts[i:].sum()
        pos = p > 0
        if (q[pos] == 0).any():
            d = math.inf
        else:
            pn, qn = p[pos] / p.sum(), q[pos] / q.sum()
            d = float(np.sum(pn * np.log(pn / qn)))
        if d <= best:
            best_i, best = i, d
    return best_i, best


def exact_range_counts(x: np.ndarray, bins: int) -> np.ndarray:
    """Histogram of the non-zero |x| over [0, max|x|] (zeros are not in edgecal's bins either)."""
    a = np.abs(x[x != 0])
    return np.histogram(a, bins=bins, range=(0.0, float(a.max())))[0]


def bench_kl(x: np.ndarray, kind: str, cfg: dict) -> list[dict]:
    rows = []
    for bins in cfg["kl_bins"]:
        counts = exact_range_counts(x, bins)
        c64 = counts.astype(np.float64)
        naive_kl_numba(c64[: 2 * START_BIN], LEVELS, START_BIN)  # compile outside the timing
        t_fast, fast_i = timed(lambda: kl_search(counts, LEVELS, START_BIN), cfg["kl_repeats"])
        t_nb, (nb_i, _) = timed(lambda: naive_kl_numba(c64, LEVELS, START_BIN), cfg["naive_repeats"])
        t_np, (np_i, _) = timed(lambda: naive_kl_numpy(counts, LEVELS, START_BIN), cfg["numpy_repeats"])
        rows.append({
            "distribution": kind, "bins": bins, "kl_search_ms": t_fast * 1e3,
            "naive_numba_ms": t_nb * 1e3, "naive_numpy_ms": t_np * 1e3,
            "speedup_vs_numba": t_nb / t_fast, "speedup_vs_numpy": t_np / t_fast,
            "i_kl_search": fast_i, "i_naive_numba": int(nb_i), "i_naive_numpy": int(np_i),
            "same_i": fast_i == nb_i == np_i,
        })
        log(f"kl {kind} {bins}: {t_fast * 1e3:.2f} ms, x{t_nb / t_fast:.1f} vs Numba O(n^2), i {fast_i}/{nb_i}/{np_i}")
    return rows


# -- c. JIT cost -------------------------------------------------------------------------
_JIT_CHILD = r"""
import json, time
t0 = time.time()
import numpy as np
import numba
t1 = time.time()
import edgecal
t2 = time.time()
x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
cal = edgecal.Calibrator()
cal.observe("x", x)
cal.flush()  # a small array is staged: binned here
t3 = time.time()
table = cal.compute("kl")
t4 = time.time()
print(json.dumps({"t0": t0, "numba": t1 - t0, "edgecal": t2 - t1, "observe": t3 - t2, "compute": t4 - t3, "t_table": t4}))
"""


def run_child(code: str, env: dict, args: tuple[str, ...] = ()) -> tuple[dict, float]:
    """Run ``python -c code``; returns its last stdout line as JSON, and its spawn time (wall clock)."""
    spawn = time.time()
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), spawn


def bench_jit(cfg: dict) -> dict:
    bare = best_time(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 3)
    keys = ("numba", "edgecal", "observe", "compute", "to_table")
    best = {"cold": dict.fromkeys(keys, math.inf), "warm": dict.fromkeys(keys, math.inf)}
    cache_files = 0
    for trial in range(cfg["jit_trials"]):
        with tempfile.TemporaryDirectory(prefix="edgecal-numba-") as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            for phase in ("cold", "warm"):
                out, spawn = run_child(_JIT_CHILD, env)
                out["to_table"] = out["t_table"] - spawn
                for k in keys:
                    best[phase][k] = min(best[phase][k], out[k])
                if phase == "cold":
                    cache_files = sum(len(f) for _, _, f in os.walk(cache))
        log(f"jit trial {trial + 1}: cold {best['cold']['to_table']:.2f} s, warm {best['warm']['to_table']:.2f} s")
    return {"python_startup_s": bare, "trials": cfg["jit_trials"], "cache_files": cache_files, **best}


# -- d. memory ---------------------------------------------------------------------------
_RSS_CHILD = r"""
import json, sys, time
import numpy as np
import edgecal

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024.0
    return out

total, tensors, batch = (int(a) for a in sys.argv[1:4])
rec = [{"label": "after import", "bytes": 0, **status()}]
warm = edgecal.Calibrator()
warm.observe("w", np.linspace(-1, 1, 1000, dtype=np.float32))
warm.compute("kl")
rec.append({"label": "after JIT warm-up", "bytes": 0, **status()})
n_batches = total // (4 * batch)
marks = {max(1, round(100 * 2**20 / (4 * batch))): "100 MiB"}
marks.update({n_batches * k // 4: f"{25 * k}%" for k in range(1, 5)})
cal = edgecal.Calibrator()
rng = np.random.default_rng(0)
buf = np.empty(batch, dtype=np.float32)
t = time.perf_counter()
for b in range(n_batches):
    k = b % tensors
    rng.standard_normal(dtype=np.float32, out=buf)  # generated batch by batch into one buffer
    buf *= 0.5 * (k + 1)
    if k % 2:
        np.maximum(buf, 0.0, out=buf)
    cal.observe(f"layer{k}", buf)
    if b + 1 in marks:
        rec.append({"label": marks[b + 1], "bytes": (b + 1) * 4 * batch, **status()})
elapsed = time.perf_counter() - t
table = cal.compute("kl")
state = cal.to_bytes()
rec.append({"label": "after compute", "bytes": n_batches * 4 * batch, **status()})
print(json.dumps({"records": rec, "seconds": elapsed, "state_bytes": len(state)}))
"""


def bench_rss(cfg: dict) -> dict:
    batch = MB
    out, _ = run_child(_RSS_CHILD, dict(os.environ), (str(cfg["rss_bytes"]), str(cfg["rss_tensors"]), str(batch)))
    recs = {r["label"]: r for r in out["records"]}
    growth = recs["100%"]["VmRSS"] - recs["100 MiB"]["VmRSS"]
    log(f"rss: {recs['100%']['VmRSS']:.1f} MiB at 100%, growth since 100 MiB {growth:+.2f} MiB")
    return {**out, "total_bytes": cfg["rss_bytes"], "batch_values": batch, "tensors": cfg["rss_tensors"],
            "rss_growth_100MiB_to_end_MiB": growth}


# -- e. other calibrators ----------------------------------------------------------------
def edgecal_collect_compute(parts: list[np.ndarray]) -> float:
    cal = Calibrator()
    for p in parts:
        cal.observe("t", p)
    return cal.compute("kl")["t"].amax


def ort_collect_compute(parts: list[np.ndarray]) -> float:
    from onnxruntime.quantization.calibrate import HistogramCollector

    col = HistogramCollector(method="entropy", symmetric=True, num_bins=2048, num_quantized_bins=128,
                             percentile=99.999, scenario="same")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints on every call
        for p in parts:
            col.collect({"t": p})
        lo, hi = col.compute_collection_result()["t"][:2]
    return max(abs(float(lo)), abs(float(hi)))


def torch_collect_compute(parts: list[np.ndarray]) -> float:
    import torch
    from torch.ao.quantization import HistogramObserver

    obs = HistogramObserver(bins=2048, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    for p in parts:
        obs(torch.from_numpy(p))
    scale, _ = obs.calculate_qparams()
    return float(scale) * (obs.quant_max - obs.quant_min) / 2  # symmetric: scale = amax / 127.5


def torch_one_thread_collect_compute(parts: list[np.ndarray]) -> float:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-core cost, comparable with the single-threaded edgecal kernel
    try:
        return torch_collect_compute(parts)
    finally:
        torch.set_num_threads(threads)


def modelopt_collect_compute(parts: list[np.ndarray]) -> float:
    import torch
    from modelopt.torch.quantization.calib.histogram import HistogramCalibrator

    cal = HistogramCalibrator(num_bits=8, axis=None, unsigned=False, num_bins=2048)
    for p in parts:
        cal.collect(torch.from_numpy(p))
    return float(cal.compute_amax("entropy"))


OTHERS = (
    ("onnxruntime HistogramCollector(entropy, 2048/128)", "onnxruntime.quantization", ort_collect_compute, "pip install -e '.[bench]'"),
    ("torch HistogramObserver(2048, qint8 symmetric)", "torch", torch_collect_compute, "pip install torch==2.13.0"),
    ("  same, torch.set_num_threads(1)", "torch", torch_one_thread_collect_compute, "pip install torch==2.13.0"),
    ("ModelOpt HistogramCalibrator(entropy, 2048)", "modelopt.torch.quantization", modelopt_collect_compute,
     "pip install torch==2.13.0 nvidia-modelopt requests huggingface_hub"),  # 0.47 imports the last two undeclared
)


@functools.lru_cache(maxsize=None)
def missing(module: str) -> str | None:
    try:
        __import__(module)
    except Exception as err:  # an optional tool can fail to import in many ways
        return f"{type(err).__name__}: {err}"
    return None


def bench_others(x: np.ndarray, kind: str, cfg: dict, skipped: dict) -> list[dict]:
    parts = split(x, MB)
    edgecal_collect_compute(parts[:1])
    t_ec, amax_ec = timed(lambda: edgecal_collect_compute(parts), 3)
    rows = []
    for label, module, fn, how in OTHERS:
        if label in skipped:
            continue
        reason = missing(module)
        if reason:  # said once per module, under the first tool that needs it
            first = next(lab for lab, mod, _, _ in OTHERS if mod == module)
            skipped.setdefault(first, f"{module} not importable ({reason}); {how}")
            continue
        try:
            t, amax = timed(lambda: fn(parts), cfg["other_repeats"])
        except Exception as err:  # report and go on: one broken tool must not hide the others
            skipped[label] = f"failed on {kind}: {type(err).__name__}: {err}"
            continue
        rows.append({"tool": label, "distribution": kind, "values": int(x.size), "seconds": t,
                     "edgecal_seconds": t_ec, "ratio": t / t_ec, "amax": amax, "edgecal_amax": amax_ec})
        log(f"{label} {kind}: {t:.2f} s vs edgecal {t_ec:.3f} s")
    return rows


# -- report ------------------------------------------------------------------------------
def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "edgecal": edgecal.__version__}
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # which code was measured
        git = ["git", "-C", str(REPO)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "edgecal"], capture_output=True, text=True).stdout
        info["source"] = f"commit {head}" + (" + uncommitted changes under edgecal/" if dirty.strip() else "")
    with contextlib.suppress(Exception):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    return info


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def print_report(res: dict) -> None:
    m, cfg = res["machine"], res["config"]
    print(f"edgecal benchmark ({cfg['mode']}), {res['date']}")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['platform']}")
    if "source" in m:
        print(f"edgecal source: {m['source']}")
    print("versions: " + ", ".join(f"{k} {m[k]}" for k in ("python", "numpy", "numba", "edgecal", "onnxruntime") if k in m))
    print_ingest(res["ingest"], cfg)
    print_kl(res["kl"])
    print_jit(res["jit"])
    print_rss(res["rss"])
    print_others(res["others"], res["skipped"])
    print_int8(res["int8"])
    print_link(res["link"])
    print_soak(res["soak"])
    print_merge_many(res["merge"])
    for name, (_, show) in SECTIONS.items():
        if name not in _IN_RUN:
            show(res[name])
    print(f"\ntotal benchmark time: {res['seconds']:.0f} s")


def print_ingest(rows: list[dict], cfg: dict) -> None:
    r0 = rows[0]
    print(f"\n[a] ingest of {fmt_count(r0['values'])} float32 values per distribution, best of {cfg['repeats']};"
          f" ratio = time / bare Numba max(|x|) loop over the same batches (goal: ratio <= {GOAL_INGEST_RATIO})")
    hist_col = f"StreamingHistogram({r0['hist_bins']}) ns/v"
    cal_col = f"Calibrator({r0['calibrator_bins']}).observe ns/v"
    print(f"{'distribution':<18}{'batch':>6}{'max|x| ns/v':>13}{hist_col:>34}{'ratio':>7}{cal_col:>36}{'ratio':>7}")
    for r in rows:
        print(f"{r['distribution']:<18}{fmt_count(r['batch']):>6}{r['absmax_ns_per_value']:>13.2f}"
              f"{r['histogram_ns_per_value']:>34.2f}{r['histogram_ratio']:>7.2f} {verdict(r['histogram_ratio'] <= GOAL_INGEST_RATIO):<4}"
              f"{r['calibrator_ns_per_value']:>31.2f}{r['calibrator_ratio']:>7.2f} {verdict(r['calibrator_ratio'] <= GOAL_INGEST_RATIO)}")


def print_kl(rows: list[dict]) -> None:
    print(f"\n[b] kl_search on a histogram of non-zero |x| over [0, max|x|], {LEVELS} levels, start bin {START_BIN}"
          f" (goal: < {GOAL_KL_MS:g} ms and >= {GOAL_KL_SPEEDUP:g}x the literal O(n^2) Numba search)")
    print(f"{'distribution':<18}{'bins':>6}{'kl_search ms':>14}{'O(n^2) Numba ms':>17}{'speedup':>9}"
          f"{'O(n^2) numpy ms':>17}{'speedup':>9}{'same i':>8}{'i':>6}  goal")
    for r in rows:
        ok = r["kl_search_ms"] < GOAL_KL_MS and r["speedup_vs_numba"] >= GOAL_KL_SPEEDUP
        same = "yes" if r["same_i"] else f"NO ({r['i_naive_numba']}/{r['i_naive_numpy']})"
        print(f"{r['distribution']:<18}{r['bins']:>6}{r['kl_search_ms']:>14.3f}{r['naive_numba_ms']:>17.1f}"
              f"{r['speedup_vs_numba']:>8.1f}x{r['naive_numpy_ms']:>17.0f}{r['speedup_vs_numpy']:>8.0f}x"
              f"{same:>8}{r['i_kl_search']:>6}  {verdict(ok)}")


def print_jit(j: dict) -> None:
    print(f"\n[c] JIT cost in fresh processes with a fresh NUMBA_CACHE_DIR (best of {j['trials']}; bare"
          f" `python -c pass` takes {j['python_startup_s'] * 1e3:.0f} ms; cold run wrote {j['cache_files']} cache files)")
    labels = (("numba", "import numpy + numba"), ("edgecal", "import edgecal (after numba)"),
              ("observe", "first observe (10k float32)"), ("compute", "first compute('kl')"),
              ("to_table", "process start -> first table"))
    print(f"{'seconds':<32}{'cold (empty cache)':>20}{'warm (filled cache)':>21}")
    for key, label in labels:
        print(f"{label:<32}{j['cold'][key]:>20.3f}{j['warm'][key]:>21.3f}")


def print_rss(r: dict) -> None:
    print(f"\n[d] memory while streaming {r['total_bytes'] / 2**30:g} GiB of float32 through Calibrator()"
          f" ({r['tensors']} tensors, {fmt_count(r['batch_values'])}-value batches generated one at a time"
          f" into one buffer; {r['seconds']:.1f} s)")
    print(f"{'point':<22}{'data MiB':>10}{'VmRSS MiB':>11}{'VmHWM MiB':>11}")
    for rec in r["records"]:
        print(f"{rec['label']:<22}{rec['bytes'] / 2**20:>10.0f}{rec['VmRSS']:>11.1f}{rec['VmHWM']:>11.1f}")
    print(f"RSS growth from 100 MiB to the end: {r['rss_growth_100MiB_to_end_MiB']:+.2f} MiB;"
          f" calibrator state (to_bytes) {r['state_bytes']} bytes")


def print_others(rows: list[dict], skipped: dict) -> None:
    print("\n[e] other calibrators, collect + compute on the same 1M-value batches;"
          " ratio = their time / edgecal Calibrator() observe + compute('kl')")
    if rows:
        print(f"{'tool':<50}{'distribution':<18}{'values':>7}{'seconds':>9}{'edgecal s':>11}{'ratio':>8}"
              f"{'amax':>9}{'edgecal amax':>14}")
    for r in rows:
        print(f"{r['tool']:<50}{r['distribution']:<18}{fmt_count(r['values']):>7}{r['seconds']:>9.2f}"
              f"{r['edgecal_seconds']:>11.3f}{r['ratio']:>7.{0 if r['ratio'] >= 10 else 1}f}x{r['amax']:>9.3f}"
              f"{r['edgecal_amax']:>14.3f}")
    if any(r["tool"].startswith(("torch", "ModelOpt")) for r in rows):
        import torch

        print(f"note: torch {torch.__version__} ran with {torch.get_num_threads()} intra-op threads unless set to 1;"
              " edgecal and onnxruntime's collector use one. HistogramObserver minimises L2 error, not KL, so its"
              " amax differs.")
    for label, why in skipped.items():
        print(f"skipped {label}: {why}")


# -- int8 reference kernels ---------------------------------------------------------------
INT8_SHAPES = {  # name: (kind, x shape, w shape); conv is NHWC x OHWI, SAME padding, stride 1
    "conv 32x32x32 -> 64, 3x3": ("conv", (1, 32, 32, 32), (64, 3, 3, 32)),
    "conv 16x16x64 -> 128, 3x3": ("conv", (1, 16, 16, 64), (128, 3, 3, 64)),
    "fc 64 x 1024 -> 1024": ("fc", (64, 1024), (1024, 1024)),
    "fc 1 x 1024 -> 1024": ("fc", (1, 1024), (1024, 1024)),
}


def bench_int8(cfg: dict) -> list[dict]:
    """MAC/s of edgecal.reference conv2d / fully_connected (int8, tflite rounding, per-channel) beside numpy
    float32 on the same shapes (conv as sliding windows + einsum, fc as x @ w.T)."""
    from numpy.lib.stride_tricks import sliding_window_view

    from edgecal import reference as ref

    rng = np.random.default_rng(0)
    rows = []
    for label, (kind, xs, ws) in INT8_SHAPES.items():
        x, w = rng.integers(-128, 128, xs).astype(np.int8), rng.integers(-127, 128, ws).astype(np.int8)
        rq = ref.op_multipliers("conv", 0.05, np.full(ws[0], 0.01), 0.5)
        bias = rng.integers(-1000, 1000, ws[0]).astype(np.int32)
        xf, wf = x.astype(np.float32), w.astype(np.float32)
        if kind == "conv":
            macs = xs[1] * xs[2] * ws[0] * ws[1] * ws[2] * ws[3]
            int8 = functools.partial(ref.conv2d, x, w, bias, rq, in_zp=3, padding="SAME")

            def f32(xf=xf, wf=wf):
                cols = sliding_window_view(np.pad(xf, ((0, 0), (1, 1), (1, 1), (0, 0))), (3, 3), axis=(1, 2))
                return np.einsum("nyxcij,oijc->nyxo", cols, wf, optimize=True)
        else:
            macs = xs[0] * ws[0] * ws[1]
            int8 = functools.partial(ref.fully_connected, x, w, bias, rq, in_zp=3)
            f32 = functools.partial(np.matmul, xf, np.ascontiguousarray(wf.T))
        log(f"int8 {label}")
        t_int8, t_f32 = best_time(int8, 2 * cfg["repeats"]), best_time(f32, 2 * cfg["repeats"])
        rows.append({"shape": label, "macs": macs, "int8_s": t_int8, "f32_s": t_f32,
                     "int8_gmacs": macs / t_int8 / 1e9, "f32_gmacs": macs / t_f32 / 1e9})
    return rows


def print_int8(rows: list[dict]) -> None:
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset: all cores, noisy on a busy machine")
    print("\n[f] int8 reference kernels (edgecal.reference: one thread, exact TFLite semantics) beside numpy float32"
          f" on the same shapes (OPENBLAS_NUM_THREADS={threads})")
    print(f"{'shape':<28}{'MACs':>8}{'int8 ms':>10}{'int8 GMAC/s':>13}{'f32 ms':>9}{'f32 GMAC/s':>12}{'f32/int8':>10}")
    for r in rows:
        print(f"{r['shape']:<28}{fmt_count(r['macs']):>8}{r['int8_s'] * 1e3:>10.2f}{r['int8_gmacs']:>13.2f}"
              f"{r['f32_s'] * 1e3:>9.2f}{r['f32_gmacs']:>12.2f}{r['f32_gmacs'] / r['int8_gmacs']:>9.1f}x")


# -- g. serial link decode ---------------------------------------------------------------
LINK_GOAL_MBS = 20.0
LINK_3MBAUD_MBS = 0.3  # 3 Mbaud 8N1


def _link_wire(kind: str, samples: int, max_payload: int) -> bytes:
    """The bytes a device sends for `samples` samples of one 64 KiB float32 tensor (edgecal.link codec)."""
    from edgecal.link.frames import F_LAST, SAMPLE_END, TENSOR_CHUNK, encode_frame

    rng = np.random.default_rng(7)
    parts, seq, nbytes = [], 0, 64 * 1024
    for s in range(samples):
        x = rng.standard_normal(nbytes // 4).astype(np.float32)
        data = (np.maximum(x, 0) if kind == "relu" else x).tobytes()  # relu: half the values are 0.0
        for off in range(0, nbytes, max_payload):
            flags = F_LAST if off + max_payload >= nbytes else 0
            parts.append(encode_frame(TENSOR_CHUNK, data[off : off + max_payload], seq=seq, sample_id=s, offset=off,
                                      total=nbytes, flags=flags))
            seq += 1
        parts.append(encode_frame(SAMPLE_END, b"\x01\x00", seq=seq, sample_id=s))
        seq += 1
    return b"".join(parts)


def bench_link_decode(cfg: dict) -> list[dict]:
    """Host decode throughput: FrameDecoder + SampleAssembler over 64 KiB reads (no port I/O)."""
    from edgecal.link.assembler import SampleAssembler, SeqTracker
    from edgecal.link.decoder import FrameDecoder
    from edgecal.link.frames import SAMPLE_END, TensorInfo

    samples = 200 if cfg["mode"] == "full" else 40
    rows = []
    for kind in ("gaussian", "relu"):
        for max_payload in (1024, 4096, 16384):
            wire = _link_wire(kind, samples, max_payload)

            def decode() -> int:
                dec, seqs = FrameDecoder(max_payload), SeqTracker()
                asm = SampleAssembler([TensorInfo(0, "t", 1, (16384,), 65536)], [0])
                asm.begin_run(0)
                done = 0
                for i in range(0, len(wire), 1 << 16):
                    for f in dec.feed(wire[i : i + (1 << 16)]):
                        if not seqs.accept(f.seq):
                            continue
                        if f.type == SAMPLE_END:
                            asm.on_sample_end(f)
                        else:
                            done += len(asm.on_chunk(f))
                return done

            assert decode() == samples  # also compiles the COBS kernel
            t = best_time(decode, cfg["repeats"])
            rows.append({"data": kind, "max_payload": max_payload, "wire_bytes": len(wire), "seconds": t,
                         "mb_per_s": len(wire) / t / 1e6, "samples": samples})
            log(f"link decode {kind} payload {max_payload}: {rows[-1]['mb_per_s']:.1f} MB/s")
    return rows


def print_link(rows: list[dict]) -> None:
    print(f"\n[g] serial link: host decode (COBS + CRC-32 + checks + tensor reassembly) of {rows[0]['samples']} samples"
          f" of a 64 KiB float32 tensor, fed in 64 KiB reads, best of several (goal: >= {LINK_GOAL_MBS:g} MB/s;"
          f" a 3 Mbaud link carries {LINK_3MBAUD_MBS} MB/s)")
    print(f"{'data':<10}{'max payload':>12}{'wire MB':>9}{'MB/s':>8}{'x 3 Mbaud':>11}  goal")
    for r in rows:
        print(f"{r['data']:<10}{r['max_payload']:>12}{r['wire_bytes'] / 1e6:>9.1f}{r['mb_per_s']:>8.1f}"
              f"{r['mb_per_s'] / LINK_3MBAUD_MBS:>10.0f}x  {verdict(r['mb_per_s'] >= LINK_GOAL_MBS)}")



# -- daemon soak ------------------------------------------------------------------------------
_SOAK_CONFIG = """
[state]
path = "{d}/state.ecst"
checkpoint_interval = 1.0
[output]
path = "{d}/table.ecal"
[daemon]
queue_samples = 8
status_interval = 1.0
[[source]]
kind = "spool"
path = "{d}/spool"
poll_interval = 0.02
"""


def _vm(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024.0
    return out


def _drain(sock: socket.socket) -> None:
    """Read the daemon's pending notifications, as systemd would."""
    sock.setblocking(False)
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass
    sock.setblocking(True)


def bench_soak(cfg: dict) -> dict:
    """Stream cfg['soak_bytes'] of float32 through `edgecal daemon` (spool source) and sample its RSS."""
    import shutil

    d = Path(tempfile.mkdtemp(prefix="edgecal-soak-"))
    (d / "spool").mkdir()
    (d / "edgecal.toml").write_text(_SOAK_CONFIG.format(d=d))
    exe = Path(sys.executable).with_name("edgecal")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(d / "notify"))
    notify.settimeout(120)
    proc = subprocess.Popen([str(exe), "daemon", "--config", str(d / "edgecal.toml")], stderr=subprocess.DEVNULL,
                            env={**os.environ, "NOTIFY_SOCKET": str(d / "notify")})
    while b"READY=1" not in notify.recv(4096):  # kernels warm: RSS from here on is the streaming cost
        pass
    ready = _vm(proc.pid)
    rng = np.random.default_rng(0)
    per_file = 4 * MB  # bytes of float32 per spool file: 4 tensors of 256K values
    n_files = cfg["soak_bytes"] // per_file
    marks = {n_files * k // 10: f"{10 * k}%" for k in range(1, 11)}
    records, t0 = [{"label": "ready", "bytes": 0, **ready}], time.perf_counter()
    try:
        for i in range(n_files):
            while len(list((d / "spool").glob("*.npz"))) >= 16:  # keep the spool (the disk) small
                time.sleep(0.01)
            arrays = {f"t{k}": rng.standard_normal(MB // 4, dtype=np.float32) * (k + 1) for k in range(4)}
            with open(d / "spool" / f".f{i}.npz", "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(d / "spool" / f".f{i}.npz", d / "spool" / f"f{i:06d}.npz")
            if i + 1 in marks:
                records.append({"label": marks[i + 1], "bytes": (i + 1) * per_file, **_vm(proc.pid)})
            _drain(notify)
        while list((d / "spool").glob("*.npz")):
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        notify.close()
        shutil.rmtree(d, ignore_errors=True)
    growth = records[-1]["VmRSS"] - records[1]["VmRSS"]
    log(f"soak: {cfg['soak_bytes'] >> 20} MiB in {seconds:.1f} s, RSS {records[1]['VmRSS']:.1f} -> "
        f"{records[-1]['VmRSS']:.1f} MiB, exit {code}")
    return {"records": records, "seconds": seconds, "bytes": n_files * per_file, "exit_code": code,
            "rss_growth_10pct_to_end_MiB": growth}


def print_soak(r: dict) -> None:
    print(f"\n[h] daemon soak: {r['bytes'] >> 20} MiB of float32 through `edgecal daemon` (spool source, 4 MiB "
          f"files, checkpoint every second) in {r['seconds']:.1f} s ({r['bytes'] / r['seconds'] / 1e6:.0f} MB/s), "
          f"SIGTERM exit {r['exit_code']}")
    print(f"{'point':<8}{'data MiB':>10}{'VmRSS MiB':>11}{'VmHWM MiB':>11}")
    for rec in r["records"]:
        print(f"{rec['label']:<8}{rec['bytes'] >> 20:>10}{rec['VmRSS']:>11.1f}{rec['VmHWM']:>11.1f}")
    print(f"RSS growth from 10% to the end: {r['rss_growth_10pct_to_end_MiB']:+.2f} MiB")


# -- h. merge of many states -------------------------------------------------------------
MERGE_COUNTS = {"full": (10, 100, 1000, 3000), "quick": (10, 100, 300)}
MERGE_HELD_MAX = 1000  # the hold-every-state baseline stops here (~0.26 MiB of histograms per state)
MERGE_BINS = 2048

_MERGE_CHILD = r"""
import json, sys, time
from pathlib import Path
from edgecal import Calibrator
from edgecal.merge import merge_state_files

def vm(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024.0 for l in f if l.startswith(key + ":"))

folder, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
paths = sorted(Path(folder).glob("*.ecst"))[:n]
Calibrator.load_state(paths[0]).merge(Calibrator.load_state(paths[1]))  # imports and first merge paid before
before = vm("VmRSS")
t = time.perf_counter()
if mode == "stream":
    merged = merge_state_files(paths)
else:  # every state loaded first, then folded
    states = [Calibrator.load_state(p) for p in paths]
    merged = states[0]
    for other in states[1:]:
        merged.merge(other)
print(json.dumps({"seconds": time.perf_counter() - t, "rss_before": before, "hwm": vm("VmHWM"),
                  "tensors": len(merged.names()), "consumed": len(merged.consumed)}))
"""


def _merge_states_folder(n: int) -> Path:
    """``n`` state files of two tensors each, ranges spread over 12 decades (the lattices differ)."""
    folder = Path(tempfile.mkdtemp(prefix="edgecal-merge-"))
    rng = np.random.default_rng(0)
    for i in range(n):
        cal = Calibrator(MERGE_BINS)
        scale = 10.0 ** rng.integers(-6, 7)
        cal.observe("conv", rng.standard_normal(256).astype(np.float32) * scale)
        cal.observe("fc", np.maximum(rng.standard_normal(64), 0.0) * scale)
        cal.consumed.add(f"board-{i:05d}")
        (folder / f"{i:05d}.ecst").write_bytes(cal.to_bytes())
    return folder


def bench_merge_many(cfg: dict) -> list[dict]:
    """Peak RSS growth and time of merging N state files: `merge_state_files` vs loading them all first."""
    import shutil

    counts = MERGE_COUNTS[cfg["mode"]]
    folder = _merge_states_folder(max(counts))
    rows = []
    try:
        for n in counts:
            for mode in ("stream", "held") if n <= MERGE_HELD_MAX else ("stream",):
                out, _ = run_child(_MERGE_CHILD, dict(os.environ), (str(folder), str(n), mode))
                rows.append({"states": n, "mode": mode, **out, "growth": out["hwm"] - out["rss_before"]})
                log(f"merge {n} states ({mode}): peak RSS +{rows[-1]['growth']:.1f} MiB, {out['seconds']:.2f} s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def print_merge_many(rows: list[dict]) -> None:
    print(f"\n[h] merge of N state files (2 tensors, {MERGE_BINS} bins each), in a fresh process: peak RSS above the "
          "RSS before the merge")
    print(f"{'states':>7}{'merge_state_files MiB':>23}{'s':>7}{'load all, then fold MiB':>25}{'s':>7}")
    by = {(r["states"], r["mode"]): r for r in rows}
    for n in sorted({r["states"] for r in rows}):
        s, h = by[(n, "stream")], by.get((n, "held"))
        held = f"{h['growth']:>25.1f}{h['seconds']:>7.2f}" if h else f"{'-':>25}{'-':>7}"
        print(f"{n:>7}{s['growth']:>23.1f}{s['seconds']:>7.2f}{held}")


# -- main --------------------------------------------------------------------------------
def run(cfg: dict) -> dict:
    t0 = time.perf_counter()
    res: dict = {"machine": machine(), "config": cfg, "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                 "ingest": [], "kl": [], "others": []}
    skipped: dict[str, str] = {}
    for kind in DISTRIBUTIONS:
        log(f"generating {fmt_count(cfg['values'])} values: {kind}")
        x = make_data(kind, cfg["values"])
        res["ingest"] += bench_ingest(x, kind, cfg)
        res["kl"] += bench_kl(x, kind, cfg)
        res["others"] += bench_others(x, kind, cfg, skipped)
        del x
    res["skipped"] = skipped
    res["int8"] = bench_int8(cfg)
    log("JIT subprocesses")
    res["jit"] = bench_jit(cfg)
    log("memory subprocess")
    res["rss"] = bench_rss(cfg)
    res["link"] = bench_link_decode(cfg)
    log("daemon soak")
    res["soak"] = bench_soak(cfg)
    log("merge of many states")
    res["merge"] = bench_merge_many(cfg)
    res.update(run_sections(cfg, [name for name in SECTIONS if name not in _IN_RUN]))
    res["seconds"] = time.perf_counter() - t0
    return res


def _ingest_section(cfg: dict) -> dict:
    """Section a alone (for --only): the ingest ratios on every distribution."""
    rows = [row for kind in DISTRIBUTIONS for row in bench_ingest(make_data(kind, cfg["values"]), kind, cfg)]
    return {"rows": rows, "cfg": cfg}


def _kl_section(cfg: dict) -> list[dict]:
    """Section b alone (for --only): kl_search on every distribution."""
    return [row for kind in DISTRIBUTIONS for row in bench_kl(make_data(kind, cfg["values"]), kind, cfg)]


SECTIONS = {"ingest": (_ingest_section, lambda r: print_ingest(r["rows"], r["cfg"])), "kl": (_kl_section, print_kl),
            "jit": (bench_jit, print_jit), **SECTIONS, **E2E_SECTIONS}
_IN_RUN = ("ingest", "kl", "jit")  # sections a-c, which run() measures itself


def run_sections(cfg: dict, names: list[str]) -> dict:
    out = {}
    for name in names:
        log(f"section {name}")
        out[name] = SECTIONS[name][0](cfg)
    return out


def run_only(cfg: dict, names: list[str], json_path: str | None) -> int:
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        print(f"bench: unknown section {', '.join(unknown)}; expected some of {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), **run_sections(cfg, names)}
    m = res["machine"]
    print(f"edgecal benchmark ({cfg['mode']}, {', '.join(names)}), {res['date']}\nmachine: {m['cpu']}, {m['cores']} cores")
    for name in names:
        SECTIONS[name][1](res[name])
    if json_path:
        Path(json_path).write_text(json.dumps(res, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes for a smoke test (10-20 s)")
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON to PATH")
    ap.add_argument("--only", metavar="NAMES", help=f"run only these sections, comma-separated: {', '.join(SECTIONS)}")
    args = ap.parse_args(argv)
    if getattr(edgecal, "__file__", None) is None:  # a stale editable install resolves to an empty namespace
        print("edgecal imports as an empty namespace package; reinstall it: .venv/bin/pip install -e .", file=sys.stderr)
        return 2
    if args.only:
        return run_only(QUICK if args.quick else FULL, args.only.split(","), args.json)
    res = run(QUICK if args.quick else FULL)
    print_report(res)
    if args.json:
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in res["config"].items()}
        Path(args.json).write_text(json.dumps({**res, "config": cfg}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

