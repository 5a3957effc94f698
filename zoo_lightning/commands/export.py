"""``python -m zoo_lightning export``: a trained checkpoint as a standalone model file.

    python -m zoo_lightning export --ckpt_path RUN/checkpoints/best.ckpt
    python -m zoo_lightning export --ckpt_path RUN/checkpoints/best.ckpt --format onnx
    python -m zoo_lightning export --ckpt_path RUN/checkpoints/best.ckpt --format torchscript

The exported model takes uint8 NCHW images at the training input size, any batch size, and returns
logits; the normalization statistics of the training data are built in, so neither this project nor
the dataset is needed to use it (``torch.export.load``, ONNX Runtime, or ``torch.jit.load``). Each file
carries what a user of it needs besides the graph (class names, input size, mean and std): in the ONNX
model's metadata, and as ``zoo_lightning.json`` in the extra files of a ``.pt2`` or TorchScript file.
``exported_program`` (``.pt2``) is the default: PyTorch deprecates TorchScript.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch import Tensor, nn

from zoo_lightning.checkpoints import datamodule_state, load_backbone
from zoo_lightning.data.transforms import Normalize
from zoo_lightning.files import atomic_write
from zoo_lightning.parsing import CommandParser

__all__ = [
    "FORMATS",
    "METADATA_FILE",
    "StandaloneClassifier",
    "load_standalone",
    "require_onnx",
    "model_card",
    "onnx_metadata",
    "save_onnx",
    "export",
    "main",
]

FORMATS = {"torchscript": ".ts", "exported_program": ".pt2", "onnx": ".onnx"}
ONNX_INSTALL = "`.venv/bin/pip install -c constraints.txt -e '.[onnx]'`"


class StandaloneClassifier(nn.Module):
    """uint8 images -> logits: the training data's normalization, then the backbone."""

    def __init__(self, backbone: nn.Module, normalize: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone

    def forward(self, images: Tensor) -> Tensor:
        return self.backbone(self.normalize(images))


def load_standalone(ckpt_path: str | Path) -> tuple[StandaloneClassifier, dict[str, Any]]:
    """The checkpoint's backbone behind its training normalization, and the DataModule state it carries."""
    backbone, checkpoint = load_backbone(ckpt_path)
    state = datamodule_state(checkpoint)
    if state is None or state.get("mean") is None:
        raise ValueError(
            "The checkpoint holds no normalization statistics (mean/std): it was not written by "
            "`python -m zoo_lightning fit` with a zoo_lightning DataModule."
        )
    model = StandaloneClassifier(backbone, Normalize(state["mean"], state["std"]))
    # Inference only: outputs that require grad would refuse `.numpy()` in the user's code.
    return model.eval().requires_grad_(False), state


def _target(ckpt_path: str | Path, format: str, out: str | Path | None, overwrite: bool) -> Path:
    """Where the export goes: ``--out``, or beside the checkpoint; never over a file unless asked."""
    target = Path(out) if out else Path(ckpt_path).with_suffix(FORMATS[format])
    if target.is_dir():
        raise IsADirectoryError(
            f"--out {str(target)!r} is a folder: give a file name, e.g. {target / ('model' + FORMATS[format])}."
        )
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists already: pass --overwrite to replace it, or another --out.")
    return target


def require_onnx() -> None:
    """Raises a one-line ValueError naming the extra to install when the ONNX exporter's packages are missing."""
    try:
        import onnx  # noqa: F401  (torch.onnx's dynamo exporter writes through onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as error:  # not installed, or installed but broken: say which
        raise ValueError(
            f"--format onnx needs the onnx extra, which failed to import ({type(error).__name__}: "
            f"{error}). Install it with {ONNX_INSTALL}."
        ) from None


METADATA_FILE = "zoo_lightning.json"  # the extra file of a .pt2 or TorchScript export that holds :func:`model_card`


class ModelCard(TypedDict):
    """:func:`model_card`: what an exported model's user needs besides the graph."""

    class_names: list[str]
    image_size: int
    input: str
    mean: list[float]
    std: list[float]


def model_card(data_state: dict[str, Any]) -> ModelCard:
    """What an exported model's user needs besides the graph: the class names, the input and its statistics."""
    return {
        "class_names": [str(name) for name in data_state.get("class_names") or []],
        "image_size": int(data_state.get("image_size", 32)),
        "input": "uint8 NCHW RGB images, any batch size; the normalization is inside the model",
        "mean": [float(v) for v in data_state["mean"]],
        "std": [float(v) for v in data_state["std"]],
    }


def onnx_metadata(data_state: dict[str, Any]) -> dict[str, str]:
    """:func:`model_card` as ONNX metadata, whose values are strings: lists as JSON."""
    return {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in model_card(data_state).items()
    }


def save_onnx(model: nn.Module, example: Tensor, target: Path, metadata: dict[str, str]) -> None:
    """``model`` through ``torch.onnx.export(dynamo=True)`` with a dynamic batch, ``metadata`` in the ONNX model."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        dynamic_shapes=({0: batch},),
        input_names=["images"],
        output_names=["logits"],
        verbose=False,
    )
    assert program is not None  # torch returns None only for the TorchScript exporter (dynamo=False)
    program.model.metadata_props.update(metadata)
    atomic_write(target, lambda tmp: program.save(str(tmp)))


def export(
    ckpt_path: str | Path, format: str = "exported_program", out: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Writes the standalone model of ``ckpt_path`` in ``format``; returns the file written.

    The file is written beside its target and renamed into place, parent folders created; an
    existing file is replaced only with ``overwrite``.
    """
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}: choose one of {', '.join(FORMATS)}.")
    if format == "onnx":
        require_onnx()
    target = _target(ckpt_path, format, out, overwrite)
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
    extra = {METADATA_FILE: json.dumps(model_card(data_state))}
    with torch.no_grad():
        if format == "torchscript":
            with warnings.catch_warnings():  # chosen knowingly: main() says once that PyTorch deprecates it
                warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
                traced = torch.jit.trace(model, example)
                atomic_write(target, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))
        elif format == "onnx":
            save_onnx(model, example, target, onnx_metadata(data_state))
        else:
            batch = torch.export.Dim("batch", min=1)
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            atomic_write(target, lambda tmp: torch.export.save(program, str(tmp), extra_files=extra))
    return target


