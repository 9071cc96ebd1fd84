"""`ModelSource`: what the three model sources (onnxruntime, litert, runner) share.

A model source runs a float model on its inputs (`edgecal.sources.model_inputs`: a folder of
arrays or images, or an entry point) and delivers one `Sample` per batch holding every
float tensor the model computes (graph inputs and every intermediate and output
tensor), or the ``tensors`` subset. After the last batch it raises `SourceExhausted`,
unless ``repeat = true``, when it starts over. A batch that cannot be used (an
unreadable file, a shape the model does not take) is logged, counted and skipped; an
entry point whose own code raises ends its pass with `edgecal.errors.InputError`.

A batch read from a file carries the file's consumed keys (`edgecal.identity.file_identity`,
then the older `legacy_identity` states written before it may hold), so a restart does not
fold it twice; the files stay, so these keys must stay in the state (``KEEP_CONSUMED``).
`edgecal calibrate --model` folds files through `ModelSource.file_state` under the same key,
so a state made by either is resumed by the other. Repeated passes and entry points carry no key.

Subclasses load the model in `ModelSource._load` (returning its inputs and the names of
its float activations, in graph order) and compute one batch in `ModelSource._run`; a
runtime that can hand over each tensor as soon as it exists (and free it) overrides
`ModelSource._observe_batch`, which `file_state` uses.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..calibrator import Calibrator
from ..config import Field
from ..errors import InputError
from .base import Sample, Source, SourceExhausted
from .fields import (Counters, checked_config, entry_point, exactly_one, names, non_empty, numbers, one_of,
                     positive)
from .model_inputs import (Feed, ImageOptions, ModelInput, entry_point_items, file_feed, input_files, item_feed,
                     load_entry_point)

log = logging.getLogger("edgecal")

MODEL_FIELDS = {
    "model": Field(str, check=non_empty),
    "inputs": Field(str, None, non_empty),
    "entry_point": Field(str, None, entry_point),
    "tensors": Field(list, [], names),
    "repeat": Field(bool, False),
    "image_layout": Field(str, "auto", one_of("auto", "nchw", "nhwc")),
    "image_scale": Field(float, 1.0 / 255.0, positive),
    "image_mean": Field(list, [0.0], numbers),
    "image_std": Field(list, [1.0], lambda v: numbers(v) or (None if all(s > 0 for s in v) else "must be > 0")),
}


def model_file_hash(path: str) -> str:
    """``sha256:`` and the first 16 hex digits of the file's SHA-256 (as `edgecal.model.load_graph`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read model {path}: {err.strerror or err}") from err
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


