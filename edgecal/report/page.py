"""The report's HTML page: self-contained, every image a PNG beside it referenced by a relative name.

The page loads nothing from the network (a Content-Security-Policy forbids it); its
one inline script marks ``<body data-images="N/M" data-remote="K">`` once the page
has loaded: N of its M images decoded, K resources fetched from anywhere but local
files, so a headless browser can tell that every picture shows and nothing was fetched.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

from .._version import __version__
from .accuracy import Accuracy
from .views import MethodMark, TensorView

CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
STYLE = """body{font:14px/1.4 sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
section{margin:2em 0;border-top:2px solid #888}img{max-width:100%;height:auto}.flag{color:#a40}"""
HISTOGRAM = ("Ranges: each method's [lo, hi]; clipped: the share of finite values that may lie more than half a step "
             "outside it; expected SQNR: the int8 round trip on the histogram's piecewise-uniform density.")
TABLE = "Ranges: each entry's [lo, hi] against the min and max it records; a table keeps no histogram."
SCRIPT = """window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var remote = performance.getEntriesByType("resource").filter(function (r) {
    return !/^(file|data):/.test(r.name);
  }).length;
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
  document.body.setAttribute("data-remote", String(remote));
});"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}{unit}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3g}%"


def _acc(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _flags(flags: Sequence[str]) -> str:
    return " ".join(f'<span class="flag">{_e(f)}</span>' for f in flags) or "-"


def _row(cells: Sequence[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _mark_row(m: MethodMark, checked: Mapping[str, Accuracy], name: str) -> str:
    e = m.entry
    lo, hi = e.range
    cells = [_e(m.method), _num(lo), _num(hi), _num(e.scale), str(e.zero_point), _pct(m.clipped),
             _num(m.sqnr_db, " dB")]
    if checked:
        cells.append(_num(checked[m.method].tensor_sqnr.get(name), " dB") if m.method in checked else "-")
    return _row([*cells, _flags(e.flags)])


def _stats(view: TensorView) -> str:
    s = view.stats
    none = "" if view.marks else " No finite value: no method gives this tensor a range."
    return (f"<p>{s.count} values in {s.samples} arrays; {s.zeros} exact zeros, {s.nans} NaN, {s.posinf} +Inf, "
            f"{s.neginf} -Inf; min {_num(s.min)}, max {_num(s.max)}.{none}</p>")


def _section(index: int, view: TensorView, image: str, checked: Mapping[str, Accuracy]) -> str:
    head = ["method", "lo", "hi", "scale", "zero point", "clipped (at most)", "expected SQNR",
            *(["model SQNR"] if checked else []), "flags"]
    rows = [_mark_row(m, checked, view.name) for m in view.marks]
    return (f'<section id="tensor-{index}" data-tensor="{_e(view.name)}">\n<h2>{_e(view.name)}</h2>\n{_stats(view)}\n'
            f'<img src="{_e(image)}" alt="{_e(view.name)}">\n'
            f"<table>{_row([_e(h) for h in head], 'th')}{''.join(rows)}</table>\n</section>")


def _accuracy(checked: Mapping[str, Accuracy]) -> str:
    if not checked:
        return ""
    first = next(iter(checked.values()))
    head = ["method", "top-1 agreement float vs int8", "float top-1", "int8 top-1", "worst tensor SQNR"]
    rows = []
    for a in {id(a): a for a in checked.values()}.values():  # a table checked once serves all its methods
        label = ", ".join(m for m, b in checked.items() if b is a)
        worst = min(a.tensor_sqnr.items(), key=lambda kv: kv[1], default=None)
        rows.append(_row([_e(label), _acc(a.agreement), _acc(a.float_accuracy), _acc(a.int8_accuracy),
                          "-" if worst is None else f"{_num(worst[1], ' dB')} ({_e(worst[0])})"]))
    return (f"<h2>Accuracy check</h2>\n<p>{_e(first.model)} on {first.samples} samples of {_e(first.data)}, "
            f"runtime {_e(first.runtime)}; per-tensor SQNR of the int8 model against float in each tensor's "
            f"section.</p>\n<table>{_row([_e(h) for h in head], 'th')}{''.join(rows)}</table>")


def _summary(views: Sequence[TensorView]) -> str:
    methods = list(dict.fromkeys(m.method for v in views for m in v.marks))
    head = ["tensor", *[f"{m} hi" for m in methods], "flags"]
    rows = []
    for i, v in enumerate(views):
        his = {m.method: _num(m.entry.range[1]) for m in v.marks}
        flags = sorted({f for m in v.marks for f in m.entry.flags})
        rows.append(_row([f'<a href="#tensor-{i}">{_e(v.name)}</a>', *[his.get(m, "-") for m in methods],
                          _flags(flags)]))
    return f"<table>{_row([_e(h) for h in head], 'th')}{''.join(rows)}</table>"


def render(title: str, source: str, views: Sequence[TensorView], images: Sequence[str],
           checked: Mapping[str, Accuracy] | None = None) -> str:
    """The whole page: a summary table, the accuracy check when given, then one section per tensor."""
    checked = checked or {}
    sections = "\n".join(_section(i, v, img, checked) for i, (v, img) in enumerate(zip(views, images)))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="generator" content="edgecal {_e(__version__)} report">
<title>{_e(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>
<body>
<h1>{_e(title)}</h1>
<p>{_e(source)}. {HISTOGRAM if any(v.density is not None for v in views) else TABLE}</p>
{_summary(views)}
{_accuracy(checked)}
{sections}
</body></html>
"""
