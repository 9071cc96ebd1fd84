"""Model sources: ONNX Runtime, LiteRT and edgecal's runner agree with each other and with numpy;
inputs from folders of arrays and images and from entry points; errors name what is wrong."""

from __future__ import annotations

import importlib.util
import re
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import source_models
from edgecal.errors import InputError
from edgecal.identity import file_identity, legacy_identity
from edgecal.model.graph import MissingExtraError
from edgecal.sources import LiteRTSource, OnnxRuntimeSource, RunnerSource, SourceExhausted
from edgecal.sources.model_inputs import ImageOptions, ModelInput, image_tensor, input_files

DIGITS = str(resources.files("edgecal").joinpath("data/digits_cnn.onnx"))
DIGITS_TENSORS = ["image", "conv1", "relu1", "dwconv", "relu2", "residual", "pool1", "conv3", "relu3", "pool2", "flat",
                  "logits"]


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


onnx_only = pytest.mark.skipif(not have("onnx"), reason="needs the onnx package (extra: onnx)")
ort_only = pytest.mark.skipif(not (have("onnxruntime") and have("onnx")), reason="needs onnxruntime (extra: onnxruntime)")
litert_only = pytest.mark.skipif(not have("ai_edge_litert"), reason="needs ai-edge-litert (extra: litert)")
pil_only = pytest.mark.skipif(not have("PIL"), reason="needs Pillow (extra: images)")


def digits_batches(folder: Path, sizes=(3, 1, 4)) -> list[np.ndarray]:
    data = np.load(resources.files("edgecal").joinpath("data/digits_split.npz"))["calib_x"]
    folder.mkdir(exist_ok=True)
    batches, start = [], 0
    for k, n in enumerate(sizes):
        batches.append(data[start:start + n])
        np.save(folder / f"batch{k}.npy", batches[-1])
        start += n
    return batches


def run(src, count=None) -> list:
    src.open()
    out = []
    while count is None or len(out) < count:
        try:
            out.append(src.read(1.0))
        except SourceExhausted:
            break
    src.close()
    return out


@ort_only
@onnx_only
def test_onnxruntime_and_the_runner_give_the_same_tensors_of_the_digits_cnn(tmp_path):
    batches = digits_batches(tmp_path / "in")
    ort = run(OnnxRuntimeSource(model=DIGITS, inputs=str(tmp_path / "in")))
    own = run(RunnerSource(model=DIGITS, inputs=str(tmp_path / "in")))
    assert len(ort) == len(own) == 3
    for a, b, x in zip(ort, own, batches):
        assert list(a.arrays) == list(b.arrays) == DIGITS_TENSORS
        assert np.array_equal(a.arrays["image"], x) and np.array_equal(b.arrays["image"], x)
        for name in DIGITS_TENSORS:
            assert a.arrays[name].shape == b.arrays[name].shape and a.arrays[name].dtype == np.float32
            np.testing.assert_allclose(a.arrays[name], b.arrays[name], rtol=1e-4, atol=1e-5, err_msg=name)
        assert a.arrays["logits"].shape == (len(x), 10)


@ort_only
@litert_only
@pytest.mark.needs_host  # LiteRT's interpreter crashes (SIGSEGV) under qemu-user
def test_onnxruntime_litert_and_the_runner_match_numpy_on_the_same_model(tmp_path):
    x = np.random.default_rng(7).standard_normal((2, 4)).astype(np.float32) * 3
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "x.npy", x)
    onnx_path = source_models.onnx_model(tmp_path / "fc.onnx")
    tflite_path = source_models.tflite_model(tmp_path / "fc.tflite", batch=2)
    want = source_models.reference(x)
    assert (want["h"] < 0).any() and (want["h"] > 0).any()  # the relu matters
    for cls, path in ((OnnxRuntimeSource, onnx_path), (RunnerSource, onnx_path), (LiteRTSource, tflite_path)):
        (sample,) = run(cls(model=str(path), inputs=str(tmp_path / "in")))
        assert sorted(sample.arrays) == sorted(source_models.NAMES), cls.KIND  # no weights, no constants
        for name in source_models.NAMES:
            np.testing.assert_allclose(sample.arrays[name], want[name], rtol=1e-5, atol=1e-6, err_msg=f"{cls.KIND} {name}")


