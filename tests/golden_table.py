"""The one fixed table the golden files in tests/golden/ are written from.

Every field is fixed (creation time, model hash, edgecal version "0.0.0-golden"), so
the golden files change only when a format changes. The entries cover what the
formats find hard: a name with colons and spaces (": " inside it), a non-ASCII
name, an all-zero tensor, every flag (two listed out of bit order), a scale whose
Q31 mantissa rounds up to 2**31 and that is not amax/127, and the real TensorRT cache values 3c008912 and
4000889d (amax = float32 scale * 127, so the cache must reproduce those lines).
"""

from __future__ import annotations

import struct

from edgecal.table import CalibrationTable, TensorCalibration, TensorStats


def from_trt_hex(bits: str) -> float:
    """The amax a TensorRT cache value stands for: float32(bits) * 127."""
    return struct.unpack(">f", struct.pack(">I", int(bits, 16)))[0] * 127.0


CREATED = "2026-01-02T03:04:05Z"
MODEL_HASH = "sha256:" + "0123456789abcdef" * 4
VERSION = "0.0.0-golden"

ENTRIES = [
    TensorCalibration.symmetric(
        "data",
        from_trt_hex("3c008912"),
        method="kl",
        params={"bins": 2048, "start": 128, "stride": 1},
        stats=TensorStats(samples=8, count=6272, zeros=4608, min=0.0, max=1.0),
    ),
    TensorCalibration.symmetric(
        "stage 2/conv: relu:0",
        2.54,
        method="percentile",
        params={"percentile": 99.99},
        stats=TensorStats(samples=8, count=4096, zeros=1024, min=0.0, max=3.25),
    ),
    TensorCalibration.symmetric(
        "größe_出力",
        6.35,
        method="minmax",
        stats=TensorStats(samples=8, count=80, zeros=0, nans=2, posinf=1, neginf=0, min=-6.35, max=1.5),
        flags=("nonfinite",),
    ),
    TensorCalibration.symmetric(
        "zeros",
        1.0,
        method="kl",
        params={"bins": 2048, "start": 128, "stride": 1},
        stats=TensorStats(samples=8, count=512, zeros=512, min=0.0, max=0.0),
        flags=("all_zero",),
    ),
    TensorCalibration.symmetric(
        "input_1:0",
        from_trt_hex("4000889d"),
        method="mse",
        params={},
        stats=TensorStats(samples=8, count=9, zeros=0, nans=1, min=0.0, max=255.0),
        flags=("nonfinite", "fallback"),
    ),
    TensorCalibration(
        "q31_carry",
        amax=127.0,
        scale=1.0 - 2.0**-40,
        method="manual",
        stats=TensorStats(samples=1, count=4, min=127.0, max=127.0),
        flags=("constant",),
    ),
]


def golden_table() -> CalibrationTable:
    """The golden table (a fresh object each call)."""
    return CalibrationTable(ENTRIES, model_hash=MODEL_HASH, created=CREATED, edgecal_version=VERSION)
