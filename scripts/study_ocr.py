"""The real models of the accuracy study: RapidOCR's PP-OCR family, with real inputs.

Models: the three float ONNX models that ship inside the ``rapidocr_onnxruntime``
wheel on PyPI (a PP-OCRv4 text detector, a PP-OCRv4 text-line recogniser and a
PP-OCR mobile v2 text-direction classifier), pretrained by their authors on real
data; nobody here trained them. `fetch_models` downloads the wheel with pip (no
dependencies installed) into a cache folder and unpacks the ``.onnx`` files; nothing
is committed.

Inputs: text rendered with the scalable font that ships inside Pillow, with words
taken from the docstrings of Python's own standard library (real English prose),
drawn in varied sizes, colours, contrasts, tilts, noise and blur. Calibration and
held-out sets come from different seeds and never share an image.

Metrics, int8 against float (the float model's answer is the reference):

* detector: box F1. Boxes are the connected regions of the probability map above
  0.3 whose mean score is at least 0.5 (RapidOCR's thresholds), matched one to one
  at IoU >= 0.5;
* recogniser: character accuracy, 1 - edit distance / length of the float model's
  greedy CTC transcription;
* classifier: top-1 agreement of the 0/180 degree decision.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import random
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numba
import numpy as np

WHEEL = "rapidocr_onnxruntime==1.4.4"
MODEL_FILES = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}
_STDLIB = ("json", "textwrap", "argparse", "csv", "heapq", "shutil", "tarfile", "email", "difflib", "pathlib",
           "logging", "unittest", "statistics", "fractions", "decimal", "calendar", "string", "zipfile", "sqlite3")


def missing_study_module() -> str | None:
    """The name of the first module of the ``study`` extra that does not import, or None when all do."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as err:
        return err.name
    return None


def fetch_models(cache: Path) -> dict[str, Path]:
    """Paths of the three models, prepared for quantization as ONNX Runtime recommends.

    The wheel is downloaded once with pip (no dependencies); each model is converted
    to opset 13 (per-channel weights need it) and then goes through ``onnxruntime.quantization.quant_pre_process`` (shape inference, constant
    folding, batch norms folded into convolutions), the step ORT's documentation asks
    for before ``quantize_static``. Every calibrator of the study sees the same model.
    """
    raw = _unpack(cache)
    ready = {k: p.with_suffix(".pre.onnx") for k, p in raw.items()}
    for key, path in raw.items():
        if not ready[key].is_file():
            from onnxruntime.quantization.shape_inference import quant_pre_process

            import onnx

            tmp, op13 = ready[key].with_suffix(".part"), path.with_suffix(".op13.onnx")
            model = onnx.load(str(path))
            if model.opset_import[0].version < 13:  # per-channel DequantizeLinear (axis) needs opset 13
                model = onnx.version_converter.convert_version(model, 13)
            onnx.save(model, str(op13))
            quant_pre_process(str(op13), str(tmp), skip_symbolic_shape=True)  # ONNX shape inference only: no sympy
            tmp.replace(ready[key])
    return ready


