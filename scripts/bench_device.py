"""Benchmark sections for edgecal's footprint on a device, run by scripts/bench.py.

h. startup: `edgecal --help` and an application importing the socket client, in fresh
   processes, against `python -c "import numpy"` (the floor: both need numpy) and
   `python -c "import numba"` (what every start paid when numba loaded at import).

Each section is a pair (bench(cfg) -> dict, print(dict)); ``scripts/bench.py --only NAME``
runs only the named ones. Speeds are ratios to baselines measured in the same run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _child(argv: list[str], repeats: int) -> tuple[float, float, str]:
    """Best wall time, lowest peak RSS (MiB) and last stdout of ``python argv`` over ``repeats`` runs."""
    best_t, best_rss, out = math.inf, math.inf, ""
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True)
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
    res["repeats"] = repeats
    return res


def print_startup(r: dict) -> None:
    print(f"\n[h] startup in fresh processes (best of {r['repeats']}; ratios to `import numpy`, the floor)")
    print(f"{'process':<44}{'seconds':>9}{'x numpy':>9}{'peak MiB':>10}{'numba':>7}")
    labels = (("python", "python -c pass"), ("numpy", "import numpy"), ("numba", "import numpy, numba"),
              ("help", "edgecal.cli main(['--help'])"), ("client", "import client + push_sample (no daemon)"))
    base = r["numpy"]["s"]
    for key, label in labels:
        row = r[key]
        print(f"{label:<44}{row['s']:>9.3f}{row['s'] / base:>9.2f}{row['hwm_mib']:>10.1f}"
              f"{'yes' if row['numba_loaded'] else 'no':>7}")
    print(f"`python -m edgecal --help`: {r['help_cli_s']:.3f} s ({r['help_cli_s'] / base:.2f}x import numpy)")


SECTIONS = {"startup": (bench_startup, print_startup)}
