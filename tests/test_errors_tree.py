"""Every exception class lives in `edgecal.errors`, and its docstring draws the real tree."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import edgecal
from edgecal import errors

PACKAGE = Path(edgecal.__file__).parent
TREE_LINE = re.compile(r"^(?P<lead>[ │├└─]*)(?P<name>\w+)(?: \((?P<extra>[\w, ]+)\))?(?: {2,}.*)?$")
EXCEPTION_NAMES = {n for n, o in vars(builtins).items() if inspect.isclass(o) and issubclass(o, BaseException)}
#: old home of each class -> the classes it must still export
OLD_HOMES = {
    "edgecal.model.initializers": ["MalformedModelError", "UnsafeModelError"],
    "edgecal.model.graph": ["MissingExtraError"], "edgecal.model": ["MissingExtraError", "MalformedModelError"],
    "edgecal.config": ["ConfigError"], "edgecal.reference.requant": ["Int32OverflowError"],
    "edgecal.link.errors": ["LinkError", "PortError", "HandshakeTimeout", "ProtocolVersionError", "DeviceGone",
                            "TablePushError", "FrameError"],
    "edgecal.atomic": ["WriteError"], "edgecal.sources.base": ["SourceError", "SourceExhausted"],
    "edgecal.sources": ["SourceError", "SourceExhausted"],
    "edgecal.link.transport": ["Disconnected"], "edgecal.link.control": ["StopRequested"],
    "edgecal.link": ["StopRequested"], "edgecal.sources.connection": ["ClientError"],
}
CONTROL_FLOW = ["Disconnected", "StopRequested", "ClientError"]


def parse_tree(doc: str) -> dict[str, list[str]]:
    """Class name -> base names drawn in ``doc``'s tree: the parent first, then the bracketed builtins."""
    lines = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    bases: dict[str, list[str]] = {}
    stack: list[str] = []
    for line in lines:
        m = TREE_LINE.match(line)
        assert m, f"tree line {line!r} does not parse"
        depth = (len(m["lead"]) - 4) // 4
        del stack[depth:]
        extra = [b.strip() for b in m["extra"].split(",")] if m["extra"] else []
        bases[m["name"]] = stack[-1:] + extra
        stack.append(m["name"])
    return bases


def exception_classes_in(source: str) -> list[str]:
    """Names of the classes defined anywhere in ``source`` with a base that looks like an exception."""
    known = EXCEPTION_NAMES | set(errors.__all__) | {"_ControlFlow"}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            names = [b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases]
            if any(n in known or n.endswith(("Error", "Exception", "Warning")) for n in names):
                found.append(node.name)
    return found


def test_tree_parser_and_class_finder_notice_what_they_should() -> None:
    doc = "x::\n\n    Exception\n    ├── A (ValueError)  public\n    │   └── B\n    └── C\n\nend"
    assert parse_tree(doc) == {"Exception": [], "A": ["Exception", "ValueError"], "B": ["A"], "C": ["Exception"]}
    src = "class Ok:\n    pass\ndef f():\n    class Hidden(errors.InputError):\n        pass\nclass D(KeyError): ..."
    assert sorted(exception_classes_in(src)) == ["D", "Hidden"]


def test_no_exception_class_is_defined_outside_errors_py() -> None:
    stray = [f"{path.relative_to(PACKAGE)}: {name}" for path in sorted(PACKAGE.rglob("*.py"))
             if path.name != "errors.py" or path.parent != PACKAGE
             for name in exception_classes_in(path.read_text(encoding="utf-8"))]
    assert stray == []


def test_every_module_level_exception_class_comes_from_errors_py() -> None:
    stray, missing = [], []
    for info in pkgutil.walk_packages(edgecal.__path__, "edgecal."):
        try:
            module = importlib.import_module(info.name)
        except ImportError as err:  # an optional extra; the source scan above still covers the file
            missing.append(f"{info.name} (needs {err.name})")
            continue
        stray += [f"{info.name}.{name}" for name, obj in vars(module).items()
                  if inspect.isclass(obj) and issubclass(obj, BaseException)
                  and obj.__module__.startswith("edgecal") and obj.__module__ != "edgecal.errors"]
    assert stray == []
    if missing:
        pytest.skip(f"not imported for lack of optional packages: {', '.join(missing)}")


def test_docstring_tree_matches_the_real_bases() -> None:
    drawn = parse_tree(errors.__doc__ or "")
    own = {name for name, obj in vars(errors).items() if inspect.isclass(obj) and issubclass(obj, BaseException)}
    assert own == set(drawn) - EXCEPTION_NAMES
    for name, bases in drawn.items():
        cls = getattr(errors, name, None) or getattr(builtins, name)
        assert [b.__name__ for b in cls.__bases__] == (bases or ["BaseException"]), name


def test_the_tree_lists_every_exported_class() -> None:
    drawn = parse_tree(errors.__doc__ or "")
    assert set(errors.__all__) == {n for n in drawn if n not in EXCEPTION_NAMES and not n.startswith("_")}


@pytest.mark.parametrize("module", sorted(OLD_HOMES))
def test_old_import_locations_give_the_same_classes(module: str) -> None:
    mod = importlib.import_module(module)
    for name in OLD_HOMES[module]:
        assert getattr(mod, name) is getattr(errors, name), f"{module}.{name}"


@pytest.mark.parametrize("name", CONTROL_FLOW)
def test_control_flow_exceptions_escape_an_except_edgecal_error(name: str) -> None:
    cls = getattr(errors, name)
    with pytest.raises(cls):
        try:
            raise cls("x")
        except errors.EdgecalError:  # pragma: no cover - reaching it is the failure
            pytest.fail(f"{name} is an EdgecalError")
    assert issubclass(cls, errors._ControlFlow)