@litert_only
@pytest.mark.needs_host  # LiteRT's interpreter crashes (SIGSEGV) under qemu-user
def test_litert_resizes_to_the_batch_and_selects_a_subset(tmp_path):
    path = source_models.tflite_model(tmp_path / "fc.tflite", batch=1)
    x = np.linspace(-2, 2, 20, dtype=np.float32).reshape(5, 4)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "x.npy", x)
    (sample,) = run(LiteRTSource(model=str(path), inputs=str(tmp_path / "in"), tensors=["y", "h"]))
    assert sorted(sample.arrays) == ["h", "y"] and sample.arrays["y"].shape == (5, 3)
    np.testing.assert_allclose(sample.arrays["y"], source_models.reference(x)["y"], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match=r"litert tensors: the model has no float tensor 'W'; it has: x, h, r, y"):
        LiteRTSource(model=str(path), inputs=str(tmp_path / "in"), tensors=["W"]).open()


@ort_only
def test_onnxruntime_tensor_subset_and_unknown_names(tmp_path):
    digits_batches(tmp_path / "in", (2,))
    (sample,) = run(OnnxRuntimeSource(model=DIGITS, inputs=str(tmp_path / "in"), tensors=["logits", "relu1", "image"]))
    assert list(sample.arrays) == ["image", "relu1", "logits"] and (sample.arrays["relu1"] >= 0).all()
    with pytest.raises(InputError, match="has no float tensor 'conv9'; it has: image, conv1, relu1"):
        OnnxRuntimeSource(model=DIGITS, inputs=str(tmp_path / "in"), tensors=["conv9"]).open()


@onnx_only
def test_file_batches_carry_their_input_key_and_the_source_ends(tmp_path):
    digits_batches(tmp_path / "in", (1, 2))
    src = RunnerSource(model=DIGITS, inputs=str(tmp_path / "in"))
    samples = run(src)
    files = sorted((tmp_path / "in").iterdir())
    # the key recorded, then the older form states written before inodes were part of it hold
    assert [src.consumed_key(s.token) for s in samples] == [(file_identity(f), legacy_identity(f)) for f in files]
    assert src.stats()["samples"] == 2 and src.stats()["passes"] == 1
    assert src.model_hash() == "sha256:c42004cd98e6c683"  # the digits model's hash as edgecal.model reads it


@onnx_only
def test_repeat_starts_over_and_records_no_consumed_key(tmp_path):
    batches = digits_batches(tmp_path / "in", (1, 2))
    src = RunnerSource(model=DIGITS, inputs=str(tmp_path / "in"), repeat=True)
    samples = run(src, count=5)
    assert [len(s.arrays["image"]) for s in samples] == [1, 2, 1, 2, 1]
    assert np.array_equal(samples[4].arrays["image"], batches[0])
    assert all(src.consumed_key(s.token) is None for s in samples) and src.stats()["passes"] == 2


FEEDER = """
import numpy as np
CALLS = []
def batches():
    CALLS.append(1)
    for k in range(3):
        yield {"image": np.full((1, 1, 8, 8), k / 4, np.float32)}
def broken():
    yield {"image": np.zeros((1, 1, 8, 8), np.float32)}
    raise ValueError("the camera is gone")
def not_dicts():
    return [np.zeros((1, 1, 8, 8))]
def wrong_name():
    return [{"pixels": np.zeros((1, 1, 8, 8)), "other": np.zeros(1)}]
def wrong_shape():
    return [{"image": np.zeros((1, 1, 8, 9))}]
"""


