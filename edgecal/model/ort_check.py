"""What an int8 model made by ONNX Runtime costs: float and int8 side by side in ONNX Runtime.

`check_onnx` runs a float ONNX model and its QDQ int8 twin (e.g. from
`edgecal.model.ort_quant.quantize_onnx`) on the same batches and reports top-1
agreement and output SQNR, accuracy against labels when given, and the SQNR of every
quantized activation, worst first (see `check_onnx` for what exactly is compared).
SQNR is ``10 log10(sum f**2 / sum (f - q)**2)`` in dB over all batches.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..metrics import sqnr_from_sums
from .ort_quant import error_line, import_ort


@dataclass(frozen=True)
class OutputReport:
    """One graph output: top-1 agreement over its last axis (None if not classification-like) and SQNR."""

    name: str
    top1_agreement: float | None
    sqnr_db: float


@dataclass(frozen=True)
class QuantizedTensorReport:
    """One activation the int8 model quantizes (see `check_onnx` for what is compared).

    ``sqnr_db``: the int8 graph's value there against float, with every earlier
    quantization's error in it. ``own_sqnr_db``: the float tensor quantized alone with
    this scale and zero point (ORT's QuantizeLinear: round half to even, clamp), so
    the error of this range only; the lowest one points at the range to blame.
    """

    name: str
    op: str
    scale: float
    zero_point: int
    sqnr_db: float
    own_sqnr_db: float


@dataclass(frozen=True)
class OnnxCheckReport:
    """Float versus int8 in ONNX Runtime on one set of batches (see `check_onnx`).

    ``output`` is the output accuracy and ``top1_agreement`` are measured on (the first
    classification-like one), ``output_sqnr_db`` its SQNR; ``tensors`` are worst first.
    """

    samples: int
    output: str
    runtime: str
    float_accuracy: float | None
    int8_accuracy: float | None
    top1_agreement: float | None
    output_sqnr_db: float
    outputs: list[OutputReport]
    tensors: list[QuantizedTensorReport]

    def worst(self, n: int = 3) -> list[QuantizedTensorReport]:
        """The ``n`` tensors of lowest SQNR against float."""
        return self.tensors[:n]

    def culprit(self) -> QuantizedTensorReport | None:
        """The tensor whose range alone costs the most (lowest ``own_sqnr_db``)."""
        return min(self.tensors, key=lambda t: t.own_sqnr_db, default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (an infinite SQNR becomes the string "inf" or "-inf")."""
        d = asdict(self)
        for item in (d, *d["outputs"], *d["tensors"]):
            for key in ("sqnr_db", "own_sqnr_db", "output_sqnr_db"):
                if key in item and not math.isfinite(item[key]):
                    item[key] = str(item[key])
        d["worst"] = [t.name for t in self.worst()]
        culprit = self.culprit()
        d["culprit"] = culprit.name if culprit else None
        return d


class _Sums:
    """sum f**2 and sum (f - q)**2 of one tensor over every batch, top-1 matches for outputs."""

    def __init__(self) -> None:
        self.signal, self.err, self.agree, self.rows, self.samples = 0.0, 0.0, 0, 0, 0

    def add(self, f: np.ndarray, q: np.ndarray, where: str) -> None:
        if f.shape != q.shape:
            raise InputError(f"{where}: int8 shape {q.shape} differs from float shape {f.shape}; expected equal")
        f64 = f.astype(np.float64)
        self.samples += int(f.shape[0]) if f.ndim else 1
        self.signal += float(np.sum(f64 * f64))
        self.err += float(np.sum((f64 - q.astype(np.float64)) ** 2))
        if _classes(f):
            self.agree += int(np.sum(f.argmax(-1) == q.argmax(-1)))
            self.rows += f.size // f.shape[-1]

    def sqnr(self) -> float:
        return sqnr_from_sums(self.signal, self.err)


def _classes(x: np.ndarray) -> bool:
    """Classification-like: scores over a last axis of more than one class."""
    return x.ndim >= 2 and x.shape[-1] > 1


def _load(onnx: Any, path: str | os.PathLike[str]) -> Any:
    try:
        return onnx.load(str(path))
    except Exception as err:  # protobuf raises its own DecodeError types
        raise InputError(f"{path}: not a readable ONNX model ({error_line(err)})") from err


def _session(ort: Any, model: Any, path: Any, optimize: bool) -> Any:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT's exceptions derive from Exception only
        raise InputError(f"{path}: ONNX Runtime cannot load the model ({error_line(err)})") from err


def _with_outputs(model: Any, names: Iterable[str]) -> Any:
    """A copy of ``model`` that also returns ``names`` (ORT infers their types)."""
    out = type(model)()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output} | {i.name for i in out.graph.input}
    for name in names:
        if name not in present:
            out.graph.output.add().name = name
            present.add(name)
    return out


