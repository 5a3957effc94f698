"""TensorBoard's HPARAMS session for a run: written by :class:`HparamsSession`, read by :func:`read_session`.

A session is three summaries in the run's event file: the experiment (which hyper-parameters and
metric columns the HPARAMS tab shows), the session start (the values) and the session end (status
and time). The callback writes them; ``report`` reads them back with :func:`read_session`, so the
protocol lives here on both sides.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from zoo_lightning import metric_names as names
from zoo_lightning.checkpoints import RUNTIME_OPTIONS, callback_state, read_checkpoint
from zoo_lightning.data.base import trainer_datamodule

__all__ = ["HparamsSession", "read_session", "KEY_HPARAMS", "HPARAM_METRICS", "DONE", "FAILED", "INTERRUPTED"]

# The hyper-parameters the HPARAMS table opens on (the others are a tick away).
KEY_HPARAMS = ("backbone", "objective", "lr", "batch_size", "max_epochs")
# Scalars the HPARAMS tab shows beside the hyper-parameters (blank where a run never logged one).
HPARAM_METRICS = (
    names.BEST_VAL_TOP1,
    names.tag(names.VAL, names.TOP1),
    names.tag(names.VAL, names.LOSS),
    names.tag(names.TEST, names.TOP1),
    names.tag(names.TEST, names.LOSS),
    names.IMAGES_PER_SEC,
)
DONE, FAILED, INTERRUPTED = "done", "failed", "interrupted"
# The summary tags of TensorBoard's hparams plugin.
_START_TAG, _END_TAG = "_hparams_/session_start_info", "_hparams_/session_end_info"


def _hparam_value(value: object) -> int | float | str | bool:
    # TensorBoard's hparams summary takes numbers, strings and booleans only.
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def _feature_key_hparams(experiment: Any) -> None:
    """Puts :data:`KEY_HPARAMS` first in the HPARAMS tab, whose table shows only its first few columns.

    TensorBoard orders columns by the ``differs`` flag, then by name, and ticks the first five; the
    flag is set on the key hyper-parameters so the table opens on them, not on ``channels_last``.
    """
    from tensorboard.plugins.hparams import plugin_data_pb2

    value = experiment.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in KEY_HPARAMS
    value.metadata.plugin_data.content = data.SerializeToString()


def _add_summaries(trainer: L.Trainer, *summaries: Any) -> None:
    """Writes ``summaries`` into the event file of each TensorBoard logger's run.

    Lightning's ``log_hyperparams(params, metrics)`` would also log each metric column as a scalar
    (a 0 at the first step of ``val/top1`` and ``test/top1``) and cannot order the columns, so the
    summaries go to the logger's writer itself, through ``SummaryWriter.file_writer``.
    """
    from torch.utils.tensorboard.writer import FileWriter

    for logger in trainer.loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        writer = logger.experiment.file_writer
        # Lightning closes the writer when a stage ends: a later stage in the same process (a test after
        # fit) writes a new event file into the run folder, as the reopened writer would.
        closed = writer is None
        if closed:
            writer = FileWriter(logger.experiment.get_logdir())
        for summary in summaries:
            writer.add_summary(summary)
        if closed:
            writer.close()


def collect_hparams(trainer: L.Trainer, pl_module: L.LightningModule, training: bool) -> dict[str, Any]:
    """What the HPARAMS tab shows for a run: backbone, objective, optimizer, data, precision, ..."""
    hparams = pl_module.hparams
    objective = getattr(pl_module, "objective", None)
    params: dict[str, Any] = {
        "stage": "fit" if training else "test",
        "backbone": hparams.get("backbone", type(pl_module).__name__),
        "stem": hparams.get("stem", "-"),
        "parameters": sum(p.numel() for p in pl_module.parameters()),  # frozen ones too: the network's size
        "objective": type(objective).__name__ if objective is not None else "-",
    }
    if objective is not None:  # the objective's own settings: label_smoothing, temperature, alpha, ...
        params.update(
            {
                f"objective.{k}": v
                for k, v in vars(objective).items()
                if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool))
            }
        )
    if training and trainer.optimizers:
        optimizer = trainer.optimizers[0]
        params["optimizer"] = type(optimizer).__name__
        params.update(
            {
                k: v
                for k, v in optimizer.defaults.items()
                if k in ("lr", "weight_decay", "momentum", "nesterov", "betas") and v is not None
            }
        )
    if training and trainer.lr_scheduler_configs:
        params["lr_scheduler"] = type(trainer.lr_scheduler_configs[0].scheduler).__name__
    datamodule = trainer_datamodule(trainer)
    params.update(
        {
            "data": type(datamodule).__name__ if datamodule is not None else "-",
            "batch_size": getattr(datamodule, "batch_size", None) or "-",
            "precision": str(trainer.precision),
            "devices": trainer.world_size,
        }
    )
    if training:
        params["max_epochs"] = trainer.max_epochs if trainer.max_epochs is not None else -1
    params.update({k: hparams[k] for k in RUNTIME_OPTIONS if k in hparams})
    return {k: _hparam_value(v) for k, v in params.items()}


class HparamsSession(L.Callback):
    """Writes the run's HPARAMS session and tracks its best validation top-1.

    ``fit`` writes the session once training starts (after the optimizers are built) and logs
    ``hp/best_val_top1`` after every validation; both are saved in the checkpoint, so a later
    ``test --ckpt_path`` reports the fit's recipe and best val top-1 beside its own test metrics.
    The session ends ``done`` when the command finishes, ``interrupted`` when Ctrl-C or SIGTERM
    stops it, and ``failed`` when it raises.
    """

    def __init__(self) -> None:
        super().__init__()
        self.best_val_top1: float | None = None
        self.run_params: dict[str, Any] = {}
        self.started = False  # whether this process wrote the session's start

    def state_dict(self) -> dict[str, Any]:
        return {"best_val_top1": self.best_val_top1, "hparams": dict(self.run_params)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_val_top1 = state_dict.get("best_val_top1", self.best_val_top1)
        self.run_params = dict(state_dict.get("hparams") or self.run_params)

    @rank_zero_only
    def _write_start(self, trainer: L.Trainer, params: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(params)
        # The metric columns are plain scalar tags logged elsewhere, so a run still in progress
        # (or killed) shows its values so far.
        experiment, start, _ = hparams_summary(params, {tag: 0.0 for tag in HPARAM_METRICS})
        _feature_key_hparams(experiment)
        _add_summaries(trainer, experiment, start)
        self.started = True

    @rank_zero_only
    def _write_end(self, trainer: L.Trainer, status: str) -> None:
        if not self.started:
            return  # stopped before its session began: nothing to end (and maybe no run folder to end it in)
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        # TensorBoard's own session_end_pb needs TensorFlow; this is the same summary, end time included.
        # TensorBoard has no "interrupted": a stopped run ends with STATUS_UNKNOWN and an end time.
        code = {DONE: api_pb2.STATUS_SUCCESS, FAILED: api_pb2.STATUS_FAILURE, INTERRUPTED: api_pb2.STATUS_UNKNOWN}
        end = plugin_data_pb2.SessionEndInfo(status=code[status], end_time_secs=time.time())
        content = plugin_data_pb2.HParamsPluginData(session_end_info=end, version=metadata.PLUGIN_DATA_VERSION)
        plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
        end_summary = Summary(value=[Summary.Value(tag=_END_TAG, metadata=SummaryMetadata(plugin_data=plugin))])
        _add_summaries(trainer, end_summary)

    def _log_best(self, trainer: L.Trainer) -> None:
        if self.best_val_top1 is not None:
            for logger in trainer.loggers:
                logger.log_metrics({names.BEST_VAL_TOP1: self.best_val_top1}, step=trainer.global_step)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.run_params = collect_hparams(trainer, pl_module, training=True)
        self._write_start(trainer, self.run_params)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        top1 = trainer.callback_metrics.get(names.tag(names.VAL, names.TOP1))
        if trainer.sanity_checking or trainer.state.fn != "fit" or top1 is None:
            return
        self.best_val_top1 = max(float(top1), self.best_val_top1 or 0.0)
        self._log_best(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None and self.run_params:  # a test right after fit: the fit's own session
            self._log_best(trainer)
            return
        checkpoint = None
        if trainer.ckpt_path:  # Lightning restores callback state only when fitting: read it here
            checkpoint = read_checkpoint(trainer.ckpt_path)
            if not self.run_params:
                self.load_state_dict(callback_state(checkpoint, type(self)) or {})
        params = {**collect_hparams(trainer, pl_module, training=False), **self.run_params, "stage": "test"}
        if checkpoint is not None:
            params["ckpt_path"] = str(trainer.ckpt_path)
            if isinstance(checkpoint.get("epoch"), int):  # which epoch's weights are evaluated
                params["checkpoint_epoch"] = checkpoint["epoch"] + 1
        self._write_start(trainer, params)
        self._log_best(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_end(trainer, DONE)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_end(trainer, DONE)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Ctrl-C raises KeyboardInterrupt; Lightning turns SIGTERM into SIGTERMException, a SystemExit.
        stopped = isinstance(exception, (KeyboardInterrupt, SystemExit))
        self._write_end(trainer, INTERRUPTED if stopped else FAILED)


def read_session(accumulator: Any) -> tuple[dict[str, Any], str | None]:
    """The hyper-parameters and status (:data:`DONE`, :data:`FAILED`, :data:`INTERRUPTED` or None: open) of one
    event file.

    ``accumulator`` is TensorBoard's ``EventAccumulator`` over the file, already reloaded.
    """
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    try:
        content = accumulator.PluginTagToContent("hparams")
    except KeyError:
        return {}, None
    params, status = {}, None
    if _START_TAG in content:
        start = plugin_data_pb2.HParamsPluginData.FromString(content[_START_TAG])
        for key, value in start.session_start_info.hparams.items():
            kind = value.WhichOneof("kind")
            if kind in ("number_value", "string_value", "bool_value"):
                params[key] = getattr(value, kind)
    if _END_TAG in content:
        end = plugin_data_pb2.HParamsPluginData.FromString(content[_END_TAG]).session_end_info
        # Only an end with a time is a real one: Lightning's hp_metric writes SUCCESS when a run starts.
        if end.end_time_secs:
            status = {
                api_pb2.STATUS_SUCCESS: DONE,
                api_pb2.STATUS_FAILURE: FAILED,
                api_pb2.STATUS_UNKNOWN: INTERRUPTED,
            }.get(end.status)
    return params, status
