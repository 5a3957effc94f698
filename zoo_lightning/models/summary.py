"""The registry as a table: parameters and FLOPs of every model, for ``python -m zoo_lightning models``.

FLOPs are counted by ``torch.utils.flop_counter`` on the meta device (no memory, no arithmetic), and
follow its convention: one multiply-add is 2 FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo_lightning.models.registry import create_model, list_models, model_entry

__all__ = ["ModelRow", "count_parameters", "count_mflops", "model_rows", "print_model_table"]


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


def count_mflops(name: str, stem: str, size: int, num_classes: int = 10) -> float:
    """Forward MFLOPs of one image, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, stem=stem).eval()
        images = torch.empty(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(images)
    return counter.get_total_flops() / 1e6


def model_rows(pattern: str = "*") -> list[ModelRow]:
    rows = []
    for name in list_models(pattern):
        entry = model_entry(name)
        with torch.device("meta"):
            params = count_parameters(create_model(name, num_classes=10, stem="cifar"))
        paper = entry.paper[entry.paper.find('"'):] if '"' in entry.paper else entry.paper  # title + authors
        rows.append(ModelRow(name, entry.family, params / 1e6, count_mflops(name, "cifar", 32),
                             count_mflops(name, "imagenet", 224), paper.rstrip(".")))
    return rows


def print_model_table(pattern: str = "*") -> None:
    from rich.console import Console
    from rich.table import Table

    rows = model_rows(pattern)
    if not rows:
        raise ValueError(f"No registered model matches {pattern!r}; `python -m zoo_lightning models` lists them all.")
    table = Table(title=f"zoo_lightning models matching {pattern!r} (10 classes; 1 multiply-add = 2 FLOPs)")
    for column, justify in [("name", "left"), ("family", "left"), ("params (M)", "right"),
                            ("MFLOPs 32x32 cifar", "right"), ("MFLOPs 224x224 imagenet", "right"), ("paper", "left")]:
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(row.name, row.family, f"{row.params_m:.2f}", f"{row.mflops_cifar:,.0f}",
                      f"{row.mflops_imagenet:,.0f}", row.paper)
    console = Console()
    if not console.is_terminal:  # piped to a file: no wrapping at 80 columns
        console = Console(width=220)
    console.print(table)
