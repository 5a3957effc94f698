"""The command line as the parsers read it: configs found by name, config files checked, refusals in one line.

Every command parses its arguments once, with a jsonargparse parser; ``--config`` is
:class:`ConfigFile`, which takes a shipped config's name as well as a path, and a refused option is
turned into one line by :func:`one_line` from the error jsonargparse raised.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import ActionConfigFile, ArgumentParser

__all__ = [
    "CONFIG_DIR",
    "DEFAULTS",
    "ConfigFile",
    "Parser",
    "OneLineErrors",
    "resolve_config",
    "read_config_file",
    "shipped_configs",
    "one_line",
    "closest",
    "CommandParser",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULTS = CONFIG_DIR / "defaults.yaml"  # the recipe every fit starts from; configs give what differs


# Options the parsers add as actions of their own rather than as values (jsonargparse's and LightningCLI's).
PARSER_FLAGS = frozenset({"help", "print_config", "config", "print_shtab"})


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
    raise FileNotFoundError(
        f"Config {str(value)!r} not found, neither as a file nor among the shipped configs: "
        f"{hint}`python -m zoo_lightning fit --help` says where they are; a path to your own "
        "YAML works too."
    )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping a config file holds, or a one-line error naming the file and what is wrong with it."""
    import yaml

    try:
        content = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ValueError(
            f"Config {path} is not valid YAML{where}: {problem}. Fix the file, or start from a "
            "shipped config (`python -m zoo_lightning fit --config resnet20_cifar.yaml --print_config`)."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read config {path}: {error}.") from None
    if content is None:
        raise ValueError(
            f"Config {path} is empty: give at least one section (trainer:, model:, data:), or leave "
            "--config out to train with the defaults."
        )
    if not isinstance(content, dict):
        raise ValueError(
            f"Config {path} holds a {type(content).__name__}, not a mapping of sections (trainer:, model:, data:, ...)."
        )
    return content


class ConfigFile(ActionConfigFile):
    """``--config``: a YAML file, or the name of a shipped config (``resnet20_cifar.yaml``, ``.yaml`` optional).

    The file is checked before jsonargparse reads it, so an empty file, a list or a YAML error is one line
    naming the file, not a parse error of the first key.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        cfg: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        path = resolve_config(str(values))  # --config takes one value, a string
        read_config_file(path)
        super().__call__(parser, cfg, str(path), option_string)


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    level: BaseException | None = error
    while level is not None and level not in chain:
        chain.append(level)
        level = level.__cause__ or (None if level.__suppress_context__ else level.__context__)
    return chain


def _raised_by_parser(error: BaseException) -> bool:
    """Whether jsonargparse raised ``error`` itself (to report another one), rather than a type or a constructor."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and "jsonargparse" in Path(frame.tb_frame.f_code.co_filename).parts


_KEY_PREFIX = 'Parser key "'


def one_line(error: BaseException) -> str:
    """A refused option as one line: ``--data.pipeline.padding_mode: <reason>``.

    jsonargparse reports a refusal by raising, at each nested level (the data, its pipeline, the pipeline's
    option), a new exception from the one below, each starting with the key it checked. The option is
    those keys joined; the reason is the first exception down the chain that jsonargparse did not raise
    to report another (a type's or a constructor's own message), else jsonargparse's innermost one.
    An error of our own code keeps its message.
    """
    keys: list[str] = []
    reason = error
    for level in _chain(error):
        reason = level
        if not _raised_by_parser(level):
            break
        first = str(level).strip().splitlines()[0] if str(level).strip() else ""
        key = first[len(_KEY_PREFIX) : -2] if first.startswith(_KEY_PREFIX) and first.endswith('":') else None
        if key and (not keys or keys[-1] != key):
            keys.append(key)
        if _is_union_report(str(level)):
            break
    text = _reason(str(reason)) if _raised_by_parser(reason) else _first_line(reason)
    return f"--{'.'.join(keys)}: {text}" if keys else text


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _tried(message: str) -> list[str]:
    """The lines of a jsonargparse report that each say why one type refused the value (None's left out)."""
    lines = [line.strip().removeprefix("- ") for line in message.strip().splitlines() if line.strip()]
    return [
        line
        for line in lines
        if line.startswith(("Not of type", "Expected a", "Option ", "Problem", "Import")) and "NoneType" not in line
    ]


def _is_union_report(message: str) -> bool:
    """A report of several types refusing one value (e.g. a count or a fraction): it says more than any one."""
    return len(_tried(message)) > 1 and all(line.startswith("Not of type ") for line in _tried(message))


def _reason(message: str) -> str:
    """The line of jsonargparse's own report that says what was wrong: a union lists one line per type it tried."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    tried = _tried(message)
    if _is_union_report(message):
        parts = [line.removeprefix("Not of type ").split(": ", 1) for line in tried]
        return " and ".join(f"{why} ({kind})" for kind, why in parts)
    return (tried[0] if tried else lines[0] if lines else message).rstrip(":")


class OneLineErrors(argparse.ArgumentParser):
    """A parser (jsonargparse's, or argparse's) whose refusal of an option is one line naming it and the reason
    (:func:`one_line`), with exit status 2, instead of jsonargparse's nested report or argparse's usage."""

    args_given: list[str] | None = None  # the command line being parsed, for suggestions when an option is unknown

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # the caller handles the error (jsonargparse trying one parse of several)
            if isinstance(self, ArgumentParser):
                ArgumentParser.error(self, message, ex)  # jsonargparse's raises an ArgumentError from ex
            super().error(message)  # argparse's takes no exception
        prog = self.prog.replace(" [options]", "")
        reason = f"{one_line(ex) if ex is not None else message.rstrip('.')}{self.suggestions()}"
        sys.stderr.write(f"error: {reason}{'' if reason.endswith('?') else '.'} `{prog} --help` lists the options.\n")
        self.exit(2)

    def suggestions(self) -> str:
        """``; did you mean --trainer.max_epochs?`` for each option of :attr:`args_given` that the parser does not
        know and that resembles one it does (its defaults name them all; a class's own options, chosen by
        class path, are left to the parser)."""
        if not self.args_given or not isinstance(self, ArgumentParser):
            return ""
        known = sorted({key.replace(".init_args.", ".") for key in self.get_defaults().keys()})
        hints = []
        for arg in self.args_given:
            name = arg.split("=", 1)[0].removeprefix("--").rstrip("+")
            if not arg.startswith("--") or name in known or any(name.startswith(f"{k}.") for k in known):
                continue
            if name in PARSER_FLAGS:  # the parser's own actions, which hold no value among the defaults
                continue
            near = closest(name, known, n=1)
            if near:
                hints.append(f"did you mean --{near[0]} (not --{name})?")
        return "".join(f"; {hint}" for hint in hints)


class Parser(OneLineErrors, ArgumentParser):
    """jsonargparse's ArgumentParser with one-line errors."""


class CommandParser(OneLineErrors, argparse.ArgumentParser):
    """argparse's parser, for commands whose options are their own, with one-line errors."""
