"""Table formats, registered by name: writers, readers, and the suffixes that pick them.

=========  ============  =======================================  ==========
name       suffixes      what it holds                            readable
=========  ============  =======================================  ==========
json       .json         everything; canonical, diffable          yes
ecal       .ecal         everything; compact binary with CRC-32   yes
trt        .cache .trt   TensorRT cache: hex float32 amax/127     yes
ncnn       .table        ncnn table: 127/amax per blob            no
ort        .flatbuffers  ONNX Runtime table: amax per tensor      yes
c          .h            C header: scale, zero point, Q31 mult    no
=========  ============  =======================================  ==========
"""

from __future__ import annotations

from . import cheader, ecal, jsonfmt, ncnn, ort, trt  # noqa: F401  (registration)
from .registry import Format, detect_format, format_names, get_format, load_table, register_format, save_table

__all__ = ["Format", "detect_format", "format_names", "get_format", "load_table", "register_format", "save_table"]
