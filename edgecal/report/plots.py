"""One PNG per tensor, drawn with matplotlib's Agg backend (no display needed).

From a state: the histogram on a log scale with every method's range marked, and
the KL divergence of every candidate threshold of the ``kl`` method below it. From a
table alone: the range each entry represents against the observed min and max.
Every image is `WIDTH` x `HEIGHT` pixels.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..model.graph import MissingExtraError
from .views import TensorView

WIDTH, HEIGHT, DPI = 800, 600, 100
INSTALL = "pip install -e '.[report]'"


def import_pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or `MissingExtraError` naming the extra to install."""
    try:
        import matplotlib
    except ImportError as err:
        raise MissingExtraError(f"edgecal report draws with matplotlib; install it with: {INSTALL}") from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list[Any]:
    plt = import_pyplot()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


_DASHES = ("--", (0, (1, 1)), "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))  # methods that agree stay visible


def _mark_ranges(ax: Any, view: TensorView) -> None:
    """A vertical line at each method's range ends (one legend entry per method)."""
    for i, (mark, color) in enumerate(zip(view.marks, _colors(len(view.marks)))):
        lo, hi = mark.entry.range
        style = {"color": color, "linestyle": _DASHES[i % len(_DASHES)], "linewidth": 1.4}
        ax.axvline(hi, label=f"{mark.method} [{lo:.4g}, {hi:.4g}]", **style)
        if lo < 0 and (view.stats.min or 0.0) < 0:
            ax.axvline(lo, **style)


def _histogram_axes(ax: Any, view: TensorView) -> None:
    d = view.density
    assert d is not None
    ax.stairs(d.counts, d.edges, fill=True, color="0.6", baseline=0.5)
    ax.set_yscale("log")
    ax.set_ylim(0.5, max(float(d.counts.max(initial=1.0)), float(d.zeros), 1.0) * 2.0)
    if d.zeros:
        ax.plot([0.0], [d.zeros], marker="v", color="black", linestyle="none", label=f"{d.zeros} exact zeros")
    _mark_ranges(ax, view)
    ax.set_xlabel("value")
    ax.set_ylabel("count per bin (log)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right")


def _kl_axes(ax: Any, view: TensorView) -> None:
    if view.kl_curve is None:
        ax.text(0.5, 0.5, "no KL curve: no non-zero finite value", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    t, kl = view.kl_curve
    ok = np.isfinite(kl)
    ax.plot(t[ok], kl[ok], color="tab:blue", linewidth=1.0)
    if ok.any():
        best = int(np.flatnonzero(kl == kl[ok].min())[-1])  # ties go to the larger threshold, as kl does
        ax.axvline(t[best], color="tab:red", linestyle=":", label=f"least KL at {t[best]:.4g}")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_yscale("log" if (kl[ok] > 0).all() else "linear")
    ax.set_xlabel("candidate threshold |x| (kl method, default parameters)")
    ax.set_ylabel("KL(P || Q)")


def _table_axes(ax: Any, view: TensorView) -> None:
    """The observed range and each entry's range as horizontal bars."""
    rows = [("observed", view.stats.min, view.stats.max, "0.4")]
    rows += [(m.method, *m.entry.range, c) for m, c in zip(view.marks, _colors(len(view.marks)))]
    for y, (label, lo, hi, color) in enumerate(rows):
        if lo is not None and hi is not None:
            ax.barh(y, hi - lo, left=lo, height=0.4, color=color)
            ax.text(hi, y, f" [{lo:.4g}, {hi:.4g}]", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.use_sticky_edges = False  # bars would otherwise pin the axis to their left end
    ax.margins(x=0.2, y=0.3)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("value (no histogram in a table: its range and the min / max it records)")


def tensor_png(view: TensorView, path: str | os.PathLike[str]) -> None:
    """Draw ``view`` into a `WIDTH` x `HEIGHT` PNG at ``path``."""
    plt = import_pyplot()
    if view.density is not None:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI,
                                          gridspec_kw={"height_ratios": [3, 2]})
        _histogram_axes(top, view)
        _kl_axes(bottom, view)
    else:
        fig, top = plt.subplots(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
        _table_axes(top, view)
    fig.suptitle(view.name, parse_math=False)
    # fixed margins: tight_layout would measure every label again, half the time of a picture
    fig.subplots_adjust(left=0.13 if view.density is None else 0.1, right=0.97, top=0.92, bottom=0.09, hspace=0.38)
    try:
        fig.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(fig)
