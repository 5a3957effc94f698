"""``python -m zoo_lightning stats``: the per-channel normalization statistics of a DataModule's training part.

python -m zoo_lightning stats --config resnet18_stl10.yaml --data.init_args.data_dir data
python -m zoo_lightning stats --data.class_path zoo_lightning.data.CIFAR10DataModule --data.init_args.data_dir data
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str]) -> None:
    from zoo_lightning.data import ImageDataModule
    from zoo_lightning.parsing import DEFAULTS, ConfigFile, Parser

    # The shipped defaults first, as fit reads them, so a config that gives only what differs works here too.
    parser = Parser(prog="python -m zoo_lightning stats", description=__doc__, default_config_files=[str(DEFAULTS)])
    parser.add_argument(
        "--config", action=ConfigFile, help="a data-only YAML, or a full fit config (a path or a shipped config's name)"
    )
    parser.add_subclass_arguments(ImageDataModule, "data", required=True)
    # A fit config also holds trainer/model sections: accepted and ignored here.
    for section in ("trainer", "model", "seed_everything", "ckpt_path", "optimizer", "lr_scheduler"):
        parser.add_argument(f"--{section}", type=object, default=None, help="ignored")
    config = parser.parse_args(argv)
    data = parser.instantiate_classes(config).data
    data.prepare_data()
    mean, std = data.stats()
    print(f"{type(data).__name__} at {data.data_dir} (training part of the split, per channel R, G, B):")
    print(f"  mean = ({', '.join(f'{v:.5f}' for v in mean)})")
    print(f"  std  = ({', '.join(f'{v:.5f}' for v in std)})")