def _unpack(cache: Path) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    wanted = {k: cache / f for k, f in MODEL_FILES.items()}
    if all(p.is_file() for p in wanted.values()):
        return wanted
    wheels = sorted(cache.glob("rapidocr_onnxruntime-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--dest", str(cache), WHEEL]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip could not download {WHEEL}: {done.stderr.strip().splitlines()[-1:]}")
        wheels = sorted(cache.glob("rapidocr_onnxruntime-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as zf:
        for key, name in MODEL_FILES.items():
            tmp = wanted[key].with_suffix(".part")
            tmp.write_bytes(zf.read(f"rapidocr_onnxruntime/models/{name}"))
            tmp.replace(wanted[key])
    return wanted


# -- text and rendering ------------------------------------------------------------------
def corpus() -> list[str]:
    """Words of the docstrings in the standard library's own source files (ASCII letters, digits, punctuation).

    Read from the ``.py`` files with `ast`, never from imported modules, so the text
    does not depend on what else the process imported.
    """
    words: list[str] = []
    for name in _STDLIB:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                words += re.findall(r"[A-Za-z0-9][A-Za-z0-9.,:;()'%-]{0,14}", ast.get_docstring(node) or "")
    return words


def _phrase(rng: random.Random, words: list[str], lo: int, hi: int) -> str:
    target = rng.randint(lo, hi)
    out = rng.choice(words)
    while len(out) < target:
        out = out + " " + rng.choice(words)
    return out[:hi].strip()


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(background, ink) with a contrast between strong and faint, sometimes inverted."""
    light = tuple(rng.randint(170, 255) for _ in range(3))
    dark = tuple(rng.randint(0, 110) for _ in range(3))
    return (dark, light) if rng.random() < 0.2 else (light, dark)


def _finish(img, rng: random.Random) -> np.ndarray:
    """Tilt, blur and sensor noise; an HxWx3 uint8 array."""
    from PIL import ImageFilter

    if rng.random() < 0.5:
        img = img.rotate(rng.uniform(-3, 3), expand=False, fillcolor=img.getpixel((0, 0)))
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + np.random.default_rng(rng.randint(0, 2**31)).normal(0, rng.uniform(0, 8), arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def text_line(rng: random.Random, words: list[str]) -> tuple[np.ndarray, str]:
    """One text line image (height about 1.5x the font size) and its text."""
    from PIL import Image, ImageDraw

    text = _phrase(rng, words, 4, 28)
    size = rng.randint(18, 40)
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    pad = rng.randint(2, size // 2)
    bg, ink = _colours(rng)
    img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), bg)
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=ink)
    return _finish(img, rng), text


def _clutter(draw, rng: random.Random, width: int, height: int) -> None:
    """Shapes and lines behind the text, as on packaging, signs and screens."""
    for _ in range(rng.randint(3, 12)):
        x0, y0 = rng.randint(0, width), rng.randint(0, height)
        x1, y1 = x0 + rng.randint(20, 300), y0 + rng.randint(10, 200)
        fill = tuple(rng.randint(60, 255) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.line((x0, y0, x1, y1), fill=fill, width=rng.randint(1, 6))


def page(rng: random.Random, words: list[str], height: int = 480, width: int = 640) -> np.ndarray:
    """A page of text lines (sizes 9-40 px, one or two columns, faint to strong ink) over clutter."""
    from PIL import Image, ImageDraw

    top = np.array([rng.randint(120, 255) for _ in range(3)], dtype=np.float32)
    bottom = np.array([rng.randint(120, 255) for _ in range(3)], dtype=np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img = Image.fromarray((top * (1 - ramp) + bottom * ramp).repeat(width, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    _clutter(draw, rng, width, height)
    columns = [(5, width - 10)] if rng.random() < 0.5 else [(5, width // 2 - 10), (width // 2 + 5, width - 10)]
    for left_edge, right_edge in columns:
        y = rng.randint(2, 20)
        while y < height - 12:
            size = rng.randint(9, 40)
            font = _font(size)
            text = _phrase(rng, words, 3, 40)
            while len(text) > 3 and font.getbbox(text)[2] > right_edge - left_edge:
                text = text[:-1]
            left, top_, right, bottom_ = font.getbbox(text)
            x = left_edge + rng.randint(0, max(0, right_edge - left_edge - (right - left)))
            if rng.random() < 0.2:  # a coloured box behind the text, as on labels and signs
                box_bg, ink = _colours(rng)
                draw.rectangle((x - 3, y - 3, x + right - left + 3, y + bottom_ - top_ + 3), fill=box_bg)
            else:
                ink = tuple(rng.randint(0, 140) for _ in range(3))
            draw.text((x - left, y - top_), text, font=font, fill=ink)
            y += bottom_ - top_ + rng.randint(4, 24)
    return _finish(img, rng)


# -- model inputs --------------------------------------------------------------------------
def det_input(image: np.ndarray) -> np.ndarray:
    """NCHW float32, (x/255 - 0.5) / 0.5 (RapidOCR's detector settings); sides are multiples of 32."""
    x = image.astype(np.float32) / 255.0
    return ((x - 0.5) / 0.5).transpose(2, 0, 1)[None]


def line_input(image: np.ndarray, width: int) -> np.ndarray:
    """Resize to height 48 keeping the aspect ratio (at most ``width``), normalise to [-1, 1], pad right with 0."""
    from PIL import Image

    h, w = image.shape[:2]
    new_w = max(1, min(width, int(np.ceil(48 * w / h))))
    resized = np.asarray(Image.fromarray(image).resize((new_w, 48), Image.BILINEAR), dtype=np.float32)
    out = np.zeros((3, 48, width), dtype=np.float32)
    out[:, :, :new_w] = ((resized / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return out[None]


@dataclass
class Task:
    """One model of the study: inputs for calibration and held-out evaluation, and its metric."""

    name: str
    kind: str
    model: Path
    calib: list[dict[str, np.ndarray]]
    held_out: list[dict[str, np.ndarray]]
    metric_name: str
    metric: Callable[[list[np.ndarray], list[np.ndarray]], float]  # (float outputs, int8 outputs) -> score in [0, 1]


def make_tasks(models: dict[str, Path], calib: int, held_out: dict[str, int], only: list[str],
               seed: int = 0) -> list[Task]:
    """The tasks named in ``only``, with ``calib`` calibration and ``held_out[name]`` evaluation inputs."""
    words = corpus()

    def inputs(kind: str, count: int, base: int) -> list[dict[str, np.ndarray]]:
        out = []
        for i in range(count):
            rng = random.Random(base * 1_000_003 + i)
            if kind == "det":
                out.append({"x": det_input(page(rng, words))})
            elif kind == "rec":
                out.append({"x": line_input(text_line(rng, words)[0], 320)})
            else:
                img = text_line(rng, words)[0]
                out.append({"x": line_input(img[::-1, ::-1].copy() if rng.random() < 0.5 else img, 192)})
        return out

    specs = [("det", "text detector (PP-OCRv4 det)", "box F1", box_f1),
             ("rec", "text-line recogniser (PP-OCRv4 rec)", "char accuracy", char_accuracy),
             ("cls", "text direction classifier (PP-OCR mobile v2 cls)", "top-1 agreement", top1_agreement)]
    return [Task(k, kind, models[k], inputs(k, calib, seed * 2 + 1), inputs(k, held_out[k], seed * 2 + 2), mname, fn)
            for k, kind, mname, fn in specs if k in only]


# -- metrics -----------------------------------------------------------------------------------
def top1_agreement(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    a = np.concatenate([r.reshape(-1, r.shape[-1]).argmax(-1) for r in ref])
    b = np.concatenate([g.reshape(-1, g.shape[-1]).argmax(-1) for g in got])
    return float((a == b).mean())


def _ctc(probs: np.ndarray) -> list[int]:
    best = probs.argmax(-1)
    return [int(c) for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]


def _edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def char_accuracy(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    errors = total = 0
    for r, g in zip(ref, got):
        for rr, gg in zip(r.reshape(-1, *r.shape[-2:]), g.reshape(-1, *g.shape[-2:])):
            truth = _ctc(rr)
            errors += min(_edit_distance(truth, _ctc(gg)), len(truth))
            total += len(truth)
    return 1.0 - errors / max(total, 1)


@numba.njit(cache=True)
def _label(mask):
    """4-connected component labels (0 = background), two-pass union-find."""
    h, w = mask.shape
    parent = np.arange(h * w + 1)
    lab = np.zeros((h, w), dtype=np.int64)
    nxt = 1
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            up = lab[y - 1, x] if y > 0 else 0
            left = lab[y, x - 1] if x > 0 else 0
            if up == 0 and left == 0:
                lab[y, x] = nxt
                nxt += 1
            else:
                a = up if up else left
                lab[y, x] = a
                if up and left and up != left:
                    ra, rb = up, left
                    while parent[ra] != ra:
                        ra = parent[ra]
                    while parent[rb] != rb:
                        rb = parent[rb]
                    parent[max(ra, rb)] = min(ra, rb)
    for y in range(h):
        for x in range(w):
            r = lab[y, x]
            while parent[r] != r:
                r = parent[r]
            lab[y, x] = r
    return lab


def boxes(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5, min_area: int = 9) -> list[tuple[int, ...]]:
    """Bounding boxes (y0, x0, y1, x1) of the text regions of one probability map."""
    lab = _label(prob > thresh)
    out = []
    for r in np.unique(lab[lab > 0]):
        ys, xs = np.nonzero(lab == r)
        if ys.size >= min_area and prob[ys, xs].mean() >= box_thresh:
            out.append((ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
    return out


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(h, 0) * max(w, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def box_f1(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    matched = n_ref = n_got = 0
    for r, g in zip(ref, got):
        rb, gb = boxes(r[0, 0]), boxes(g[0, 0])
        n_ref, n_got = n_ref + len(rb), n_got + len(gb)
        free = list(gb)
        for a in rb:
            best = max(free, key=lambda b: _iou(a, b), default=None)
            if best is not None and _iou(a, best) >= 0.5:
                matched += 1
                free.remove(best)
    return 2 * matched / max(n_ref + n_got, 1)


def save_png(image: np.ndarray) -> bytes:
    """PNG bytes of an HxWx3 uint8 image (for looking at the inputs)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
