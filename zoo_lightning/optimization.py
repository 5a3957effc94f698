"""What the optimizer trains and how: parameter groups, the default recipe, the schedule's length.

The classifier's ``configure_optimizers`` builds its optimizer from :func:`optimizer_groups` (no weight
decay on norms and biases; the backbone apart from the head when their learning rates differ), and
its schedule from :func:`build_scheduler`, which hands the Trainer's step count to a schedule that
takes one. The default optimizer and schedule are the ``model.optimizer`` and ``model.lr_scheduler``
entries of ``configs/defaults.yaml``, the recipe every ``fit`` starts from, read from that file.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Callable, Collection, Iterable
from typing import Any

import yaml
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from zoo_lightning.parsing import DEFAULTS

__all__ = [
    "NORM_LAYERS",
    "RECIPE",
    "parameter_groups",
    "optimizer_groups",
    "default_optimizer",
    "default_lr_scheduler",
    "takes_total_steps",
    "build_scheduler",
]

RECIPE = DEFAULTS  # the one recipe file: what every command line starts from, and the Python defaults

# Normalization layers: their weights and biases get no weight decay (and norm_lr_scale); a frozen backbone keeps
# them in eval mode. Subclasses count too (timm's BatchNormAct2d, torchvision's LayerNorm2d).
NORM_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.RMSNorm,
)


def _recipe_entry(key: str) -> functools.partial:
    """``model.<key>`` of :data:`RECIPE` (``class_path`` and ``init_args``) as a callable taking what is left."""
    entry = yaml.safe_load(RECIPE.read_text())["model"][key]
    module, _, name = entry["class_path"].rpartition(".")
    return functools.partial(getattr(importlib.import_module(module), name), **(entry.get("init_args") or {}))


# Functions rather than the partials themselves: jsonargparse shows and saves a function default by its import path.
def default_optimizer(params: Iterable) -> Optimizer:
    """The recipe's optimizer: ``model.optimizer`` of :data:`RECIPE`."""
    return _recipe_entry("optimizer")(params)


def default_lr_scheduler(optimizer: Optimizer, total_steps: int | None = None) -> LRScheduler:
    """The recipe's LR schedule: ``model.lr_scheduler`` of :data:`RECIPE`, given ``total_steps`` if it takes them."""
    schedule = _recipe_entry("lr_scheduler")
    return schedule(optimizer, total_steps=total_steps) if takes_total_steps(schedule) else schedule(optimizer)


def parameter_groups(module: nn.Module, trained: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Three groups: weights that decay; normalization layers' weights and biases; other biases.

    Weight decay skips the last two (1-d tensors); ``norm_lr_scale`` multiplies the second's LR.

    Args:
        module: the network.
        trained: names of the parameters to put in groups; None takes those that have ``requires_grad``.
    """
    norms = {id(p) for m in module.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    decay: list[nn.Parameter] = []
    norm: list[nn.Parameter] = []
    bias: list[nn.Parameter] = []
    for name, param in module.named_parameters():
        if param.requires_grad if trained is None else name in trained:
            (norm if id(param) in norms else bias if param.ndim <= 1 else decay).append(param)
    # The optimizer's own weight_decay applies to the first group; the others override it with 0.
    return [{"params": decay}, {"params": norm, "weight_decay": 0.0}, {"params": bias, "weight_decay": 0.0}]


def optimizer_groups(
    module: nn.Module,
    trained: Collection[str],
    head: Collection[str],
    norm_lr_scale: float = 1.0,
    backbone_lr_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """:func:`parameter_groups` of ``trained``, each with its ``lr_scale`` (``norm_lr_scale`` on the norms' group).

    With a ``head`` (parameter names), each group is split into the backbone's part, at ``backbone_lr_scale``, and
    the head's, named for the LR monitor: ``backbone``, ``backbone_pg2``, ..., ``head``, ``head_pg2``, ...; empty
    groups are left out.
    """
    groups = parameter_groups(module, trained)
    for index, group in enumerate(groups):
        group["lr_scale"] = norm_lr_scale if index == 1 else 1.0
    if not head:
        return groups
    in_head = {id(p) for n, p in module.named_parameters() if n in head}
    split = []
    for part, scale in (("backbone", backbone_lr_scale), ("head", 1.0)):
        for index, group in enumerate(groups):
            params = [p for p in group["params"] if (id(p) in in_head) == (part == "head")]
            split.append(
                {
                    **group,
                    "params": params,
                    "name": part if index == 0 else f"{part}_pg{index + 1}",
                    "lr_scale": group["lr_scale"] * scale,
                }
            )
    return [group for group in split if group["params"]]


def takes_total_steps(factory: Callable[..., LRScheduler]) -> bool:
    """Whether ``factory`` takes ``total_steps`` and was given none (None) for it.

    A ``functools.partial`` says what it was given in its keywords (LightningCLI's schedulers are partials that
    bind every init argument, a default None included); otherwise the signature says what it takes.
    """
    given = factory.keywords if isinstance(factory, functools.partial) else {}
    if "total_steps" in given:
        return given["total_steps"] is None
    try:
        parameter = inspect.signature(factory).parameters.get("total_steps")
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return parameter is not None and parameter.default is None


def build_scheduler(
    factory: Callable[..., LRScheduler], optimizer: Optimizer, total_steps: Callable[[], int | float]
) -> LRScheduler:
    """``factory(optimizer)``, with ``total_steps()`` passed when :func:`takes_total_steps` says so.

    ``total_steps`` is the Trainer's ``estimated_stepping_batches``: infinite for a run without an end.
    """
    if not takes_total_steps(factory):
        return factory(optimizer)
    steps = total_steps()
    if not math.isfinite(steps):
        raise ValueError(
            "The LR schedule takes total_steps (the optimizer steps of the run), and this run has no end: give "
            "--trainer.max_epochs or --trainer.max_steps, or a schedule without total_steps."
        )
    return factory(optimizer, total_steps=int(steps))
