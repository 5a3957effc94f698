"""zoo_lightning.figures: the PNGs the report writes."""

from __future__ import annotations

from PIL import Image

from zoo_lightning import figures


def test_a_png_holds_a_legend_drawn_beside_its_axes(tmp_path):
    plt = figures.pyplot()
    figure, axis = plt.subplots(figsize=(4, 3))
    axis.plot([0, 1], [0, 1], label="a label long enough to reach past the right edge of the canvas")
    axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))  # as Optuna's plots place theirs
    drawn = figure.get_tightbbox()  # inches: everything drawn
    assert drawn.x1 > 4  # the legend lies beyond the 4-inch canvas
    path = figures.save_png(figure, tmp_path / "legend.png", dpi=100)
    with Image.open(path) as image:
        assert image.width >= round(100 * drawn.width)  # the whole legend, not the canvas's 400 px
