"""The registry as a table: parameters and FLOPs of every model, for ``python -m zoo_lightning models``.

FLOPs are counted by ``torch.utils.flop_counter`` on the meta device (no memory, no arithmetic), and
follow its convention: one multiply-add is 2 FLOPs, and only convolutions and matrix products count.
torchvision's deformable convolution counts as the convolution it computes; its bilinear sampling of
the input (a few multiply-adds per sampled value) is not counted, as BatchNorm, activations and pooling
are not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo_lightning.models.registry import create_model, list_models, model_entry

__all__ = ["ModelRow", "count_parameters", "count_mflops", "deform_conv2d_flop", "model_rows", "print_model_table"]


@dataclass(frozen=True)
class ModelRow:
    name: str
    family: str
    params_m: float
    mflops_cifar: float
    mflops_imagenet: float
    paper: str


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def deform_conv2d_flop(
    input_shape: torch.Size, weight_shape: torch.Size, *args: object, out_shape: torch.Size, **kwargs: object
) -> int:
    """FLOPs of ``torchvision::deform_conv2d`` as ``FlopCounterMode`` counts a convolution: 2 per multiply-add of
    the weights with the (sampled) input."""
    out_channels, in_per_group, kernel_h, kernel_w = weight_shape
    return 2 * out_shape[0] * out_channels * in_per_group * kernel_h * kernel_w * out_shape[2] * out_shape[3]


def _measure(name: str, stem: str, size: int, num_classes: int, device: str) -> tuple[int, int]:
    """(parameters, forward FLOPs of one image in eval mode) of a model built on ``device``."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device(device):
        model = create_model(name, num_classes=num_classes, stem=stem).eval()
        images = torch.zeros(1, 3, size, size)
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.torchvision.deform_conv2d: deform_conv2d_flop})
    with counter, torch.no_grad():
        model(images)
    return count_parameters(model), counter.get_total_flops()


def _measure_anywhere(name: str, stem: str, size: int, num_classes: int = 10) -> tuple[int, int]:
    # The meta device allocates and computes nothing, so even VGG at 224x224 costs only Python time;
    # a model whose forward needs real values there is measured on the CPU instead.
    try:
        return _measure(name, stem, size, num_classes, "meta")
    except (NotImplementedError, RuntimeError):
        return _measure(name, stem, size, num_classes, "cpu")


def count_mflops(name: str, stem: str, size: int, num_classes: int = 10) -> float:
    """Forward MFLOPs of one image in eval mode (1 multiply-add = 2 FLOPs)."""
    return _measure_anywhere(name, stem, size, num_classes)[1] / 1e6


def model_rows(pattern: str = "*") -> list[ModelRow]:
    """One row per registered model matching ``pattern``: 10 classes, CIFAR stem for the parameters."""
    rows = []
    for name in list_models(pattern):
        entry = model_entry(name)
        params, flops_cifar = _measure_anywhere(name, "cifar", 32)
        flops_imagenet = _measure_anywhere(name, "imagenet", 224)[1]
        paper = entry.paper[entry.paper.find('"') :] if '"' in entry.paper else entry.paper  # title + authors
        rows.append(
            ModelRow(name, entry.family, params / 1e6, flops_cifar / 1e6, flops_imagenet / 1e6, paper.rstrip("."))
        )
    return rows


def print_model_table(pattern: str = "*") -> None:
    from rich.console import Console, JustifyMethod
    from rich.table import Table

    rows = model_rows(pattern)
    if not rows:
        raise ValueError(f"No registered model matches {pattern!r}; `python -m zoo_lightning models` lists them all.")
    table = Table(title=f"zoo_lightning models matching {pattern!r} (10 classes; 1 multiply-add = 2 FLOPs)")
    columns: list[tuple[str, JustifyMethod]] = [
        ("name", "left"),
        ("family", "left"),
        ("params (M)", "right"),
        ("MFLOPs 32x32 cifar", "right"),
        ("MFLOPs 224x224 imagenet", "right"),
        ("paper", "left"),
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(
            row.name,
            row.family,
            f"{row.params_m:.2f}",
            f"{row.mflops_cifar:,.0f}",
            f"{row.mflops_imagenet:,.0f}",
            row.paper,
        )
    console = Console()
    if not console.is_terminal:  # piped to a file: no wrapping at 80 columns
        console = Console(width=220)
    console.print(table)
