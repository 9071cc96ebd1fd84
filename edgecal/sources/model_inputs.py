"""Inputs of the model sources: a folder of arrays or images, or a Python entry point.

A folder contributes every ``.npy`` / ``.npz`` file and every image below it (sorted,
dotfiles skipped), one batch per file. An array file holds one array named after
each model input, or a single array for a single-input model. An image (PNG, JPEG,
BMP, ... read with Pillow, the ``images`` extra) is one batch of one for a
single-input model: converted to grey or RGB by the input's channel count, resized to
the input's height and width when those are fixed, scaled as
``(pixel * image_scale - image_mean[c]) / image_std[c]`` and laid out NCHW or NHWC.

An entry point ``"package.module:function"`` (or ``"/path/to/file.py:function"``) is
called with no arguments at the start of every pass and returns an iterable of feed
dicts (model input name -> array), one batch each.

>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp(); np.save(os.path.join(d, "b0.npy"), np.ones((2, 3)))
>>> specs = [ModelInput("x", (None, 3), np.dtype(np.float32))]
>>> feed = file_feed(input_files(d)[0], specs, ImageOptions())
>>> feed.arrays["x"].shape, feed.arrays["x"].dtype.name
((2, 3), 'float32')
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import SUFFIXES, read_arrays
from ..errors import InputError, MissingExtraError
from ..identity import file_identity, legacy_identity

MAX_FEED_BYTES = 1 << 30  # one array file is one batch in memory
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".pnm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ModelInput:
    """One input of a model: name, shape (None for a free dimension) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class Feed:
    """One batch: the model's inputs, the consumed keys of its file (None if none), where it came from.

    ``key`` is the file's `file_identity`, then its `legacy_identity`: the pipeline records the
    first and recognises either, so states written before inodes were part of the key resume.
    """

    arrays: dict[str, np.ndarray]
    key: tuple[str, str] | None
    where: str


@dataclass(frozen=True)
class ImageOptions:
    """How an image becomes an input tensor."""

    layout: str = "auto"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)


def import_pil() -> Any:
    """``PIL.Image``, or `MissingExtraError` naming the extra to install."""
    try:
        from PIL import Image
    except ImportError as err:
        raise MissingExtraError("reading image inputs needs Pillow; install it with: pip install -e '.[images]'") from err
    return Image


def input_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Array and image files below ``folder``, sorted; `InputError` when there are none."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"inputs {root}: no such folder; expected a folder of .npy/.npz arrays or images")
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES + IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts) and p.is_file())
    if not found:
        raise InputError(f"inputs {root}: holds no .npy, .npz or image files")
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in found):
        import_pil()  # fail at open, not at the first image
    return found


