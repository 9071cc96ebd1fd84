"""Names and defaults the command line shows, importable without numpy or numba.

`edgecal calibrate --help` lists every method and table format. The registries
(`edgecal.methods`, `edgecal.formats`) import numpy and every method's module, 0.2 s
before any help is printed; this module holds the built-in names instead (a test keeps
them equal to what the registries hold) and adds the names of installed plugins from
their entry points, without importing them.

>>> "mse" in method_names() and "trt" in format_names() and DEFAULT_METHOD in BUILTIN_METHODS
True
"""

from __future__ import annotations

from .plugins import entry_point_names

# One default for a histogram alone and for every Calibrator: scripts/lattice_study.py found 8192 the
# smallest lattice whose KL tables match exact-range ones, and the counters cost 64 KiB per tensor there.
DEFAULT_BINS = 8192

# The method a table gets when none is named; chosen on real models (README, "Accuracy on real models").
DEFAULT_METHOD = "mse"

BUILTIN_METHODS = ("auto", "codebook", "kl", "kl-mxnet", "kl-ncnn", "kl-onnxruntime", "kl-refine", "minmax", "mse",
                   "percentile")
BUILTIN_FORMATS = ("c", "ecal", "json", "ncnn", "ort", "trt")

# Who runs a model for `calibrate --model` and `check`.
RUNTIMES = ("auto", "edgecal", "onnxruntime", "litert")


def method_names() -> list[str]:
    """Built-in method names and the names of installed method plugins, sorted (as the registry lists them)."""
    return sorted({*BUILTIN_METHODS, *entry_point_names("edgecal.methods")})


def format_names() -> list[str]:
    """Built-in table format names and the names of installed format plugins, sorted."""
    return sorted({*BUILTIN_FORMATS, *entry_point_names("edgecal.formats")})
