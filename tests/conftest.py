"""Shared test set-up: tests import their naive twins as `naive`."""

import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# an op module registers its op when imported: only the tests that use it import it (not --doctest-modules)
collect_ignore = ["op_neg.py"]

# Helpers that import an optional runtime at their top are imported by the tests that need them, which
# skip without it; the doctest collection must not import them where the runtime is absent (arm64 run).
collect_ignore = [helper for helper, runtime in (("reference_onnx.py", "onnxruntime"),
                                                 ("reference_tflite.py", "tflite_micro"))
                  if importlib.util.find_spec(runtime) is None]


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory):
    """The packaged digits split as a user has it: ``calib/batch0-3.npy`` (50 images each) and ``eval.npz``
    (``image``, labels ``y``), in one folder written once per session; tests write their tables elsewhere."""
    pytest.importorskip("onnx", reason="onnx is not installed; pip install -e '.[test]'")
    import numpy as np

    from edgecal.model.digits import load_digits_split

    root = tmp_path_factory.mktemp("digits-files")
    split = load_digits_split()
    (root / "calib").mkdir()
    for i in range(4):
        np.save(root / "calib" / f"batch{i}.npy", split["calib_x"][50 * i:50 * (i + 1)])
    np.savez(root / "eval.npz", image=split["eval_x"], y=split["eval_y"])
    return root


@pytest.fixture(scope="session")
def exe(tmp_path_factory):
    """The example device of firmware_interface/, built once per test session (tests skip without gcc)."""
    from edgecal.link.build import build

    return build("ecal_device", tmp_path_factory.mktemp("device"))
