"""Every matplotlib figure the project draws: the dashboard's images in TensorBoard and the report's PNGs.

matplotlib runs with the Agg backend: headless, for TensorBoard and plain PNG files, never a window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "pyplot",
    "denormalize",
    "confusion_figure",
    "misclassified_figure",
    "save_png",
    "run_styles",
    "curves_figure",
    "per_class_figure",
]


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend (imported on first use: it costs a second at start-up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Normalization(Protocol):
    """What :func:`denormalize` needs of the data's ``Normalize`` module: its inverse, and its ``mean`` buffer."""

    def inverse(self, images: Tensor) -> Tensor: ...

    def get_buffer(self, target: str) -> Tensor: ...


def denormalize(images: Tensor, normalize: Normalization | None) -> Tensor:
    """(N, C, H, W) normalized images back to [0, 1] with the data's ``Normalize.inverse``.

    Without one (a DataModule that does not say how it normalized), each image is min-max scaled.
    """
    images = images.float()
    if normalize is not None:
        return normalize.inverse(images.to(normalize.get_buffer("mean").device)).cpu()
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return ((images - low) / (high - low).clamp_min(1e-8)).clamp(0, 1)


def confusion_figure(confusion: Tensor, names: Sequence[str], title: str) -> Figure:
    """torchmetrics' confusion-matrix plot, sized to the class count, with readable cell text."""
    from torchmetrics.utilities.plot import plot_confusion_matrix

    n = len(names)
    figure, ax = plot_confusion_matrix(confusion, labels=list(names), add_text=n <= 20, cmap="Blues")
    side = min(16.0, max(6.0, 0.55 * n + 2))
    figure.set_size_inches(side + 0.8, side)
    peak = max(int(confusion.max()), 1)
    for text in ax.texts:  # dark text on pale cells, white on dark ones, sized to the cell
        value = float(text.get_text() or 0)
        text.set_color("white" if value > 0.55 * peak else "black")
        text.set_fontsize(max(6, min(12, 90 / n)))
    ax.tick_params(axis="both", labelsize=max(5, min(10, 120 / n)))
    ax.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), names, rotation=0)
    right, total = int(confusion.trace()), int(confusion.sum())
    ax.set_title(f"{title}: {right}/{total} right ({100 * right / max(total, 1):.1f}%)", fontsize=11)
    return figure


