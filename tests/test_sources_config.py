"""Source registry and configuration: every kind registered, every bad key named in one line."""

from __future__ import annotations

import pytest

from edgecal.config import REQUIRED, ConfigError, Field, many, parse_config
from edgecal.errors import UnknownNameError
from edgecal.sources import Source, source_class, source_kinds

KINDS = ["litert", "memory", "onnxruntime", "runner", "serial", "socket", "spool"]
MINIMAL = {"memory": {}, "spool": {"path": "/spool"}, "socket": {"path": "/run/edgecal.sock"}, "serial": {"url": "loop://"},
           "onnxruntime": {"model": "m.onnx", "inputs": "in"}, "litert": {"model": "m.tflite", "inputs": "in"},
           "runner": {"model": "m.onnx", "entry_point": "app.feed:batches"}}


def test_every_kind_is_registered_and_unknown_kinds_list_them():
    assert source_kinds() == KINDS
    assert all(issubclass(source_class(k), Source) and source_class(k).KIND == k for k in KINDS)
    with pytest.raises(UnknownNameError, match="unknown source kind 'kafka'; known source kinds: " + ", ".join(KINDS)):
        source_class("kafka")
    assert {k: source_class(k).LIVE for k in KINDS} == {"litert": False, "memory": False, "onnxruntime": False,
                                                         "runner": False, "serial": True, "socket": True, "spool": False}


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_pass_their_own_checks_and_construction_needs_no_io(kind):
    for key, field in source_class(kind).FIELDS.items():
        if field.default is not REQUIRED and field.default is not None:
            assert field.convert(field.default)[1] is None, key
    src = source_class(kind)(kind=kind, **MINIMAL[kind])  # the daemon may pass `kind` through
    assert "kind" not in src.config and set(src.config) == set(source_class(kind).FIELDS)


@pytest.mark.parametrize("kind, key, value, message", [
    ("spool", "poll_interval", 0, "source spool poll_interval: must be > 0, found 0.0"),
    ("spool", "max_pending", 0, "source spool max_pending: must be >= 1, found 0"),
    ("spool", "drain", "yes", "source spool drain: expected true or false, found 'yes'"),
    ("socket", "max_clients", 0, "source socket max_clients: must be 1..64, found 0"),
    ("socket", "max_payload", 64, "source socket max_payload: must be 128..16384, found 64"),
    ("serial", "window", "8", "source serial window: expected an integer, found '8'"),
    ("serial", "tensors", ["a", "a"], "source serial tensors: names a tensor twice"),
    ("serial", "tensors", [1], "source serial tensors: expected a list of tensor names"),
    ("onnxruntime", "threads", -1, "source onnxruntime threads: must be >= 0, found -1"),
    ("onnxruntime", "image_layout", "chw", "source onnxruntime image_layout: unknown 'chw'; known: auto, nchw, nhwc"),
    ("litert", "image_std", [1.0, 0.0], "source litert image_std: must be > 0"),
    ("litert", "image_mean", ["a"], "source litert image_mean: expected a list of numbers"),
    ("runner", "entry_point", "app.feed", "source runner entry_point: 'app.feed' is not an entry point"),
    ("runner", "bogus", 1, "source runner bogus: unknown key; known keys: entry_point, image_layout"),
    ("spool", "kind", "socket", "source spool kind: 'socket' does not name this source"),
])
def test_a_bad_value_is_one_line_naming_the_key(kind, key, value, message):
    config = {**MINIMAL[kind], key: value}
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        source_class(kind)(**config)


@pytest.mark.parametrize("kind", ["spool", "socket", "serial", "runner"])
def test_a_missing_required_key_is_named(kind):
    required = [k for k, f in source_class(kind).FIELDS.items() if f.default is REQUIRED]
    assert len(required) == 1
    with pytest.raises(ConfigError, match=f"^source {kind} {required[0]}: is required$"):
        source_class(kind)()


@pytest.mark.parametrize("given, found", [({}, "neither"), ({"inputs": "in", "entry_point": "a:b"}, "inputs, entry_point")])
def test_a_model_source_takes_exactly_one_kind_of_input(given, found):
    with pytest.raises(ConfigError, match=f"source runner: give exactly one of inputs or entry_point; found {found}"):
        source_class("runner")(model="m.onnx", **given)


def test_fields_check_a_daemon_config_with_line_numbers():
    schema = {"source": many({"kind": Field(str), **source_class("spool").FIELDS})}
    text = '[[source]]\nkind = "spool"\npath = "/spool"\n\n[[source]]\nkind = "spool"\npath = "/b"\npoll_interval = -1\n'
    with pytest.raises(ConfigError, match=r"^line 8: \[\[source\]\] #2 poll_interval: must be > 0, found -1.0$"):
        parse_config(text, schema)
