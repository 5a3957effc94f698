"""``python -m zoo_lightning export``: a trained checkpoint as a standalone model file.

    python -m zoo_lightning export --ckpt_path RUN/checkpoints/best.ckpt --format torchscript
    python -m zoo_lightning export --ckpt_path RUN/checkpoints/best.ckpt --format exported_program --out model.pt2

The exported model takes uint8 NCHW images at the training input size and returns logits; the
normalization statistics of the training data are built in, so neither this project nor the
dataset is needed to use it (``torch.jit.load`` or ``torch.export.load``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["StandaloneClassifier", "checkpoint_data_state", "load_standalone", "export", "main"]

FORMATS = {"torchscript": ".ts", "exported_program": ".pt2"}


class StandaloneClassifier(nn.Module):
    """uint8 images -> logits: scales to [0, 1], normalizes with the training statistics, classifies."""

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        # Folding the /255 into the statistics saves one pass over the batch.
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, -1, 1, 1)))
        self.register_buffer("shift", torch.tensor(mean).view(1, -1, 1, 1) / torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.backbone(images.float() * self.scale - self.shift)


def checkpoint_data_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The DataModule state a checkpoint carries (mean, std, class_names, image_size)."""
    for value in checkpoint.values():
        if isinstance(value, dict) and {"mean", "std"} <= value.keys():
            return value
    raise ValueError(
        "The checkpoint holds no normalization statistics (mean/std): it was not written by "
        "`python -m zoo_lightning fit` with a zoo_lightning DataModule."
    )


def load_standalone(ckpt_path: str | Path) -> tuple[StandaloneClassifier, dict[str, Any]]:
    from zoo_lightning.classifier import ImageClassifier
    from zoo_lightning.cli import read_checkpoint

    path = Path(ckpt_path)
    checkpoint = read_checkpoint(str(path))
    data_state = checkpoint_data_state(checkpoint)
    module = ImageClassifier.load_from_checkpoint(path, map_location="cpu").eval()
    return StandaloneClassifier(module.backbone, tuple(data_state["mean"]), tuple(data_state["std"])).eval(), data_state


def export(ckpt_path: str | Path, format: str = "torchscript", out: str | Path | None = None) -> Path:
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}: choose one of {', '.join(FORMATS)}.")
    model, data_state = load_standalone(ckpt_path)
    size = int(data_state.get("image_size", 32))
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        output = model(example)
    if not isinstance(output, Tensor):
        raise ValueError(
            "The model returns several outputs in eval mode (auxiliary heads on); export needs one logits "
            "tensor. Rebuild it with backbone_kwargs {aux_logits: false} or keep heads training-only."
        )
    out = Path(out) if out else Path(ckpt_path).with_suffix(FORMATS[format])
    with torch.no_grad():
        if format == "torchscript":
            torch.jit.save(torch.jit.trace(model, example), str(out))
        else:
            batch = torch.export.Dim("batch", min=1)
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(out))
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo_lightning export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `fit`")
    parser.add_argument("--format", default="torchscript", choices=list(FORMATS))
    parser.add_argument("--out", default=None, help="output file (default: beside the checkpoint)")
    args = parser.parse_args(argv)
    out = export(args.ckpt_path, args.format, args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): uint8 NCHW images in, logits out")