def check_feed(specs: list[ModelInput], arrays: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """The model's inputs from ``arrays``, cast to their dtypes; `InputError` naming what does not fit."""
    names = [s.name for s in specs]
    if all(n in arrays for n in names):
        chosen = {n: arrays[n] for n in names}
    elif len(names) == 1 and len(arrays) == 1:
        chosen = {names[0]: next(iter(arrays.values()))}
    else:
        raise InputError(f"{where}: holds arrays {sorted(arrays)}; expected one named after each model input "
                         f"({', '.join(names)}), or a single array for a single-input model")
    out = {}
    for spec in specs:
        x = np.asarray(chosen[spec.name])
        if x.dtype.kind not in "biuf":
            raise InputError(f"{where}: input {spec.name!r} has dtype {x.dtype}; expected real numbers")
        fixed = [(i, s) for i, s in enumerate(spec.shape) if i > 0 and s is not None and s > 0]
        if x.ndim != len(spec.shape) or any(x.shape[i] != s for i, s in fixed):
            want = "x".join("N" if s is None or s <= 0 else str(s) for s in spec.shape)
            raise InputError(f"{where}: input {spec.name!r} has shape {x.shape}; expected {want}")
        out[spec.name] = x.astype(spec.dtype, copy=False)
    return out


def file_feed(path: Path, specs: list[ModelInput], images: ImageOptions, max_bytes: int = MAX_FEED_BYTES) -> Feed:
    """The batch of one array or image file (arrays of at most ``max_bytes``); `InputError` naming the file."""
    where = str(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if len(specs) != 1:
            raise InputError(f"{where}: an image feeds a single-input model; this model has inputs "
                             f"{', '.join(s.name for s in specs)}")
        arrays: Mapping[str, Any] = {specs[0].name: image_tensor(path, specs[0], images)}
    else:
        arrays = read_arrays(path, max_bytes)
    try:
        st = os.stat(path)
        key: tuple[str, str] | None = (file_identity(path, st), legacy_identity(path, st))
    except OSError:
        key = None
    return Feed(check_feed(specs, arrays, where), key, where)


def _layout(spec: ModelInput, option: str, where: str) -> tuple[str, int, int | None, int | None]:
    """(layout, channels, height, width) of an image input."""
    if len(spec.shape) != 4:
        raise InputError(f"{where}: model input {spec.name!r} has {len(spec.shape)} dimensions; an image needs "
                         "4 (NCHW or NHWC)")
    _, a, b, c = spec.shape
    layout = option
    if layout == "auto":
        layout = "nchw" if a in (1, 3) else "nhwc" if c in (1, 3) else ""
        if not layout:
            raise InputError(f"{where}: cannot tell whether input {spec.name!r} {spec.shape} is NCHW or NHWC; "
                             "set image_layout")
    channels, height, width = (a, b, c) if layout == "nchw" else (c, a, b)
    if channels not in (1, 3):
        raise InputError(f"{where}: input {spec.name!r} has {channels} channels ({layout}); an image gives 1 or 3")
    return layout, channels, height, width


def image_tensor(path: Path, spec: ModelInput, opts: ImageOptions) -> np.ndarray:
    """A batch of one from an image file, shaped and scaled for ``spec``."""
    image_mod = import_pil()
    layout, channels, height, width = _layout(spec, opts.layout, str(path))
    try:
        with image_mod.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            size = (width or img.width, height or img.height)
            if img.size != size:
                img = img.resize(size, image_mod.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32)
    except (OSError, ValueError) as err:  # PIL.UnidentifiedImageError is an OSError
        raise InputError(f"{path}: not a readable image ({err})") from err
    for name, values in (("image_mean", opts.mean), ("image_std", opts.std)):
        if len(values) not in (1, channels):
            raise InputError(f"{path}: {name} has {len(values)} values; expected 1 or {channels} (one per channel)")
    hwc = pixels.reshape(pixels.shape[0], pixels.shape[1], channels)
    x = (hwc * np.float32(opts.scale) - np.asarray(opts.mean, np.float32)) / np.asarray(opts.std, np.float32)
    return (x.transpose(2, 0, 1) if layout == "nchw" else x)[None]


def load_entry_point(spec: str) -> Callable[[], Iterable[Any]]:
    """The function an entry point names; `InputError` when it cannot be imported or is not callable."""
    target, _, name = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location(f"_edgecal_inputs_{Path(target).stem}", target)
            if module_spec is None or module_spec.loader is None or not Path(target).is_file():
                raise FileNotFoundError(f"no such file {target}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except Exception as err:  # the user's module: whatever it raises becomes one line
        raise InputError(f"entry point {spec}: cannot import {target} ({type(err).__name__}: {err})") from err
    fn = getattr(module, name, None)
    if not callable(fn):
        raise InputError(f"entry point {spec}: {target} has no function {name}")
    return fn


def entry_point_items(spec: str, fn: Callable[[], Iterable[Any]]) -> Iterator[tuple[Any, str]]:
    """(item, where) for each item the entry point yields; what its code raises becomes `InputError`."""
    try:
        items = iter(fn())
    except Exception as err:
        raise InputError(f"entry point {spec}: raised {type(err).__name__}: {err}") from err
    count = 0
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except Exception as err:
            raise InputError(f"entry point {spec}: raised {type(err).__name__}: {err} after {count} batches") from err
        yield item, f"entry point {spec}, batch {count}"
        count += 1


def item_feed(item: Any, where: str, specs: list[ModelInput]) -> Feed:
    """The batch of one entry-point item; `InputError` when it is not a fitting dict."""
    if not isinstance(item, Mapping):
        raise InputError(f"{where}: a {type(item).__name__}; expected a dict of model input name -> array")
    return Feed(check_feed(specs, item, where), None, where)
