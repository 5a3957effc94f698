"""The runs under a log folder: their scalars, settings, status and dataset, and evaluations joined to their runs.

Every folder under LOGDIR that holds TensorBoard event files is a run. A training run is
``<experiment>/<version>``; an evaluation (``validate``, ``test``) is filed inside the run whose checkpoint
it scored, ``RUN/evaluations/test_N``, or under ``<experiment>/evaluations/`` for a checkpoint from no run.
What a run is (backbone, objective, epochs, data, checkpoint scored, TTA, the part of the test set) is
read from the ``config.yaml`` LightningCLI wrote and the ``hparams.yaml`` of the logger; what it did from
its event files (:mod:`.events`): the scalars, and the HPARAMS session's stage, parameter count and status.
An evaluation from before evaluations were filed in their run (a sibling run with a ``ckpt_path``) is
joined by the path of its checkpoint.
"""

from __future__ import annotations

import fnmatch
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from zoo_lightning import metric_names as names
from zoo_lightning.runs import EVALUATIONS

__all__ = ["Run", "MeasuredTop1", "Dataset", "ranked", "choose", "DEFAULT_PER_CLASS_RUNS"]

DEFAULT_PER_CLASS_RUNS = 4  # runs in the per-class figure when --runs is not given: the best few
VAL_TOP1 = names.tag(names.VAL, names.TOP1)
TEST_TOP1 = names.tag(names.TEST, names.TOP1)
VAL_CLASS = names.class_prefix(names.VAL)
TEST_IMAGES = names.tag(names.TEST, names.IMAGES)
OWN_WEIGHTS = "final weights"  # what `fit --test_after_fit true` tests: the weights training ended with
# DataModules of a published dataset: the same images wherever their folder is. Any other DataModule's
# images are those of its data folder, so two folders are two datasets.
NAMED_DATASETS = frozenset({"CIFAR10DataModule", "STL10DataModule"})


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    """``config[key]`` where it is a mapping, else an empty one (a section the file lacks or spells otherwise)."""
    value = config.get(key)
    return value if isinstance(value, dict) else {}


class MeasuredTop1(NamedTuple):
    """A test top-1: the checkpoint it scored, its TTA, and how much of the test set it saw.

    ``limit`` is None for a test of the whole test set, else the ``limit_test_batches`` it ran with (a
    batch count, or a fraction of the batches); ``images`` the images it scored, where the run logged it.
    """

    top1: float | None
    checkpoint: str | None = None  # best.ckpt, last.ckpt, a path, or the final weights of the run's own test
    tta: str | None = None
    images: int | None = None
    limit: int | float | None = None

    @property
    def partial(self) -> bool:
        return self.limit is not None


class Dataset(NamedTuple):
    """What a run trained (or an evaluation scored) on, as far as its records say. Runs are ranked only against
    runs on the same dataset: a 3-class folder at 100% says nothing about a CIFAR-10 run."""

    data: str | None  # the DataModule's class name
    classes: int | None  # the number of classes
    folder: str | None = None  # the data folder, for a DataModule not in NAMED_DATASETS

    @property
    def recorded(self) -> bool:
        return self.data is not None or self.classes is not None

    @property
    def label(self) -> str:
        if not self.recorded:
            return "dataset not recorded"
        where = f" `{self.folder}`" if self.folder else ""
        count = f"{self.classes} classes" if self.classes is not None else "classes not recorded"
        return f"{self.data or 'DataModule not recorded'}{where}, {count}"

    @property
    def slug(self) -> str:
        """A file-name part for the dataset's plots, such as ``cifar10_10classes`` or ``folder_shapes_3classes``."""
        if not self.recorded:
            return "unrecorded"
        parts = [(self.data or "data").removesuffix("DataModule") or "data"]
        if self.folder:
            parts.append(Path(self.folder).name or "root")
        parts.append(f"{self.classes}classes" if self.classes is not None else "classes")
        return re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower()).strip("_")


