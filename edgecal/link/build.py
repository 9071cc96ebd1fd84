"""Building the C side (firmware_interface/) with the host's gcc, for tests and the demo.

The example device and the C tests are ordinary C99 programs; they build in about a
second with ``gcc``. Nothing here is needed to stream from real hardware.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from .errors import LinkError

ROOT = Path(__file__).resolve().parents[2] / "firmware_interface"
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
SANITIZE = ["-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
PROGRAMS = {
    "ecal_device": ["src/ecal_link.c", "examples/model.c", "examples/device.c"],
    "test_ecal_link": ["src/ecal_link.c", "tests/test_ecal_link.c"],
    "fuzz_rx": ["src/ecal_link.c", "tests/fuzz_rx.c"],
}


def compiler() -> str | None:
    """Path of the C compiler (``$CC`` or gcc), or None."""
    return shutil.which(os.environ.get("CC", "gcc"))


def build(program: str, out_dir: str | os.PathLike[str], *, sanitize: bool = False, defines: tuple[str, ...] = ()) -> Path:
    """Compile one of `PROGRAMS` into ``out_dir`` (cached by a hash of its sources and flags)."""
    cc = compiler()
    if cc is None:
        raise LinkError("no C compiler found (gcc, or set CC); install gcc to build firmware_interface")
    if not ROOT.is_dir():
        raise LinkError(f"firmware_interface/ not found next to the edgecal package (looked in {ROOT})")
    flags = [*WARNINGS, *(SANITIZE if sanitize else ["-O2"]), *(f"-D{d}" for d in defines),
             f"-I{ROOT / 'include'}", f"-I{ROOT / 'examples'}"]
    sources = [ROOT / s for s in PROGRAMS[program]]
    digest = hashlib.sha256(" ".join([cc, *flags]).encode())
    for path in sorted({*sources, *(ROOT / "include").glob("*.h"), *(ROOT / "examples").glob("*.h")}):
        digest.update(path.read_bytes())
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    target = Path(out_dir) / f"{program}-{digest.hexdigest()[:12]}"
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        done = subprocess.run([cc, *flags, *map(str, sources), "-o", str(tmp)], capture_output=True, text=True)
        if done.returncode:
            raise LinkError(f"building {program} failed:\n{done.stderr.strip()}")
        os.replace(tmp, target)
    return target