@onnx_only
@pytest.mark.parametrize("form", ["file", "module"])
def test_an_entry_point_feeds_batches_on_every_pass(tmp_path, monkeypatch, form):
    (tmp_path / "feeder_mod.py").write_text(FEEDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = f"{tmp_path / 'feeder_mod.py'}:batches" if form == "file" else "feeder_mod:batches"
    src = RunnerSource(model=DIGITS, entry_point=spec, repeat=True)
    samples = run(src, count=4)
    assert [float(s.arrays["image"].max()) for s in samples] == [0.0, 0.25, 0.5, 0.0]
    assert all(s.token is None for s in samples)


@onnx_only
@pytest.mark.parametrize("function, message", [
    ("not_dicts", "batch 0: a ndarray; expected a dict of model input name -> array"),
    ("wrong_name", r"batch 0: holds arrays \['other', 'pixels'\]; expected one named after each model input \(image\)"),
    ("wrong_shape", r"batch 0: input 'image' has shape \(1, 1, 8, 9\); expected Nx1x8x8"),
])
def test_an_unusable_entry_point_batch_is_logged_and_skipped(tmp_path, caplog, function, message):
    (tmp_path / "feeder_mod.py").write_text(FEEDER)
    src = RunnerSource(model=DIGITS, entry_point=f"{tmp_path / 'feeder_mod.py'}:{function}")
    assert run(src) == []
    assert re.search(f"source runner: batch skipped: entry point .*:{function}, {message}", caplog.text)
    assert src.stats()["batches_rejected"] == 1


@onnx_only
def test_an_entry_point_that_raises_ends_its_pass_and_a_missing_function_is_named(tmp_path):
    (tmp_path / "feeder_mod.py").write_text(FEEDER)
    src = RunnerSource(model=DIGITS, entry_point=f"{tmp_path / 'feeder_mod.py'}:broken")
    src.open()
    assert src.read(1.0) is not None
    with pytest.raises(InputError, match="entry point .*:broken: raised ValueError: the camera is gone after 1 batches"):
        src.read(1.0)
    with pytest.raises(SourceExhausted):
        src.read(1.0)
    with pytest.raises(InputError, match="feeder_mod.py has no function missing"):
        RunnerSource(model=DIGITS, entry_point=f"{tmp_path / 'feeder_mod.py'}:missing").open()


@onnx_only
def test_repeat_with_no_usable_batch_is_an_error_not_a_busy_loop(tmp_path, caplog):
    (tmp_path / "feeder_mod.py").write_text(FEEDER)
    src = RunnerSource(model=DIGITS, entry_point=f"{tmp_path / 'feeder_mod.py'}:wrong_shape", repeat=True)
    src.open()
    with pytest.raises(InputError, match="a whole pass over the inputs gave no usable batch"):
        src.read(1.0)


@onnx_only
def test_an_entry_point_that_cannot_be_imported(tmp_path):
    with pytest.raises(InputError, match=r"cannot import no_such_module_xyz \(ModuleNotFoundError"):
        RunnerSource(model=DIGITS, entry_point="no_such_module_xyz:f").open()
    (tmp_path / "bad.py").write_text("raise RuntimeError('import-time failure')\n")
    with pytest.raises(InputError, match="RuntimeError: import-time failure"):
        RunnerSource(model=DIGITS, entry_point=f"{tmp_path / 'bad.py'}:f").open()


@onnx_only
def test_bad_input_files_are_skipped_with_their_name_and_folders_checked_at_open(tmp_path, caplog):
    batches = digits_batches(tmp_path / "in", (1, 1))
    np.save(tmp_path / "in" / "a.npy", np.zeros((2, 1, 8, 7), np.float32))
    (tmp_path / "in" / "b.npy").write_bytes(b"garbage")
    src = RunnerSource(model=DIGITS, inputs=str(tmp_path / "in"))
    samples = run(src)
    assert [s.arrays["image"].tolist() for s in samples] == [b.tolist() for b in batches]
    assert re.search(r"batch skipped: .*a.npy: input 'image' has shape \(2, 1, 8, 7\); expected Nx1x8x8", caplog.text)
    assert re.search(r"batch skipped: .*b.npy: not a NumPy array file", caplog.text)
    assert src.stats()["batches_rejected"] == 2 and src.stats()["samples"] == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no .npy, .npz or image files"):
        RunnerSource(model=DIGITS, inputs=str(tmp_path / "empty")).open()
    with pytest.raises(InputError, match="no such folder"):
        RunnerSource(model=DIGITS, inputs=str(tmp_path / "nope")).open()
    with pytest.raises(InputError, match="cannot read model"):
        RunnerSource(model=str(tmp_path / "nope.onnx"), inputs=str(tmp_path / "in")).open()
    assert RunnerSource.KEEP_CONSUMED and not RunnerSource.LIVE


@pil_only
@onnx_only
def test_a_folder_of_png_images_feeds_the_model(tmp_path):
    from PIL import Image

    pixels = (np.load(resources.files("edgecal").joinpath("data/digits_split.npz"))["calib_x"][:3, 0] * 255).round()
    (tmp_path / "img").mkdir()
    for k, p in enumerate(pixels.astype(np.uint8)):
        Image.fromarray(p, mode="L").save(tmp_path / "img" / f"digit{k}.png")
    samples = run(RunnerSource(model=DIGITS, inputs=str(tmp_path / "img")))
    assert len(samples) == 3
    for sample, p in zip(samples, pixels):
        assert sample.arrays["image"].shape == (1, 1, 8, 8)
        np.testing.assert_allclose(sample.arrays["image"][0, 0], p / 255, rtol=1e-6)


@pil_only
@pytest.mark.parametrize("layout, shape", [("nchw", (None, 3, 2, 3)), ("nhwc", (None, 2, 3, 3))])
def test_images_are_laid_out_scaled_and_normalised_per_channel(tmp_path, layout, shape):
    from PIL import Image

    rgb = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 10
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "x.png")
    opts = ImageOptions("auto", 0.5, (1.0, 2.0, 3.0), (1.0, 2.0, 4.0))
    x = image_tensor(tmp_path / "x.png", ModelInput("x", shape, np.dtype(np.float32)), opts)
    want = (rgb * 0.5 - np.array([1.0, 2.0, 3.0])) / np.array([1.0, 2.0, 4.0])
    want = want.transpose(2, 0, 1) if layout == "nchw" else want
    assert x.shape == (1, *want.shape) and np.allclose(x[0], want)


