"""Every matplotlib figure the project draws: the dashboard's images in TensorBoard and the report's PNGs.

matplotlib runs with the Agg backend: headless, for TensorBoard and plain PNG files, never a window.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from torch import Tensor

__all__ = ["pyplot", "denormalize", "confusion_figure", "misclassified_figure"]


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported on first use: it costs a second at start-up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def denormalize(images: Tensor, normalize: Any | None) -> Tensor:
    """(N, C, H, W) normalized images back to [0, 1] with the data's ``Normalize.inverse``.

    Without one (a DataModule that does not say how it normalized), each image is min-max scaled.
    """
    images = images.float()
    if normalize is not None:
        return normalize.inverse(images.to(normalize.mean.device)).cpu()
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return ((images - low) / (high - low).clamp_min(1e-8)).clamp(0, 1)


def confusion_figure(confusion: Tensor, names: Sequence[str], title: str) -> Any:
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


def misclassified_figure(pictures: Tensor, labels: Sequence[tuple[int, int, float]], names: Sequence[str],
                         title: str) -> Any:
    """A grid of wrong predictions: ``pictures`` in [0, 1], each with (true, predicted, confidence)."""
    plt = pyplot()
    columns = min(8, len(labels))
    rows = math.ceil(len(labels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.95 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, (true, predicted, probability) in zip(axes.flat, pictures, labels):
        ax.imshow(picture.permute(1, 2, 0).squeeze(-1).numpy(), interpolation="nearest",
                  cmap="gray" if picture.shape[0] == 1 else None)
        ax.set_title(f"{names[true]}\n→ {names[predicted]} ({probability:.0%})", fontsize=8, color="firebrick")
    figure.suptitle(f"{title}: misclassified images, true → predicted (confidence)", fontsize=10)
    figure.tight_layout()
    return figure