@dataclass(frozen=True)
class _Pair:
    """A quantized activation in the QDQ model: original name, DQ output, scale, zero point, integer range."""

    name: str
    dq_output: str
    scale: float
    zero_point: int
    qmin: int
    qmax: int

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        """QuantizeLinear then DequantizeLinear as ONNX defines them: round half to even, clamp."""
        q = np.clip(np.round(np.asarray(x, np.float64) / self.scale) + self.zero_point, self.qmin, self.qmax)
        return (q - self.zero_point) * self.scale


def _activation_pairs(model: Any, float_names: set[str]) -> list[_Pair]:
    """Every QuantizeLinear of a non-constant tensor feeding a DequantizeLinear, by original tensor name.

    The original name is the QuantizeLinear input, or the DequantizeLinear output when ORT
    renamed the producer's output (a graph output keeps its name on the DequantizeLinear).
    """
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    pairs: dict[str, _Pair] = {}
    for dq in g.node:
        q = producer.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
            continue
        name = next((c for c in (q.input[0], dq.output[0]) if c in float_names), None)
        if name is not None and name not in pairs:
            scale = inits.get(q.input[1], np.array(np.nan))
            zp = inits.get(q.input[2], np.array(0, np.uint8)) if len(q.input) > 2 else np.array(0, np.uint8)
            info = np.iinfo(zp.dtype) if zp.dtype.kind in "iu" else np.iinfo(np.uint8)  # no zero point: uint8
            pairs[name] = _Pair(name, dq.output[0], float(np.ravel(scale)[0]), int(np.ravel(zp)[0]),
                                int(info.min), int(info.max))
    return list(pairs.values())


def _run(session: Any, names: list[str], feeds: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    try:
        return {**feeds, **dict(zip(names, session.run(names, dict(feeds))))}
    except Exception as err:  # ORT's exceptions derive from Exception only
        raise InputError(f"{where}: ONNX Runtime refused the batch ({error_line(err)})") from err


def _float_names(onnx: Any, model: Any) -> set[str]:
    """Graph inputs and node outputs shape inference calls float (or cannot tell)."""
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # inference is a help here, not a requirement
        g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.value_info, *g.output)}
    names = [i.name for i in g.input] + [o for n in g.node for o in n.output]
    return {n for n in names if types.get(n, 0) in (0, 1, 10, 11)} - {t.name for t in g.initializer}


def _producers(model: Any) -> dict[str, str]:
    return {o: n.op_type for n in model.graph.node for o in n.output}


def _labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels).reshape(-1)
    if y.shape[0] != n or y.dtype.kind not in "iu":
        raise InputError(f"labels must be {n} integers (one per sample of the batches), found {y.dtype} "
                         f"with shape {np.shape(labels)}")
    return y


