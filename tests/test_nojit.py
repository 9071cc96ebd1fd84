"""scripts/test-nojit runs the kernel tests with NUMBA_DISABLE_JIT=1: check that the kernels really are plain Python then.

Without this, a Numba that ignored the variable (or a kernel decorator that bypassed it) would let that
run test the compiled kernels a second time while claiming to test their Python bodies.
"""

from __future__ import annotations

import inspect
import os

import numba.core.registry

import edgecal.histogram
import edgecal.link.cobs
import edgecal.methods.kl
from edgecal._jit import compile_pending

# where each kernel is bound: edgecal binds a stand-in there until numba is loaded, then the dispatcher
KERNELS = ((edgecal.histogram, "_fill"), (edgecal.histogram, "_fold"), (edgecal.link.cobs, "_decode_blocks"),
           (edgecal.methods.kl, "_kl_search"))


def test_kernels_are_compiled_exactly_when_the_jit_is_on():
    jit_off = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
    compile_pending()  # what the first kernel call does
    for module, name in KERNELS:
        kernel = getattr(module, name)
        compiled = isinstance(kernel, numba.core.registry.CPUDispatcher)
        assert compiled != jit_off, (kernel, jit_off)
        if jit_off:
            assert inspect.isfunction(getattr(kernel, "py_func", kernel)), kernel