def misclassified_figure(
    pictures: Tensor, labels: Sequence[tuple[int, int, float]], names: Sequence[str], title: str
) -> Figure:
    """A grid of wrong predictions: ``pictures`` in [0, 1], each with (true, predicted, confidence)."""
    plt = pyplot()
    columns = min(8, len(labels))
    rows = math.ceil(len(labels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.95 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, (true, predicted, probability) in zip(axes.flat, pictures, labels):
        ax.imshow(
            picture.permute(1, 2, 0).squeeze(-1).numpy(),
            interpolation="nearest",
            cmap="gray" if picture.shape[0] == 1 else None,
        )
        ax.set_title(f"{names[true]}\n→ {names[predicted]} ({probability:.0%})", fontsize=8, color="firebrick")
    figure.suptitle(f"{title}: misclassified images, true → predicted (confidence)", fontsize=10)
    figure.tight_layout()
    return figure


# --- the report's PNGs ------------------------------------------------------------------------------

# A run's style beyond its colour: the first ten runs are solid lines with round markers, each further
# ten take the next line style and marker, so no two of 280 runs are drawn alike.
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--")  # the bars' counterpart of the line styles


def save_png(figure: Figure, path: Path, dpi: int = 120) -> Path:
    """Writes ``figure`` to ``path`` as a PNG and closes it."""
    # the canvas grows to what is drawn: legends beside the axes and Optuna's value labels stay in the picture
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(figure)
    return path


def run_styles(n: int) -> list[dict[str, Any]]:
    """``n`` pairwise different ``{"color", "linestyle", "marker", "hatch"}`` styles, one per run.

    tab10's colours, repeated every ten runs with the next line style, marker and hatch: a colour
    map with more colours (tab20) pairs each with a paler twin that is hard to tell apart.
    """
    colors = pyplot().get_cmap("tab10").colors
    return [
        {
            "color": colors[i % len(colors)],
            "linestyle": LINE_STYLES[i // len(colors) % len(LINE_STYLES)],
            "marker": MARKERS[i // len(colors) % len(MARKERS)],
            "hatch": HATCHES[i // len(colors) % len(HATCHES)],
        }
        for i in range(n)
    ]


LEGEND_BESIDE = 30  # up to this many runs the legend is one column beside the axes; more go below, in columns
LEGEND_COLUMNS_BELOW = 3
LEGEND_ROW_INCHES = 0.17  # one legend entry at font size 7, with its spacing


def _legend_size(n: int) -> tuple[float, float]:
    """The figure's (width, height) in inches: axes of 5 inches, plus room for the legend of ``n`` runs."""
    if n <= 8:
        return 8.0, 5.0
    if n <= LEGEND_BESIDE:
        return 9.5, max(5.0, LEGEND_ROW_INCHES * n + 1.2)
    return 12.0, 5.4 + LEGEND_ROW_INCHES * math.ceil(n / LEGEND_COLUMNS_BELOW)


def _legend(ax: Axes, n: int) -> None:
    """A legend that stays readable however many runs: inside the axes for a few, beside them for more, and
    below them in columns for many, the figure grown to hold it (:func:`_legend_size`)."""
    if n <= 8:
        ax.legend(fontsize=8, loc="best")
    elif n <= LEGEND_BESIDE:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.1),
            borderaxespad=0,
            ncol=LEGEND_COLUMNS_BELOW,
            frameon=False,
        )


def _spread_lone_points(curves: Sequence[Sequence[tuple[float, float]]]) -> list[float]:
    """An x offset per curve: curves that are one point each (one-epoch runs) at the same epoch are spread over
    the epoch's width, so their markers sit side by side instead of on top of one another."""
    offsets = [0.0] * len(curves)
    lone: dict[float, list[int]] = {}
    for i, points in enumerate(curves):
        if len(points) == 1:
            lone.setdefault(points[0][0], []).append(i)
    for indices in lone.values():
        step = min(0.1, 0.6 / len(indices))  # within +-0.3 of the epoch: clear of the next one
        for k, i in enumerate(indices):
            offsets[i] = (k - (len(indices) - 1) / 2) * step
    return offsets


def curves_figure(
    curves: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    title: str,
    ylabel: str,
    mark_best: bool = False,
    log_y: bool = False,
    styles: Sequence[dict[str, Any]] | None = None,
) -> Figure:
    """One line per ``(label, [(epoch, value), ...])`` against the epoch.

    Args:
        mark_best: a star on each curve's highest point.
        log_y: a log y axis, for losses: on a linear one a single diverged run flattens every other
            curve into the bottom pixels. Values at or below zero switch it to symlog.
        styles: one :func:`run_styles` entry per curve, so that a run keeps its look in every figure of a
            report; by default the curves take them in order.

    NaN and infinite values are left out of the lines; the legend says which runs had them. One-point
    curves at the same epoch are drawn side by side around it.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, ax = plt.subplots(figsize=_legend_size(len(curves)), layout="constrained")
    xs_drawn, ys_drawn = [], []
    finite_curves = [[(x, y) for x, y in points if math.isfinite(y)] for _, points in curves]
    offsets = _spread_lone_points(finite_curves)
    for (label, points), finite, offset, style in zip(
        curves, finite_curves, offsets, styles or run_styles(len(curves))
    ):
        xs, ys = [x + offset for x, _ in finite], [y for _, y in finite]
        xs_drawn += xs
        ys_drawn += ys
        if len(finite) < len(points):
            label += " (NaN/inf not drawn)"
        if mark_best and ys:
            best = max(range(len(ys)), key=ys.__getitem__)
            ax.plot(
                xs[best],
                ys[best],
                marker="*",
                markersize=13,
                color=style["color"],
                markeredgecolor="black",
                markeredgewidth=0.6,
                zorder=3,
            )
        # A lone point (a one-epoch run) is only its marker: it gets a large one. Long runs get a marker
        # every few epochs, enough to tell the line styles apart without hiding the line.
        ax.plot(
            xs,
            ys,
            color=style["color"],
            linestyle=style["linestyle"],
            linewidth=1.6,
            label=label,
            marker=style["marker"],
            markersize=8 if len(xs) == 1 else 4.5,
            markevery=max(1, len(xs) // 12),
        )
    if xs_drawn:
        # An x range around the epochs drawn: a single epoch otherwise sits on an axis of ticks like 0.96..1.04.
        low, high = min(xs_drawn), max(xs_drawn)
        pad = max(0.5, 0.02 * (high - low))
        ax.set_xlim(low - pad, high + pad)
    if log_y:
        ax.set_yscale("log" if ys_drawn and min(ys_drawn) > 0 else "symlog")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both" if log_y else "major")
    ax.set_title(title)
    _legend(ax, len(curves))
    return figure


def per_class_figure(
    classes: Sequence[str],
    bars: Sequence[tuple[str, Sequence[float | None]]],
    title: str,
    ylabel: str,
    styles: Sequence[dict[str, Any]] | None = None,
) -> Figure:
    """Grouped bars: for each class, one bar per ``(label, [value per class, ...])``, values in percent.

    A class a run has no value for gets no bar. ``styles``: as in :func:`curves_figure`.
    """
    plt = pyplot()
    width = 0.8 / len(bars)
    figure, ax = plt.subplots(
        figsize=(min(24, max(8, 0.5 * len(classes) * (1 + 0.3 * len(bars)))), 5.2), layout="constrained"
    )
    for i, ((label, values), style) in enumerate(zip(bars, styles or run_styles(len(bars)))):
        xs = [c + (i - (len(bars) - 1) / 2) * width for c in range(len(classes))]
        heights = [math.nan if v is None else v for v in values]
        ax.bar(
            xs, heights, width, color=style["color"], hatch=style["hatch"], edgecolor="white", linewidth=0, label=label
        )
    many = len(classes) > 6
    ax.set_xticks(range(len(classes)), classes, rotation=35 if many else 0, ha="right" if many else "center")
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(title)
    ax.legend(
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18 if many else -0.1),
        ncol=min(len(bars), 3),
        frameon=False,
    )
    return figure