def format_for(format: str | None, out: str | None) -> str:
    """The format ``--format`` names, else the one ``--out``'s suffix names, else ``exported_program``; a format
    whose suffix differs from ``--out``'s is refused (the file would not be what its name says)."""
    by_suffix = {suffix: name for name, suffix in FORMATS.items()}
    named = by_suffix.get(Path(out).suffix) if out else None
    if format is None:
        return named or "exported_program"
    if named is not None and named != format:
        raise ValueError(
            f"--out {out} names a {named} file, and --format is {format}: give --out with "
            f"{FORMATS[format]}, or leave --format out."
        )
    return format


def main(argv: list[str]) -> None:
    parser = CommandParser(
        prog="python -m zoo_lightning export",
        description=__doc__,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `fit`")
    parser.add_argument(
        "--format",
        choices=list(FORMATS),
        help="exported_program (.pt2, the default), onnx, or torchscript (deprecated by PyTorch); "
        "by default the one --out's suffix names",
    )
    parser.add_argument("--out", default=None, help="output file (default: beside the checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    args.format = format_for(args.format, args.out)
    if args.format == "torchscript":
        print(
            "note: PyTorch deprecates TorchScript; --format exported_program (the default) or onnx will last.",
            file=sys.stderr,
        )
    out = export(args.ckpt_path, args.format, args.out, args.overwrite)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): uint8 NCHW images in, logits out")
