"""The command line as the parsers read it: configs found by name, config files checked, refusals in one line.

Every command parses its arguments once, with a jsonargparse parser; ``--config`` is
:class:`ConfigFile`, which takes a shipped config's name as well as a path, and a refused option is
turned into one line by :func:`one_line` from the error jsonargparse raised.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

__all__ = ["CONFIG_DIR", "DEFAULTS", "ConfigFile", "Parser", "OneLineErrors", "resolve_config", "read_config_file",
           "shipped_configs", "one_line", "closest"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULTS = CONFIG_DIR / "defaults.yaml"  # the recipe every fit starts from; configs give what differs


def shipped_configs() -> list[str]:
    """The names of the configs shipped in ``configs/`` (without the defaults every run starts from)."""
    return sorted(p.name for p in CONFIG_DIR.glob("*.yaml") if p != DEFAULTS)


def closest(word: str, choices: list[str], n: int = 3) -> list[str]:
    """The choices that look most like ``word`` (a misspelling), best first."""
    return difflib.get_close_matches(word, choices, n=n, cutoff=0.6)


def resolve_config(value: str | Path) -> Path:
    """``value`` itself when it is a file, else the shipped ``configs/<value>`` (``.yaml`` optional).

    Raises:
        FileNotFoundError: neither exists; the message names the shipped configs it resembles.
    """
    path = Path(value)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml", CONFIG_DIR / path.name):
        if candidate.is_file():
            return candidate
    name = path.name if path.suffix else f"{path.name}.yaml"
    near = closest(name, shipped_configs())
    hint = f"did you mean {' or '.join(near)}? " if near else ""
    raise FileNotFoundError(f"Config {str(value)!r} not found, neither as a file nor among the shipped configs: "
                            f"{hint}`python -m zoo_lightning fit --help` says where they are; a path to your own "
                            "YAML works too.")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping a config file holds, or a one-line error naming the file and what is wrong with it."""
    import yaml

    try:
        content = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
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


class ConfigFile(ActionConfigFile):
    """``--config``: a YAML file, or the name of a shipped config (``resnet20_cifar.yaml``, ``.yaml`` optional).

    The file is checked before jsonargparse reads it, so an empty file, a list or a YAML error is one line
    naming the file, not a parse error of the first key.
    """

    def __call__(self, parser: Any, cfg: Any, values: Any, option_string: str | None = None) -> None:
        path = resolve_config(values)
        read_config_file(path)
        super().__call__(parser, cfg, str(path), option_string)


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return chain


_KEY_PREFIX = 'Parser key "'


def one_line(error: BaseException) -> str:
    """A refused option as one line: ``--data.pipeline.padding_mode: <reason>``.

    jsonargparse raises each nested level (data, its pipeline, the pipeline's option) from the one below,
    each starting with the key it checked; the innermost exception says why the value was refused. The
    dotted option comes from those keys, the reason from the innermost exception. Anything else (an
    error raised in our own code) is its first line.
    """
    chain = _chain(error)
    keys: list[str] = []
    for level in chain:
        first = str(level).strip().splitlines()[0] if str(level).strip() else ""
        if first.startswith(_KEY_PREFIX) and first.endswith('":'):
            key = first[len(_KEY_PREFIX):-2]
            if not keys or keys[-1] != key:
                keys.append(key)
    if not keys:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"--{'.'.join(keys)}: {_reason(str(chain[-1]))}"


def _reason(message: str) -> str:
    """The line of a refusal that says what was wrong: jsonargparse's union reports list one per subtype."""
    lines = [line.strip().removeprefix("- ") for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return message
    # A union (e.g. Optional[X]) reports each subtype; the one that is not "Expected a NoneType" says why.
    specific = [line for line in lines if line.startswith(("Not of type", "Expected a", "Option ", "Problem", "Unknown",
                                                           "Import", "Does not", "Got"))
                and "NoneType" not in line]
    chosen = next((line for line in specific if not line.startswith("Does not validate")), lines[0])
    return chosen.rstrip(":")


class OneLineErrors:
    """A jsonargparse parser whose refusal of an option is one line naming it and the reason (:func:`one_line`),
    with exit status 2, instead of jsonargparse's nested report."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error:
            return super().error(message, ex)  # jsonargparse trying one parse of several
        prog = self.prog.replace(" [options]", "")
        reason = one_line(ex) if ex is not None else message
        sys.stderr.write(f"error: {reason}. `{prog} --help` lists the options.\n")
        self.exit(2)


class Parser(OneLineErrors, ArgumentParser):
    """jsonargparse's ArgumentParser with one-line errors."""
