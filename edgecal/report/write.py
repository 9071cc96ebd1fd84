"""`write_report`: the report folder appears whole or not at all.

Everything is drawn into a temporary folder beside ``out``, which is then renamed to
``out``. ``out`` must be a new name, an empty folder, or the folder of an earlier
report (recognised by its page's generator line), which is replaced only once the
new one is complete.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..atomic import WriteError
from .accuracy import Accuracy
from .page import render
from .plots import import_pyplot, tensor_png
from .views import TensorView

PAGE = "index.html"
_GENERATOR = re.compile(rb'<meta name="generator" content="edgecal [^"]* report">')


def image_name(index: int, name: str) -> str:
    """A file name for tensor ``name``: its position (unique) and the name's safe characters.

    >>> image_name(3, "conv1/relu:0")
    '003-conv1_relu_0.png'
    """
    return f"{index:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:48].lstrip('.')}.png"


def _is_report(folder: Path) -> bool:
    try:
        with open(folder / PAGE, "rb") as fh:
            return bool(_GENERATOR.search(fh.read(4096)))
    except OSError:
        return False


def check_out(out: str | os.PathLike[str]) -> Path:
    """``out`` as a path the report may be written to; `WriteError` saying why not."""
    path = Path(out)
    if not path.parent.resolve().is_dir():
        raise WriteError(f"cannot write report {out}: folder {path.parent} does not exist")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise WriteError(f"cannot write report {out}: it exists and is not a folder; expected a new name or a folder")
    if path.is_dir() and any(path.iterdir()) and not _is_report(path):
        raise WriteError(f"cannot write report {out}: the folder holds files that are not an edgecal report; "
                         "expected a new name, an empty folder or an earlier report")
    return path


def _fill(folder: Path, title: str, source: str, views: Sequence[TensorView],
          checked: Mapping[str, Accuracy] | None) -> None:
    images = [image_name(i, v.name) for i, v in enumerate(views)]
    for view, image in zip(views, images):
        tensor_png(view, folder / image)
    (folder / PAGE).write_text(render(title, source, views, images, checked), encoding="utf-8")


def write_report(out: str | os.PathLike[str], title: str, source: str, views: Sequence[TensorView],
                 checked: Mapping[str, Accuracy] | None = None) -> Path:
    """Write ``out/index.html`` and one PNG per tensor; returns the page's path."""
    import_pyplot()  # a missing extra stops here, before any file is made
    path = check_out(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.edgecal-", dir=path.parent))
    except OSError as err:
        raise WriteError(f"cannot write report {out}: {err.strerror or err}") from err
    try:
        _fill(tmp, title, source, views, checked)
        os.chmod(tmp, 0o755)
        _swap(tmp, path)
    except OSError as err:
        raise WriteError(f"cannot write report {out}: {err.strerror or err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path / PAGE


def _swap(new: Path, path: Path) -> None:
    """Put the folder ``new`` at ``path``, an earlier report (or empty folder) there removed after."""
    if not path.exists():
        os.rename(new, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.edgecal-old-", dir=path.parent))
    os.rename(path, old / "report")
    try:
        os.rename(new, path)
    except OSError:
        os.rename(old / "report", path)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
