"""``python -m zoo_lightning models [PATTERN]``: the registry as a table of parameters and FLOPs."""

from __future__ import annotations

import argparse

__all__ = ["main"]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo_lightning models", description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    pattern = parser.parse_args(argv).pattern
    from zoo_lightning.models.summary import print_model_table

    print_model_table(pattern)
