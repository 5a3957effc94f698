"""Callbacks, one per file: what a run logs and writes beside the training logic."""

from zoo_lightning.callbacks.dashboard import ClassificationDashboard, class_names, per_class_accuracy
from zoo_lightning.callbacks.hparams_session import HparamsSession
from zoo_lightning.callbacks.lookahead import LookaheadAveraging
from zoo_lightning.callbacks.nonfinite import NonFiniteLossError, NonFiniteLossStop
from zoo_lightning.callbacks.patch_whitening import PatchWhitening
from zoo_lightning.callbacks.prediction_writer import PredictionWriter
from zoo_lightning.callbacks.throughput import ImagesPerSecond
from zoo_lightning.callbacks.trial_pruning import TrialPruning

__all__ = [
    "ClassificationDashboard",
    "HparamsSession",
    "ImagesPerSecond",
    "LookaheadAveraging",
    "NonFiniteLossError",
    "NonFiniteLossStop",
    "PatchWhitening",
    "PredictionWriter",
    "TrialPruning",
    "class_names",
    "per_class_accuracy",
]
