"""The callbacks' options are checked by their types when the CLI parses them (``--dashboard.misclassified -1``)."""

from __future__ import annotations

import pytest

from tests.helpers import check_option_type
from zoo_lightning.callbacks import ClassificationDashboard, NonFiniteLossStop, PatchWhitening, PredictionWriter
from zoo_lightning.callbacks.lr_monitor import StepLearningRateMonitor


@pytest.mark.parametrize(
    "cls, option, bad, good, expected",
    [
        (ClassificationDashboard, "misclassified", "-1", "0", 0),
        (ClassificationDashboard, "figures_every_n_epochs", "0", "5", 5),
        (NonFiniteLossStop, "every_n_steps", "0", "1", 1),
        (PatchWhitening, "images", "0", "1000", 1000),
        (PatchWhitening, "eps", "0", "0.001", 0.001),
        (PatchWhitening, "freeze_bias_after", "-1", "0", 0),
        (PredictionWriter, "show", "-1", "0", 0),
        (StepLearningRateMonitor, "logging_interval", "hour", "epoch", "epoch"),
    ],
)
def test_the_parser_checks_each_option_against_its_type(cls, option, bad, good, expected):
    check_option_type(cls, option, bad, good, expected)
