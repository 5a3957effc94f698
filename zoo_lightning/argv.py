"""Command-line helpers every command shares: finding a shipped config, reading an option's value."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_DIR", "DEFAULTS", "resolve_config", "resolve_config_args", "option_value"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULTS = CONFIG_DIR / "defaults.yaml"  # the recipe every fit starts from; configs give what differs


def resolve_config(value: str) -> str:
    """``value`` itself when it is a file, else the shipped ``configs/<value>`` (``.yaml`` optional)."""
    if Path(value).exists():
        return value
    for candidate in (CONFIG_DIR / value, CONFIG_DIR / f"{value}.yaml", CONFIG_DIR / Path(value).name):
        if candidate.is_file():
            return str(candidate)
    return value


def resolve_config_args(argv: list[str]) -> list[str]:
    """Every ``--config NAME`` / ``--config=NAME`` in ``argv`` with NAME resolved by :func:`resolve_config`."""
    resolved = list(argv)
    for i, arg in enumerate(resolved):
        if arg.startswith("--config="):
            resolved[i] = "--config=" + resolve_config(arg.split("=", 1)[1])
        elif arg == "--config" and i + 1 < len(resolved):
            resolved[i + 1] = resolve_config(resolved[i + 1])
    return resolved


def option_value(argv: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``argv`` (the last one wins), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
        elif arg == name and i + 1 < len(argv):
            value = argv[i + 1]
    return value