@pil_only
def test_images_are_resized_to_the_input_and_bad_ones_named(tmp_path):
    from PIL import Image

    big = np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))
    Image.fromarray(big, mode="L").save(tmp_path / "big.png")
    x = image_tensor(tmp_path / "big.png", ModelInput("x", (None, 1, 8, 8), np.dtype(np.float32)), ImageOptions())
    resized = np.asarray(Image.fromarray(big, mode="L").resize((8, 8), Image.BILINEAR), np.float32)
    assert x.shape == (1, 1, 8, 8) and np.allclose(x[0, 0], resized / 255)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="bad.png: not a readable image"):
        image_tensor(tmp_path / "bad.png", ModelInput("x", (None, 1, 8, 8), np.dtype(np.float32)), ImageOptions())
    with pytest.raises(InputError, match="cannot tell whether input 'x'"):
        image_tensor(tmp_path / "big.png", ModelInput("x", (None, 5, 8, 8), np.dtype(np.float32)), ImageOptions())
    with pytest.raises(InputError, match="image_mean has 2 values; expected 1 or 1"):
        image_tensor(tmp_path / "big.png", ModelInput("x", (None, 1, 8, 8), np.dtype(np.float32)),
                     ImageOptions(mean=(0.0, 1.0)))


def test_missing_optional_packages_name_their_extra(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[images\]'"):
        input_files(tmp_path / "img")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[onnxruntime\]'"):
        OnnxRuntimeSource(model=DIGITS, inputs=str(tmp_path)).open()
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[litert\]'"):
        LiteRTSource(model=DIGITS, inputs=str(tmp_path)).open()


@litert_only
@pytest.mark.needs_host  # LiteRT's interpreter crashes (SIGSEGV) under qemu-user
def test_a_file_that_is_not_a_model_is_named(tmp_path):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "x.npy", np.zeros((1, 4), np.float32))
    (tmp_path / "junk.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="junk.tflite: LiteRT cannot load the model"):
        LiteRTSource(model=str(tmp_path / "junk.tflite"), inputs=str(tmp_path / "in")).open()
    if have("onnxruntime") and have("onnx"):
        with pytest.raises(InputError, match="junk.tflite: not a readable ONNX model"):
            OnnxRuntimeSource(model=str(tmp_path / "junk.tflite"), inputs=str(tmp_path / "in")).open()