class ModelSource(Source):
    """A float model run on a set of inputs; see the module docstring. Not registered itself.

    Parameters (keys of a ``[[source]]`` table of a model kind)
    ----------
    model : str
        The model file (``.onnx`` for onnxruntime and runner, ``.tflite`` for litert).
    inputs, entry_point : str
        Exactly one: a folder of arrays / images, or ``"package.module:function"``.
    tensors : list of str
        Tensors to deliver (default: every float tensor).
    repeat : bool
        Start over after the last batch instead of ending (default false).
    image_layout, image_scale, image_mean, image_std
        How images become tensors: ``"auto"`` / ``"nchw"`` / ``"nhwc"``, then
        ``(pixel * image_scale - image_mean[c]) / image_std[c]`` (defaults 1/255, [0], [1]).
    """

    FIELDS = MODEL_FIELDS
    LIVE = False
    KEEP_CONSUMED = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**checked_config(self.KIND, self.FIELDS, config))
        self._from = exactly_one(self.KIND, self.config, "inputs", "entry_point")
        c = self.config
        self.images = ImageOptions(c["image_layout"], c["image_scale"], tuple(c["image_mean"]), tuple(c["image_std"]))
        self.specs: list[ModelInput] | None = None
        self._loaded: list[ModelInput] | None = None
        self.selected: list[str] = []
        self._hash: str | None = None
        self._batches: Iterator[Callable[[], Feed]] | None = None
        self._good = 0  # usable batches in the current pass
        self._ended = False
        self._files: list[Path] = []
        self._entry: Callable[[], Iterable[Any]] | None = None
        self._counters = Counters("samples", "batches_rejected", "passes", "bytes")

    # -- for subclasses -----------------------------------------------------------------------------
    def _load(self) -> tuple[list[ModelInput], list[str]]:
        """Load the model: its inputs, and its float activations in graph order."""
        raise NotImplementedError

    def _prepare(self, selected: list[str]) -> list[str]:
        """Set the runtime up for the selected tensors (e.g. add graph outputs); returns the final selection."""
        return selected

    def _run(self, feeds: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
        """The selected activations for one batch."""
        raise NotImplementedError

    def _observe_batch(self, feeds: dict[str, np.ndarray], where: str, observe: Callable[[str, np.ndarray], None]) -> None:
        """Hand each selected activation of one batch to ``observe``, in selection order."""
        for name, array in self._run(feeds, where).items():
            observe(name, array)

    # -- Source --------------------------------------------------------------------------------------
    def open(self) -> None:
        if self.specs is not None:
            return  # already loaded: a reopen goes on where it was
        specs = self.load()
        self._check_inputs()
        self.specs = specs

    def load(self) -> list[ModelInput]:
        """Load the model and its runtime once, without reading ``inputs``; returns the model's inputs."""
        if self._loaded is None:
            self._hash = model_file_hash(self.config["model"])
            specs, available = self._load()
            self.selected = self._prepare(self._select(available))
            self._loaded = specs
        return self._loaded

    def file_state(self, path: Path, key: str | None, bins: int) -> Calibrator:
        """The selected activations of one input file in a fresh calibrator, for ``edgecal calibrate --model``.

        The caller chooses the files and records ``key`` (the file's identity, as `read`
        gives the daemon); the part holds it too, as every per-file state does. Loads the
        model on first use; `InputError` when the file does not fit the model or the
        runtime refuses it.
        """
        feed = file_feed(path, self.load(), self.images)
        part = Calibrator(bins, model_hash=self.model_hash())
        self._observe_batch(feed.arrays, feed.where, part.observe)
        if key is not None:
            part.consumed.add(key)
        return part

    def read(self, timeout: float) -> Sample | None:
        if self.specs is None:
            raise InputError(f"source {self.KIND}: read() before open()")
        deadline = time.monotonic() + timeout
        while True:
            make = self._next_batch()
            try:
                feed = make()
                arrays = self._run(feed.arrays, feed.where)
            except InputError as err:  # one bad batch: logged, counted, skipped
                self._counters.add("batches_rejected")
                log.error("source %s: batch skipped: %s", self.KIND, err)
                if time.monotonic() >= deadline:
                    return None
                continue
            self._good += 1
            sample = Sample(arrays, token=feed.key if not self.config["repeat"] else None)
            self._counters.add("samples")
            self._counters.add("bytes", sample.nbytes)
            return sample

    def consumed_key(self, token: Any) -> tuple[str, ...] | None:  # type: ignore[override]
        """The file's identity, then its older form (recognised, never recorded); None for no file."""
        return token if isinstance(token, tuple) else None

    def model_hash(self) -> str | None:
        return self._hash

    def stats(self) -> dict[str, Any]:
        return self._counters.snapshot()

    # -- internals -----------------------------------------------------------------------------------
    def _select(self, available: list[str]) -> list[str]:
        wanted = self.config["tensors"]
        if not available:
            raise InputError(f"{self.config['model']}: the model computes no float tensor; expected a float model")
        if not wanted:
            return list(available)
        unknown = [n for n in wanted if n not in available]
        if unknown:
            shown = ", ".join(available[:40]) + (", ..." if len(available) > 40 else "")
            raise InputError(f"source {self.KIND} tensors: the model has no float tensor {unknown[0]!r}; "
                             f"it has: {shown}")
        return [n for n in available if n in wanted]

    def _check_inputs(self) -> None:
        """Fail at open, not at the first read: the folder exists and holds inputs, the entry point imports."""
        if self._from == "inputs":
            self._files = input_files(self.config["inputs"])
        else:
            self._entry = load_entry_point(self.config["entry_point"])

    def _pass(self) -> Iterator[Callable[[], Feed]]:
        """The batches of one pass, each made when called, so a bad one does not end the pass."""
        specs = self.specs
        assert specs is not None
        if self._from == "inputs":
            for path in self._files:
                yield functools.partial(file_feed, path, specs, self.images)
            return
        assert self._entry is not None
        for item, where in entry_point_items(self.config["entry_point"], self._entry):
            yield functools.partial(item_feed, item, where, specs)

    def _next_batch(self) -> Callable[[], Feed]:
        while True:
            if self._batches is None:
                if self._ended:
                    raise SourceExhausted(f"source {self.KIND}: every input was run")
                self._batches, self._good = self._pass(), 0
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None
                self._counters.add("passes")
                self._ended = not self.config["repeat"]
                if not self._ended and not self._good:
                    raise InputError(f"source {self.KIND}: a whole pass over the inputs gave no usable batch; "
                                     "expected at least one (see the errors above)") from None
            except InputError:  # the entry point's own code raised: its iterator is finished
                self._batches = None
                self._ended = not self.config["repeat"]
                raise
