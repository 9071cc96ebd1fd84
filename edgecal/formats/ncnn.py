"""ncnn int8 tables (``.table``), the input of ``ncnn2int8``; write-only.

One line per tensor, ``<name> <value>``, with value = 127 / amax (ncnn's scale is a
quantization multiplier, the inverse of edgecal's dequantization step), rounded to
float32 and printed with 9 significant digits so ncnn's ``%f`` scan reads back that
exact float32. amax 2.54 is written ``50``; amax 1.0 is ``127``.

Names: ``ncnn2int8`` keys an activation scale by the name of the layer that
CONSUMES the blob: the line ``conv1 <scale>`` is the scale of the input blob of the
``Convolution`` layer named ``conv1``; it reads such lines for ``Convolution``,
``ConvolutionDepthWise`` and ``InnerProduct`` layers (`QUANTIZED_LAYERS`) and keeps
every other layer in fp32. edgecal's tensor names are the model's tensor names (ONNX
tensor names), which converters such as ``onnx2ncnn`` and ``pnnx`` keep as ncnn BLOB
names. With option ``param=PATH.param`` the writer reads the ncnn model's ``.param``
file and writes, for each quantized layer whose input blob is a tensor of the table,
the line ``<layer name> <127/amax of that blob>``; a blob that ncnn splits to several
consumers (a ``Split`` layer, outputs ``<blob>_splitncnn_<i>``) is followed back to
the tensor. Tensors no quantized layer reads, and quantized layers whose input is
not in the table, are listed in one logged warning; a malformed ``.param`` raises
`InputError` naming its line. Without ``param`` the lines carry the tensor names:
name the tensors after their consuming layers, or rename the lines.

``ncnn2int8`` also needs each quantized layer's weight scales (``<layer>_param_0``
lines) and stops without them; edgecal calibrates activations only, so take those
lines from a table ``ncnn2table`` wrote for the same model and append edgecal's
activation lines in place of its own. ``ncnn2int8`` splits each line at spaces, reads at most
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

The ``.param`` grammar read: a first line ``7767517``, a line ``<layers> <blobs>``,
then one line per layer ``<type> <name> <inputs> <outputs> <input blobs>
<output blobs> <key=value>...``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from ..errors import InputError
from ..regular_file import read_regular
from ..table import CalibrationTable, TensorCalibration
from .ecal import check_float32, float32
from .registry import Format, register_format

log = logging.getLogger("edgecal")

MAGIC = "7767517"
QUANTIZED_LAYERS = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
MAX_PARAM_BYTES = 64 << 20  # a .param is text, a few kB to a few MB; bounds what is read


@dataclass(frozen=True)
class NcnnLayer:
    """One layer line of an ncnn ``.param`` file."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _layer(tokens: list[str], where: str) -> NcnnLayer:
    if len(tokens) < 4 or not tokens[2].isdigit() or not tokens[3].isdigit():
        raise InputError(f"{where}: expected '<type> <name> <inputs> <outputs> <blobs>...', found {' '.join(tokens)!r}")
    n_in, n_out = int(tokens[2]), int(tokens[3])
    blobs = tokens[4 : 4 + n_in + n_out]
    if len(blobs) < n_in + n_out:
        raise InputError(f"{where}: layer {tokens[1]!r} declares {n_in} input and {n_out} output blobs, "
                         f"found {len(blobs)} names")
    params = tokens[4 + n_in + n_out :]
    bad = next((p for p in params if "=" not in p), None)
    if bad is not None:
        raise InputError(f"{where}: layer {tokens[1]!r}: parameter {bad!r} is not key=value")
    return NcnnLayer(tokens[0], tokens[1], tuple(blobs[:n_in]), tuple(blobs[n_in:]))


def parse_param(text: str, path: str = ".param") -> list[NcnnLayer]:
    """The layers of an ncnn ``.param`` file's text; `InputError` naming the line of the first problem.

    >>> [l.name for l in parse_param("7767517\\n2 2\\nInput data 0 1 x\\nInnerProduct fc 1 1 x y 0=10\\n")]
    ['data', 'fc']
    """
    lines = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines or lines[0][1] != [MAGIC]:
        raise InputError(f"{path}: line 1: expected the ncnn magic {MAGIC}; not an ncnn .param file")
    if len(lines) < 2 or len(lines[1][1]) != 2 or not all(t.isdigit() for t in lines[1][1]):
        raise InputError(f"{path}: line {lines[1][0] if len(lines) > 1 else 2}: expected '<layer count> <blob count>'")
    layers = [_layer(tokens, f"{path}: line {n}") for n, tokens in lines[2:]]
    declared = int(lines[1][1][0])
    if declared != len(layers):
        raise InputError(f"{path}: line {lines[1][0]} declares {declared} layers, the file has {len(layers)}")
    return layers


def read_param(path: str) -> list[NcnnLayer]:
    """`parse_param` of the file ``path`` (at most `MAX_PARAM_BYTES`, UTF-8)."""
    raw = read_regular(path, MAX_PARAM_BYTES, "ncnn .param")
    try:
        return parse_param(raw.decode("utf-8"), path)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text at byte {err.start}; expected an ncnn .param file") from None


def _sources(layers: list[NcnnLayer]) -> dict[str, str]:
    """Each blob a ``Split`` layer makes -> the blob it copies (followed to the first non-split blob)."""
    source: dict[str, str] = {}
    for layer in layers:
        if layer.type == "Split" and len(layer.inputs) == 1:
            origin = source.get(layer.inputs[0], layer.inputs[0])
            source.update(dict.fromkeys(layer.outputs, origin))
    return source


def layer_entries(table: CalibrationTable, layers: list[NcnnLayer]) -> list[TensorCalibration]:
    """Entries renamed to the quantized layers that read them, in layer order; one warning for what is left."""
    source = _sources(layers)
    entries, used, missing = [], set(), []
    for layer in layers:
        if layer.type not in QUANTIZED_LAYERS or not layer.inputs:
            continue
        blob = source.get(layer.inputs[0], layer.inputs[0])
        if blob in table:
            entries.append(replace(table[blob], name=layer.name))
            used.add(blob)
        else:
            missing.append(layer.name)
    unused = [name for name in table if name not in used]
    if unused or missing:
        log.warning("ncnn table: %d tensors match no %s input in the .param (%s); %d such layers have no tensor and "
                    "stay fp32 (%s)", len(unused), "/".join(QUANTIZED_LAYERS), ", ".join(map(repr, unused)) or "-",
                    len(missing), ", ".join(map(repr, missing)) or "-")
    return entries


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


def write_ncnn(table: CalibrationTable, *, skip_unsupported: bool = False, param: str | None = None) -> bytes:
    """Encode ``table`` as an ncnn ``.table`` (activation lines only).

    Parameters
    ----------
    skip_unsupported
        Leave out, with a logged warning, tensors whose names ncnn cannot read back
        instead of raising.
    param
        The model's ncnn ``.param`` file: lines are named after the quantized layers
        that read each tensor (see the module notes).

    Raises
    ------
    InputError
        If a name cannot be written (and ``skip_unsupported`` is false), an entry is not
        symmetric int8, 127/amax, amax or amax/127 is not a normal float32, or no
        tensor is left.
    """
    entries = layer_entries(table, read_param(param)) if param else list(table.values())
    lines = []
    for entry in entries:
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
        options={"skip_unsupported": bool, "param": str},
        check=lambda options: read_param(options["param"]) if options.get("param") else None,
    )
)
