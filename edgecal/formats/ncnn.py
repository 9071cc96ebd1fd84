"""ncnn int8 tables (``.table``), the input of ``ncnn2int8``; write-only.

One line per tensor, ``<name> <value>``, with value = 127 / amax (ncnn's scale is a
quantization multiplier, the inverse of edgecal's dequantization step), rounded to
float32 and printed with 9 significant digits so ncnn's ``%f`` scan reads back that
exact float32. amax 2.54 is written ``50``; amax 1.0 is ``127``.

Names: ncnn keys an activation scale by the name of the layer that CONSUMES the
blob (``conv1`` for the input of layer ``conv1``), while edgecal writes the table's
tensor names. Name the tensors after their consuming layers when calibrating for
ncnn, or rename the lines. ``ncnn2int8`` splits each line at spaces, reads at most
255 bytes of key and treats any key containing ``_param_`` as a weight scale, so a
name with whitespace or ``_param_`` or longer than 255 bytes cannot be written: the
writer raises `InputError`, or with option ``skip_unsupported=True`` it leaves the
tensor out and logs a warning (ncnn keeps a layer without a line in fp32).

Weight scales (the ``<layer>_param_0`` lines ncnn2table also writes) are not part
of an edgecal table; only symmetric int8 entries can be written (``tflite``-scheme
entries are converted by `TensorCalibration.as_symmetric`: amax kept, zero point dropped).

>>> from edgecal.table import CalibrationTable, TensorCalibration
>>> t = CalibrationTable([TensorCalibration.symmetric("conv1", 2.54), TensorCalibration.symmetric("fc", 1.0)])
>>> write_ncnn(t).decode()
'conv1 50\\nfc 127\\n'
"""

from __future__ import annotations

import logging

from ..errors import InputError
from ..table import CalibrationTable, TensorCalibration
from .ecal import check_float32, float32
from .registry import Format, register_format

log = logging.getLogger("edgecal")


def _unsupported(name: str) -> str | None:
    """Why ncnn2int8 cannot read ``name`` back as an activation key, or None."""
    if any(c.isspace() for c in name):
        return "contains whitespace, and ncnn splits table lines at spaces"
    if "_param_" in name:
        return "contains '_param_', which ncnn2int8 reads as a weight scale"
    if len(name.encode()) > 255:
        return "is longer than the 255 bytes ncnn2int8 reads"
    return None


def _line(entry: TensorCalibration) -> str:
    entry.check_uniform("an ncnn table")
    entry = entry.as_symmetric() if entry.scheme == "tflite" else entry  # rule: TensorCalibration.as_symmetric
    if entry.scheme != "symmetric":
        raise InputError(f"tensor {entry.name!r}: scheme {entry.scheme!r}; ncnn tables hold symmetric int8 only")
    value = float32(127.0 / entry.amax, "ncnn scale 127/amax", entry.name)
    check_float32(entry)
    return f"{entry.name} {value:.9g}"


def write_ncnn(table: CalibrationTable, *, skip_unsupported: bool = False) -> bytes:
    """Encode ``table`` as an ncnn ``.table`` (activation lines only).

    Parameters
    ----------
    skip_unsupported
        Leave out, with a logged warning, tensors whose names ncnn cannot read back
        instead of raising.

    Raises
    ------
    InputError
        If a name cannot be written (and ``skip_unsupported`` is false), an entry is not
        symmetric int8, 127/amax, amax or amax/127 is not a normal float32, or no
        tensor is left.
    """
    lines = []
    for entry in table.values():
        reason = _unsupported(entry.name)
        if reason is None:
            lines.append(_line(entry))
        elif skip_unsupported:
            log.warning("ncnn table: tensor %r left out: its name %s", entry.name, reason)
        else:
            raise InputError(
                f"tensor {entry.name!r}: its name {reason}; rename it, or pass skip_unsupported=True to leave it out"
            )
    if not lines:
        raise InputError(f"no tensor of the table can be written to an ncnn table ({len(table)} in the table)")
    return ("\n".join(lines) + "\n").encode()


register_format(
    Format(
        name="ncnn",
        suffixes=(".table",),
        write=write_ncnn,
        description="ncnn int8 table: 127/amax per tensor (write-only)",
        options={"skip_unsupported": bool},
    )
)