def check_onnx(float_model: str | os.PathLike[str], int8_model: str | os.PathLike[str],
               feeds_batches: Iterable[Mapping[str, np.ndarray]], labels: Any = None,
               outputs: Sequence[str] | None = None) -> OnnxCheckReport:
    """Run ``float_model`` and ``int8_model`` in ONNX Runtime on every batch and compare.

    Parameters
    ----------
    float_model, int8_model : path
        The float ONNX model and its QDQ int8 version (same input and output names).
    feeds_batches : iterable of dict
        One dict per batch: model input name -> array of the input's dtype.
    labels : array of int, optional
        One label per sample of the first classification-like output (its positions
        over all axes but the last), for all batches in order.
    outputs : list of str, optional
        Graph outputs to compare (default: all of the float model's).

    Outputs come from the int8 model as deployed (ORT's default graph optimizations,
    which fuse Q/DQ pairs into int8 kernels where they can). The activations are the
    tensors the int8 model quantizes (a QuantizeLinear of a non-constant tensor feeding
    a DequantizeLinear). For each, ``sqnr_db`` compares that DequantizeLinear's output,
    computed with graph optimizations off so every Q/DQ runs as written (the value the
    int8 graph carries there, with the error of every earlier quantization in it), to
    the float model's tensor of the same original name, also run unoptimized;
    ``own_sqnr_db`` compares that float tensor to itself quantized and dequantized
    alone with the int8 model's scale and zero point for it.
    """
    ort, onnx = import_ort()
    fmodel, qmodel = _load(onnx, float_model), _load(onnx, int8_model)
    pairs = _activation_pairs(qmodel, _float_names(onnx, fmodel))
    names = list(outputs or [o.name for o in fmodel.graph.output])
    unknown = [n for n in names if n not in {o.name for o in qmodel.graph.output}]
    if unknown:
        raise InputError(f"{int8_model}: has no output {unknown[0]!r}; expected the float model's outputs")
    f_names = list(dict.fromkeys([*names, *(p.name for p in pairs)]))
    probe_names = list(dict.fromkeys(p.dq_output for p in pairs))
    inputs = {i.name for i in fmodel.graph.input}
    fsess = _session(ort, _with_outputs(fmodel, f_names), float_model, optimize=False)
    qsess = _session(ort, qmodel, int8_model, optimize=True)
    probe = _session(ort, _with_outputs(qmodel, probe_names), int8_model, optimize=False)
    sums = _Totals(names, pairs)
    for k, feeds in enumerate(feeds_batches):
        where = f"batch {k}"
        f = _run(fsess, [n for n in f_names if n not in inputs], feeds, where)
        q = _run(qsess, names, feeds, where)
        sums.add(f, q, _run(probe, [n for n in probe_names if n not in inputs], feeds, where), where)
    if not sums.batches:
        raise InputError("no batches to check; expected at least one")
    return sums.report(labels, _producers(fmodel), inputs)


class _Totals:
    """What `check_onnx` gathers over the batches: sums per output and per tensor, top-1 predictions."""

    def __init__(self, names: list[str], pairs: list[_Pair]) -> None:
        self.names, self.pairs, self.batches = names, pairs, 0
        self.outputs = {n: _Sums() for n in names}
        self.tensors = {p.name: _Sums() for p in pairs}
        self.own = {p.name: _Sums() for p in pairs}
        self.top1: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {n: ([], []) for n in names}

    def add(self, f: dict[str, np.ndarray], q: dict[str, np.ndarray], probe: dict[str, np.ndarray],
            where: str) -> None:
        for n in self.names:
            self.outputs[n].add(f[n], q[n], f"{where}, output {n!r}")
            if _classes(f[n]):
                self.top1[n][0].append(f[n].argmax(-1).reshape(-1))
                self.top1[n][1].append(q[n].argmax(-1).reshape(-1))
        for p in self.pairs:
            x = np.asarray(f[p.name])
            self.tensors[p.name].add(x, probe[p.dq_output], f"{where}, tensor {p.name!r}")
            self.own[p.name].add(x, p.fake_quantize(x), f"{where}, tensor {p.name!r}")
        self.batches += 1

    def report(self, labels: Any, producers: dict[str, str], inputs: set[str]) -> OnnxCheckReport:
        main = next((n for n in self.names if self.top1[n][0]), self.names[0])
        f_top, q_top = (np.concatenate(t) if t else None for t in self.top1[main])
        if labels is not None and f_top is None:
            raise InputError(f"labels given, but no output has class scores over a last axis; outputs: "
                             f"{', '.join(self.names)}")
        y = None if labels is None or f_top is None else _labels(labels, int(f_top.size))
        outs = [OutputReport(n, s.agree / s.rows if s.rows else None, s.sqnr()) for n, s in self.outputs.items()]
        tensors = [QuantizedTensorReport(p.name, "input" if p.name in inputs else producers.get(p.name, "?"),
                                         p.scale, p.zero_point, self.tensors[p.name].sqnr(), self.own[p.name].sqnr())
                   for p in self.pairs]
        first = outs[self.names.index(main)]
        return OnnxCheckReport(
            samples=self.outputs[main].samples, output=main, runtime="onnxruntime",
            float_accuracy=None if y is None else float(np.mean(f_top == y)),
            int8_accuracy=None if y is None else float(np.mean(q_top == y)),
            top1_agreement=first.top1_agreement, output_sqnr_db=first.sqnr_db, outputs=outs,
            tensors=sorted(tensors, key=lambda t: t.sqnr_db))
