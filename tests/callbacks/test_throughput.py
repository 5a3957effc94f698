"""ImagesPerSecond: the images it counts and the rate it logs."""

import pytest

from tests.helpers import events
from zoo_lightning.callbacks import ImagesPerSecond


def test_images_per_second_counts_every_training_image(tiny_run):
    root, trainer, *_ = tiny_run
    meter = next(c for c in trainer.callbacks if isinstance(c, ImagesPerSecond))
    assert meter.images == 48 and meter.seconds > 0
    logged = events(root / "tiny" / "version_0").Scalars("train/images_per_sec")
    assert len(logged) == 2 and logged[-1].value == pytest.approx(48 / meter.seconds)
