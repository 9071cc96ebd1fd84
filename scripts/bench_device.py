"""Benchmark sections for edgecal's footprint on a device, run by scripts/bench.py.

i. startup: `edgecal --help`, `edgecal calibrate --help` and an application importing the socket client, in fresh
   processes, against `python -c "import numpy"` (the floor of anything that handles arrays) and
   `python -c "import numba"` (what every start paid when numba loaded at import).
j. daemon memory: `edgecal daemon` with default settings and a spool source fed samples of a
   300-tensor model (1K float32 values per tensor), against the same daemon fed a one-tensor
   model: RSS once the spool is drained, peak RSS over the whole run (final checkpoint and
   table included, from wait4), and the cost per extra tensor. Goal: <= 160 MiB.
k. observe: `Calibrator.observe` of 1K float32 values into a tensor seen before, with 1 tensor and
   with 100/300/500 tensors taking turns (goal: <= 1.5x the one-tensor cost), and into a new
   tensor (goal: <= 50 us); with the default staging block, with threads=2 too, and with
   stage_bytes=0. Each figure includes the final `flush`, so staging's binning is paid in it.
   In-process, best of several interleaved rounds of 6000 arrays (several flushes each).
l. threads: `StreamingHistogram(8192).update(batch, threads=2)` against threads=1 on the same
   16M float32 values in 1M and 4M batches (goal: >= 1.7x); the two histograms must be equal.

Each section is a pair (bench(cfg) -> dict, print(dict)); ``scripts/bench.py --only NAME``
runs only the named ones. Speeds are ratios to baselines measured in the same run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _child(argv: list[str], repeats: int) -> tuple[float, float, str]:
    """Best wall time, lowest peak RSS (MiB) and last stdout of ``python argv`` over ``repeats`` runs."""
    best_t, best_rss, out = math.inf, math.inf, ""
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, check=False)
        best_t = min(best_t, time.perf_counter() - t)
        if proc.returncode:
            raise RuntimeError(f"benchmark child {argv} failed ({proc.returncode}):\n{proc.stderr}")
        out = proc.stdout
        best_rss = min(best_rss, _peak_rss(out))
    return best_t, best_rss, out


def _peak_rss(out: str) -> float:
    """VmHWM the child printed as its last line (MiB), or inf if it printed none."""
    lines = out.strip().splitlines()
    return json.loads(lines[-1]).get("hwm", math.inf) if lines and lines[-1].startswith("{") else math.inf


_HWM = ("import json, sys\n"
        "hwm = next(int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "print(json.dumps({'hwm': hwm, 'numba': 'numba' in sys.modules}))\n")
_HELP = ("import contextlib, io\nfrom edgecal.cli import main\n"
         "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    main(['--help'])\n")
_CLIENT = ("import numpy as np\nfrom edgecal.sources.client import push_sample\n"
           "assert not push_sample('/nonexistent/edgecal.sock', {'x': np.zeros(4, np.float32)})\n")


def bench_startup(cfg: dict) -> dict:
    repeats = 5 if cfg.get("mode") == "full" else 3
    cases = {"python": "", "numpy": "import numpy\n", "numba": "import numpy, numba\n", "help": _HELP,
             "client": _CLIENT}
    res = {}
    for key, code in cases.items():
        t, rss, out = _child(["-c", code + _HWM], repeats)
        res[key] = {"s": t, "hwm_mib": rss, "numba_loaded": json.loads(out.strip().splitlines()[-1])["numba"]}
    res["help_cli_s"] = _child(["-m", "edgecal", "--help"], repeats)[0]
    res["calibrate_help_cli_s"] = _child(["-m", "edgecal", "calibrate", "--help"], repeats)[0]
    res["repeats"] = repeats
    return res


def print_startup(r: dict) -> None:
    print(f"\n[i] startup in fresh processes (best of {r['repeats']}; ratios to `import numpy`, the floor)")
    print(f"{'process':<44}{'seconds':>9}{'x numpy':>9}{'peak MiB':>10}{'numba':>7}")
    labels = (("python", "python -c pass"), ("numpy", "import numpy"), ("numba", "import numpy, numba"),
              ("help", "edgecal.cli main(['--help'])"), ("client", "import client + push_sample (no daemon)"))
    base = r["numpy"]["s"]
    for key, label in labels:
        row = r[key]
        print(f"{label:<44}{row['s']:>9.3f}{row['s'] / base:>9.2f}{row['hwm_mib']:>10.1f}"
              f"{'yes' if row['numba_loaded'] else 'no':>7}")
    print(f"`python -m edgecal --help`: {r['help_cli_s']:.3f} s ({r['help_cli_s'] / base:.2f}x import numpy)")
    if "calibrate_help_cli_s" in r:
        t = r["calibrate_help_cli_s"]
        print(f"`python -m edgecal calibrate --help`: {t:.3f} s ({t / base:.2f}x import numpy)")


_DAEMON_CONFIG = """
[state]
path = "{d}/state.ecst"
[output]
path = "{d}/table.ecal"
[[source]]
kind = "spool"
path = "{d}/spool"
"""


def _vm(pid: int, key: str = "VmRSS") -> float:
    """``key`` (VmRSS, VmHWM: the process's own memory) of ``pid`` in MiB; 0 once it has none (exiting)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) / 1024.0 for line in f if line.startswith(key + ":")), 0.0)
    except OSError:
        return 0.0


def _peak_until_exit(pid: int) -> tuple[float, int]:
    """(peak RSS in MiB, wait status): VmHWM read every 5 ms until the process exits.

    Not the rusage of wait4: its ru_maxrss keeps the RSS of this benchmark process, which
    the child shared between fork and exec, and would report that instead.
    """
    peak = _vm(pid, "VmHWM")
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return peak, status
        peak = max(peak, _vm(pid, "VmHWM"))
        time.sleep(0.005)


def _feed_spool(spool: Path, tensors: int, files: int) -> None:
    rng = np.random.default_rng(tensors)
    for i in range(files):
        arrays = {f"layer{k}/out": rng.standard_normal(1024, dtype=np.float32) * (k % 7 + 1) for k in range(tensors)}
        with open(spool / f".f{i}.npz", "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(spool / f".f{i}.npz", spool / f"f{i:04d}.npz")
    deadline = time.monotonic() + 300
    while list(spool.glob("*.npz")):
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark daemon did not drain its spool in 300 s")
        time.sleep(0.05)


def _daemon_memory(tensors: int, files: int) -> dict:
    """RSS (MiB) of `edgecal daemon` after ``files`` samples of ``tensors`` tensors, and its peak over the run."""
    d = Path(tempfile.mkdtemp(prefix="edgecal-daemon-"))
    (d / "spool").mkdir()
    (d / "edgecal.toml").write_text(_DAEMON_CONFIG.format(d=d))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(d / "notify"))
    notify.settimeout(300)
    proc = subprocess.Popen([sys.executable, "-m", "edgecal", "daemon", "--config", str(d / "edgecal.toml")],
                            stderr=subprocess.DEVNULL, env={**os.environ, "NOTIFY_SOCKET": str(d / "notify")})
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
        ready = _vm(proc.pid)
        _feed_spool(d / "spool", tensors, files)
        time.sleep(0.5)
        streaming = _vm(proc.pid)
        proc.send_signal(signal.SIGTERM)
        peak, status = _peak_until_exit(proc.pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        state_bytes = (d / "state.ecst").stat().st_size
    finally:
        proc.kill()
        notify.close()
        shutil.rmtree(d, ignore_errors=True)
    return {"tensors": tensors, "ready_mib": ready, "streaming_mib": streaming, "peak_mib": peak,
            "exit_code": proc.returncode, "state_bytes": state_bytes}


def bench_daemon_memory(cfg: dict) -> dict:
    files = 20 if cfg.get("mode") == "full" else 8
    one, many = _daemon_memory(1, files), _daemon_memory(300, files)
    per_tensor = (many["streaming_mib"] - one["streaming_mib"]) / 299 * 1024
    return {"files": files, "one": one, "many": many, "per_tensor_kib": per_tensor, "floor": _numba_floor()}


_FLOOR = """
import numba, numpy as np
@numba.njit(cache=True, nogil=True)
def one(x):
    return x[0] + 1.0
one(np.zeros(1))
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:")))
"""


def _numba_floor() -> float:
    """RSS (MiB) of a process that imported numpy and numba and ran one trivial kernel loaded from the cache.

    What any process with a Numba kernel holds before its own code: the daemon cannot go below it.
    """
    d = Path(tempfile.mkdtemp(prefix="edgecal-floor-"))
    try:
        (d / "floor.py").write_text(_FLOOR)
        env = {**os.environ, "NUMBA_CACHE_DIR": str(d / "cache")}
        run = [sys.executable, str(d / "floor.py")]
        subprocess.run(run, env=env, capture_output=True, check=True)  # compiles into the cache
        return int(subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout) / 1024.0
    finally:
        shutil.rmtree(d, ignore_errors=True)


def print_daemon_memory(r: dict) -> None:
    print(f"\n[j] `edgecal daemon`, default settings (8192 bins), spool source, {r['files']} samples of 1K float32 "
          "values per tensor")
    print(f"{'model':<14}{'ready MiB':>11}{'drained MiB':>13}{'peak MiB':>10}{'state bytes':>13}{'exit':>6}")
    for key, label in (("one", "1 tensor"), ("many", "300 tensors")):
        row = r[key]
        print(f"{label:<14}{row['ready_mib']:>11.1f}{row['streaming_mib']:>13.1f}{row['peak_mib']:>10.1f}"
              f"{row['state_bytes']:>13}{row['exit_code']:>6}")
    print(f"RSS per extra tensor while streaming: {r['per_tensor_kib']:.0f} KiB; 300 tensors peak "
          f"{r['many']['peak_mib']:.1f} MiB (goal <= 160 MiB)")
    print(f"numba's floor: numpy + numba + one trivial kernel loaded from the cache: {r['floor']:.1f} MiB; "
          f"with 300 x 64 KiB of counters {r['floor'] + 300 * 64 / 1024:.1f} MiB before any edgecal module")


def _per_observe(cal, names: list[str], x: np.ndarray) -> float:
    """Seconds per `observe`, the binning of what was staged included."""
    t = time.perf_counter()
    for name in names:
        cal.observe(name, x)
    cal.flush()
    return (time.perf_counter() - t) / len(names)


_OBSERVE_CONFIGS = {"staged": {}, "staged_2_threads": {"threads": 2}, "unstaged": {"stage_bytes": 0}}


def bench_observe(cfg: dict) -> dict:
    from edgecal import Calibrator
    from edgecal.calibrator import DEFAULT_STAGE_BYTES

    x = np.random.default_rng(0).standard_normal(1024).astype(np.float32)
    counts = (1, 100, 300, 500)
    cals = {(c, n): Calibrator(**kw) for c, kw in _OBSERVE_CONFIGS.items() for n in counts}
    names = {n: [f"layer{k}/out" for k in range(n)] for n in counts}
    best = {c: dict.fromkeys(["new", *map(str, counts)], math.inf) for c in _OBSERVE_CONFIGS}
    for (_, n), cal in cals.items():
        _per_observe(cal, names[n], x)
    for _ in range(7 if cfg.get("mode") == "full" else 3):  # interleaved: drift hits every case alike
        for c, kw in _OBSERVE_CONFIGS.items():
            new = _per_observe(Calibrator(**kw), [f"n{k}" for k in range(200)], x)
            best[c]["new"] = min(best[c]["new"], new)
            for n in counts:
                rounds = max(1, 6000 // n)  # 24 MiB: several flushes of the 4 MiB block
                best[c][str(n)] = min(best[c][str(n)], _per_observe(cals[(c, n)], names[n] * rounds, x))
    us = {c: {k: v * 1e6 for k, v in b.items()} for c, b in best.items()}
    return {"us": us, "values": x.size, "stage_bytes": DEFAULT_STAGE_BYTES}


def print_observe(r: dict) -> None:
    us = r["us"]
    base = us["unstaged"]["1"]
    print(f"\n[k] Calibrator.observe of {r['values']} float32 values (8192 bins), microseconds per call, "
          f"final flush included; x: to 1 tensor unstaged (stage_bytes=0)")
    print(f"{'case':<30}{'staged ' + str(r['stage_bytes'] >> 20) + ' MiB':>14}{'x':>6}{'2 threads':>11}{'x':>6}"
          f"{'stage_bytes=0':>15}{'x':>6}")
    for key, label in (("1", "1 tensor"), ("100", "100 tensors in turn"), ("300", "300 tensors in turn"),
                       ("500", "500 tensors in turn"), ("new", "a new tensor (first observe)")):
        cells = "".join(f"{us[c][key]:>{w}.1f}{us[c][key] / base:>6.2f}"
                        for c, w in (("staged", 14), ("staged_2_threads", 11), ("unstaged", 15)))
        print(f"{label:<30}{cells}")


def _stream(parts: list[np.ndarray], threads: int):
    from edgecal import StreamingHistogram

    h = StreamingHistogram(8192)
    t = time.perf_counter()
    for part in parts:
        h.update(part, threads=threads)
    return time.perf_counter() - t, h


@numba.njit(nogil=True)
def absmax(x):
    """The reference of the ingest and threads sections: the cheapest useful pass over the data."""
    m = 0.0
    for i in range(x.size):
        a = abs(x[i])
        if a > m:
            m = a
    return m


def _bare(parts: list[np.ndarray], threads: int) -> float:
    """Seconds of the bare max(|x|) loop over ``parts``, each split over ``threads`` threads: the machine's ceiling."""
    from concurrent.futures import ThreadPoolExecutor

    absmax(parts[0][:8])
    with ThreadPoolExecutor(max(threads - 1, 1)) as pool:
        t = time.perf_counter()
        for part in parts:
            halves = np.array_split(part, threads)
            futures = [pool.submit(absmax, h) for h in halves[1:]]
            absmax(halves[0])
            for f in futures:
                f.result()
        return time.perf_counter() - t


def bench_threads(cfg: dict) -> dict:
    x = np.random.default_rng(0).standard_normal(16 << 20).astype(np.float32)
    rows = []
    for batch in (1 << 20, 1 << 22):
        parts = [x[i : i + batch] for i in range(0, x.size, batch)]
        best, hists, bare = {1: math.inf, 2: math.inf}, {}, {1: math.inf, 2: math.inf}
        for _ in range(5 if cfg.get("mode") == "full" else 3):
            for threads in (1, 2):
                seconds, hists[threads] = _stream(parts, threads)
                best[threads] = min(best[threads], seconds)
                bare[threads] = min(bare[threads], _bare(parts, threads))
        rows.append({"batch": batch, "one_s": best[1], "two_s": best[2], "speedup": best[1] / best[2],
                     "bare_speedup": bare[1] / bare[2], "equal": hists[1] == hists[2]})
    return {"rows": rows, "values": x.size, "cores": os.cpu_count()}


def print_threads(r: dict) -> None:
    print(f"\n[l] StreamingHistogram(8192).update on {r['values'] >> 20}M float32 values, 1 vs 2 threads "
          f"({r['cores']} cores; goal >= 1.7x)")
    print(f"{'batch':>8}{'1 thread ms':>13}{'2 threads ms':>14}{'speedup':>9}{'bare loop speedup':>19}"
          f"{'same bytes':>12}")
    for row in r["rows"]:
        print(f"{row['batch'] >> 20:>7}M{row['one_s'] * 1e3:>13.1f}{row['two_s'] * 1e3:>14.1f}{row['speedup']:>8.2f}x"
              f"{row['bare_speedup']:>18.2f}x{'yes' if row['equal'] else 'NO':>12}")
    print("bare loop speedup: the same batches through a bare Numba max(|x|) loop split over 2 threads, what this "
          "machine's second core and memory give at all")


SECTIONS = {"startup": (bench_startup, print_startup), "daemon": (bench_daemon_memory, print_daemon_memory),
            "observe": (bench_observe, print_observe), "threads": (bench_threads, print_threads)}
