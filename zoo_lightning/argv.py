"""Command-line helpers every command shares: finding a shipped config, reading an option's value."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["CONFIG_DIR", "DEFAULTS", "resolve_config", "resolve_config_args", "option_value", "config_files",
           "check_config_file", "one_line"]

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


def option_value(argv: list[str], *names: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``argv`` for any of ``names`` (spellings of one
    option; the last one given wins), else None."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg.startswith(f"{name}="):
                value = arg.split("=", 1)[1]
            elif arg == name and i + 1 < len(argv):
                value = argv[i + 1]
    return value


def config_files(argv: list[str]) -> list[str]:
    """The values of every ``--config`` in ``argv``, in order."""
    found = []
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            found.append(arg.split("=", 1)[1])
        elif arg == "--config" and i + 1 < len(argv):
            found.append(argv[i + 1])
    return found


def check_config_file(path: str) -> dict:
    """The mapping a config file holds, or a one-line error naming the file and what is wrong with it.

    A missing file is left to the parser, whose message names it; a YAML error names the line.
    """
    import yaml

    file = Path(path)
    if not file.is_file():
        return {}
    try:
        content = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"Config {path} is not valid YAML{where}: {problem}. Fix the file, or start from a "
                         "shipped config (`python -m zoo_lightning fit --config resnet20_cifar.yaml --print_config`).")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read config {path}: {error}.") from None
    if content is None:
        raise ValueError(f"Config {path} is empty: give at least one section (trainer:, model:, data:), or leave "
                         "--config out to train with the defaults.")
    if not isinstance(content, dict):
        raise ValueError(f"Config {path} holds a {type(content).__name__}, not a mapping of sections "
                         "(trainer:, model:, data:, ...).")
    return content


# jsonargparse's scaffolding around the one reason an option was refused.
_SCAFFOLD = re.compile(r"^(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Given value( type)?:"
                       r"|- Expected a <class 'NoneType'>|- Problem with given class_path|Parser key \")")


def one_line(message: str) -> str:
    """jsonargparse's many-line report of a refused option (nested once per subclass level) as one line.

    ``Parser key "data": ... Option 'batchsize' is not accepted ...`` becomes
    ``--data: Option 'batchsize' is not accepted``; an error raised inside a constructor (wrapped in
    the same report) comes out as its own message.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return message.strip()
    keys = re.findall(r'Parser key "([^"]+)"', message)
    reasons = [line.removeprefix("- ") for line in lines[1:] if not _SCAFFOLD.match(line)]
    choices = [c for r in reasons for c in re.findall(r"Expected a typing\.Literal\[(.*)\]", r)]
    if choices:
        given = re.search(r"Given value: (.*)", message)
        reason = f"choose one of {', '.join(choices)}" + (f"; got {given.group(1).strip()}" if given else "")
    elif reasons:
        reason = re.sub(r"^Type .* expects a function or a callable class: ", "", reasons[-1])
        reason = re.sub(r"\. Got value: Namespace\(.*$", "", reason)
    else:
        return lines[0]
    reason = re.sub(r"<class '([\w.]+)'>", r"\1", reason)
    return f"--{'.'.join(keys)}: {reason}" if keys else reason
