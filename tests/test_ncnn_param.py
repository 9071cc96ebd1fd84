"""ncnn tables named after ncnn's layers: ``-O param=MODEL.param`` against a hand-written .param.

The expected lines are worked out by hand from the .param below: ncnn2int8 looks an
activation scale up by the name of the Convolution / ConvolutionDepthWise /
InnerProduct layer that reads the blob, and the value is 127/amax (amax 1.0 -> 127,
2.54 -> 50, 0.5 -> 254).
"""

from __future__ import annotations

import logging

import pytest

from edgecal.cli import main
from edgecal.errors import InputError
from edgecal.formats.ncnn import parse_param, write_ncnn
from edgecal.table import CalibrationTable, TensorCalibration

# input -> conv1 -> relu -> split (two consumers: conv2, dw) ; conv2 + dw -> add -> pool -> fc
PARAM = """7767517
9 11
Input            data    0 1 input
Convolution      conv1   1 1 input c1 0=8 1=3 5=1 6=216
ReLU             relu1   1 1 c1 r1
Split            splitncnn_0 1 2 r1 r1_splitncnn_0 r1_splitncnn_1
Convolution      conv2   1 1 r1_splitncnn_0 c2 0=8 1=1 5=1 6=64
ConvolutionDepthWise dw  1 1 r1_splitncnn_1 d1 0=8 1=3 5=1 6=72 7=8
BinaryOp         add     2 1 c2 d1 s 0=0
Pooling          pool    1 1 s p 0=1 4=1
InnerProduct     fc      1 1 p logits 0=10 1=1 2=80
"""


def _table() -> CalibrationTable:
    return CalibrationTable([TensorCalibration.symmetric("input", 1.0), TensorCalibration.symmetric("r1", 2.54),
                             TensorCalibration.symmetric("orphan", 0.5)])


@pytest.fixture
def param(tmp_path):
    path = tmp_path / "model.param"
    path.write_text(PARAM)
    return path


def test_lines_are_named_after_the_quantized_layers_that_read_each_tensor(param, caplog):
    with caplog.at_level(logging.WARNING, logger="edgecal"):
        text = write_ncnn(_table(), param=str(param)).decode()
    assert text == "conv1 127\nconv2 50\ndw 50\n"  # r1 reaches conv2 and dw through the Split
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "'orphan'" in warning and "'fc'" in warning  # a tensor nobody reads; a layer without a tensor


def test_without_param_the_lines_keep_the_tensor_names():
    assert write_ncnn(_table()).decode() == "input 127\nr1 50\norphan 254\n"


def test_cli_export_writes_the_layer_names(param, tmp_path, capsys):
    src, out = tmp_path / "t.json", tmp_path / "t.table"
    _table().save(src)
    assert main(["export", str(src), "-o", str(out), "-O", f"param={param}"]) == 0
    assert out.read_text() == "conv1 127\nconv2 50\ndw 50\n"


BAD = [
    ("7767518\n0 0\n", 1, "ncnn magic"),
    ("7767517\n1\nInput data 0 1 x\n", 2, "<layer count> <blob count>"),
    ("7767517\n2 3\nInput data 0 1 x\nConvolution conv1 1 1 x\n", 4, "declares 1 input and 1 output blobs"),
    ("7767517\n2 3\nInput data 0 1 x\nConvolution conv1 one 1 x y\n", 4, "expected '<type> <name>"),
    ("7767517\n2 3\nInput data 0 1 x\n\nConvolution conv1 1 1 x y 0=8 bias\n", 5, "parameter 'bias' is not key=value"),
    ("7767517\n3 2\nInput data 0 1 x\nConvolution conv1 1 1 x y 0=8\n", 2, "declares 3 layers, the file has 2"),
]


@pytest.mark.parametrize("text, line, why", BAD)
def test_a_malformed_param_is_one_error_naming_its_line(text, line, why):
    with pytest.raises(InputError, match=f"line {line}") as err:
        parse_param(text, "m.param")
    assert why in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, line, why", BAD[:3])
def test_cli_refuses_a_malformed_param_before_any_work(text, line, why, tmp_path, capsys):
    src, out, bad = tmp_path / "t.json", tmp_path / "t.table", tmp_path / "bad.param"
    _table().save(src)
    bad.write_text(text)
    assert main(["export", str(src), "-o", str(out), "-O", f"param={bad}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgecal: error: ") and err.count("\n") == 1 and f"line {line}" in err and why in err
    assert not out.exists()


def test_a_param_that_is_not_text_or_not_there_is_one_error(tmp_path, capsys):
    src, binary = tmp_path / "t.json", tmp_path / "b.param"
    _table().save(src)
    binary.write_bytes(b"7767517\n\xff\xfe\n")
    for path, why in ((binary, "not UTF-8 text at byte 8"), (tmp_path / "none.param", "none.param")):
        assert main(["export", str(src), "-o", str(tmp_path / "t.table"), "-O", f"param={path}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err