@dataclass
class Run:
    """One version folder: its scalars, settings and (for a training run) the evaluations of its checkpoints."""

    name: str  # experiment/version, relative to LOGDIR
    path: Path
    scalars: dict[str, list[tuple[int, float]]]  # tag -> [(step, value)], resumed sessions joined
    wall_seconds: float  # summed over the run's sessions
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml (the newest config.resume-N.yaml)
    session: dict[str, Any] = field(default_factory=dict)  # what the HPARAMS tab shows for the run
    status: str | None = None  # DONE, FAILED or INTERRUPTED once the HparamsSession callback has closed the session
    sweep: dict[str, str] = field(default_factory=dict)  # swept key -> value, from sweep.json
    selftrain: dict[str, Any] = field(default_factory=dict)  # a self-training round: selftrain.json
    evaluations: list[Run] = field(default_factory=list)  # validate/test runs of this run's checkpoints, oldest first
    unread: dict[Path, str] = field(default_factory=dict)  # event file -> why it was skipped or read in part
    hparams: dict[str, Any] = field(default_factory=dict)  # the logger's hparams.yaml: the module's and data's

    # --- scalars ---------------------------------------------------------------------------------

    def values(self, tag: str) -> list[float]:
        return [value for _, value in self.scalars.get(tag, [])]

    def last(self, tag: str) -> float | None:
        values = self.values(tag)
        return values[-1] if values else None

    def best(self, tag: str) -> float | None:
        values = self.values(tag)
        return max(values) if values else None

    def epoch_at(self, step: int) -> int | None:
        """The 0-based epoch Lightning logged at ``step`` (its ``epoch`` scalar)."""
        epochs = [(s, int(v)) for s, v in self.scalars.get(names.EPOCH, [])]
        at = [e for s, e in epochs if s == step]
        if at:
            return at[-1]
        before = [e for s, e in epochs if s <= step]
        return before[-1] if before else None

    def per_epoch(self, tag: str) -> list[tuple[int, float]]:
        """(1-based epoch, value) of an epoch-level scalar such as ``val/top1``."""
        points = []
        for i, (step, value) in enumerate(self.scalars.get(tag, [])):
            epoch = self.epoch_at(step)
            points.append(((epoch if epoch is not None else i) + 1, value))
        return points

    def best_step(self, tag: str = VAL_TOP1) -> int | None:
        points = self.scalars.get(tag)
        return max(points, key=lambda p: p[1])[0] if points else None

    def at_step(self, tag: str, step: int) -> float | None:
        return next((v for s, v in reversed(self.scalars.get(tag, [])) if s == step), None)

    def class_tags(self) -> list[str]:
        return [tag for tag in self.scalars if tag.startswith(VAL_CLASS)]

    def per_class(self) -> dict[str, float | None]:
        """Per-class val accuracy at the run's best val top-1 (the epoch its best.ckpt holds)."""
        step = self.best_step(VAL_TOP1)
        values = {}
        for tag in self.class_tags():
            value = self.at_step(tag, step) if step is not None else None
            values[tag.removeprefix(VAL_CLASS)] = value if value is not None else self.last(tag)
        return values

    # --- settings --------------------------------------------------------------------------------

    @property
    def trains(self) -> bool:
        # The HPARAMS session says so even for a fit killed before it logged anything.
        return any(tag.split("/", 1)[0] == names.TRAIN for tag in self.scalars) or self.session.get("stage") == "fit"

    @property
    def is_evaluation(self) -> bool:
        """A ``validate``/``test`` of a checkpoint: filed under an ``evaluations/`` folder (or, in logs from before
        evaluations were filed so, a run that did not train and names a checkpoint)."""
        return self.path.parent.name == EVALUATIONS or (not self.trains and bool(self.ckpt_path))

    @property
    def stage(self) -> str:
        """``test`` or ``val``: what an evaluation scored (a training run's own test is ``test`` too)."""
        return names.TEST if TEST_TOP1 in self.scalars or self.session.get("stage") == "test" else names.VAL

    @property
    def dataset(self) -> Dataset:
        """The DataModule (config.yaml, else the HPARAMS session), its class count (the class names in config.yaml,
        which an evaluation takes from its checkpoint, else ``num_classes`` in hparams.yaml) and, for a DataModule
        whose images are a folder's, that folder."""
        data_config = _section(self.config, "data")
        init_args = _section(data_config, "init_args")
        class_path = data_config.get("class_path") or self.session.get("data")
        data = str(class_path).rsplit(".", 1)[-1] if class_path and class_path != "-" else None
        listed = init_args.get("class_names") or self.hparams.get("class_names")
        count = self.hparams.get("num_classes")
        classes = len(listed) if isinstance(listed, list) and listed else count if isinstance(count, int) else None
        folder = init_args.get("data_dir") or self.hparams.get("data_dir")
        keep_folder = data not in NAMED_DATASETS and bool(folder)
        return Dataset(data, classes, os.path.normpath(str(folder)) if keep_folder else None)

    @property
    def model_config(self) -> dict[str, Any]:
        return _section(self.config, "model")

    @property
    def backbone(self) -> str:
        return str(self.model_config.get("backbone") or "-")

    @property
    def objective(self) -> str:
        objective = self.model_config.get("objective")
        path = objective.get("class_path") if isinstance(objective, dict) else None
        return str(path).rsplit(".", 1)[-1] if path else "-"

    @property
    def max_epochs(self) -> int | None:
        value = (self.config.get("trainer") or {}).get("max_epochs")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def epochs(self) -> int:
        """Epochs begun: the last epoch Lightning logged, plus one."""
        epochs = self.values(names.EPOCH)
        return int(max(epochs)) + 1 if epochs else 0

    @property
    def ckpt_path(self) -> str | None:
        path = self.config.get("ckpt_path")
        return str(path) if path else None

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint an evaluation scored: ``best.ckpt``/``last.ckpt`` of a run's ``checkpoints/``, else the
        path."""
        if not self.ckpt_path:
            return None
        path = Path(self.ckpt_path)
        return path.name if path.parent.name == "checkpoints" else self.ckpt_path

    def split_limit(self, stage: str = names.TEST) -> int | float | None:
        """How much of the split the run's evaluation saw, when not all: ``limit_test_batches`` (``limit_val_batches``
        for ``val``) as a batch count or a fraction; one batch (or N) under ``fast_dev_run``. None: all of it."""
        trainer = _section(self.config, "trainer")
        fast = trainer.get("fast_dev_run")
        if fast:
            return 1 if fast is True else fast
        limit = trainer.get(f"limit_{stage}_batches")
        if limit is None or isinstance(limit, bool) or (isinstance(limit, float) and limit >= 1.0):
            return None  # 1.0 is the whole split; an int is a batch count, whole or not
        return limit

    @property
    def tta(self) -> str | None:
        """The test-time augmentation of the run's validate/test/predict (``"flip"``, ...), None without."""
        value = self.model_config.get("tta")
        return str(value) if value else None

    @property
    def parameters(self) -> int | None:
        """The network's parameters, frozen ones included, as the run counted them for its HPARAMS session."""
        value = self.session.get("parameters")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def images_per_sec(self) -> float | None:
        """Median over epochs: a first epoch slowed by compilation or caching does not set the figure."""
        values = self.values(names.IMAGES_PER_SEC)
        return statistics.median(values) if values else None

    def measured(self) -> MeasuredTop1:
        """This run's own test (an evaluation's: its one test), with the checkpoint, TTA and part of the test set."""
        images = self.last(TEST_IMAGES)
        checkpoint = (self.checkpoint or "checkpoint not recorded") if self.is_evaluation else OWN_WEIGHTS
        return MeasuredTop1(
            self.last(TEST_TOP1), checkpoint, self.tta, None if images is None else int(images), self.split_limit()
        )

    def test_results(self) -> list[MeasuredTop1]:
        """Every test of this run: its own (``--test_after_fit``), then its evaluations', oldest first."""
        runs = [self, *self.evaluations]
        return [result for result in (run.measured() for run in runs) if result.top1 is not None]

    def test_top1(self) -> MeasuredTop1:
        """The test top-1 the run is shown with. A test of the whole test set comes before any partial one; then the
        run's own test, then the newest test of its best.ckpt, then the newest test."""
        results = self.test_results()
        if not results:
            return MeasuredTop1(None)

        def preference(result: MeasuredTop1) -> tuple[bool, bool, bool]:  # False first
            return result.partial, result.checkpoint != OWN_WEIGHTS, result.checkpoint != "best.ckpt"

        return min(reversed(results), key=preference)  # min keeps the first of equals: the newest


# --- reading -----------------------------------------------------------------------------------------


def ranked(runs: list[Run]) -> list[Run]:
    """Best val top-1 first; runs without one after, by name."""
    return sorted(runs, key=lambda r: (r.best(VAL_TOP1) is None, -(r.best(VAL_TOP1) or 0.0), r.name))


def choose(runs: list[Run], patterns: list[str] | None) -> list[Run]:
    """The runs named by --runs (substrings or shell patterns), else the best few that have per-class scalars.

    Raises:
        ValueError: the patterns match no run with per-class scalars.
    """
    with_classes = [r for r in ranked(runs) if r.class_tags()]
    if not patterns:
        return with_classes[:DEFAULT_PER_CLASS_RUNS]
    chosen = [
        r
        for r in with_classes
        if any(fnmatch.fnmatch(r.name, p) if any(c in p for c in "*?[") else p in r.name for p in patterns)
    ]
    if not chosen:
        found = ", ".join(r.name for r in with_classes) or "none"
        raise ValueError(f"--runs {' '.join(patterns)} matches no run with per-class accuracy; those are: {found}.")
    return chosen
