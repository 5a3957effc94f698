"""The README and the docs pages: every relative link leads to a file, every command shown is one the CLI has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from zoo_lightning.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_leads_to_a_file(page):
    targets = [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to files that are not there: {missing}"


def test_the_readme_names_only_docs_pages_that_exist():
    named = set(re.findall(r"docs/[\w.-]+\.md", (ROOT / "README.md").read_text()))
    assert named and all((ROOT / name).is_file() for name in named), sorted(named)


def _commands(page: Path) -> list[list[str]]:
    """The command lines of a page's code: indented blocks and fenced shell blocks (continuations joined)."""
    text = page.read_text()
    blocks = re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", text, flags=re.S)
    blocks += [
        "\n".join(line.strip() for line in block.splitlines()) for block in re.findall(r"(?:\n {4,}\S.*)+", text)
    ]
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("  #")[0], comments=True) if line.strip() else []
            if words:
                lines.append(words)
    return lines


def test_every_command_in_the_readme_is_one_the_cli_has():
    calls = [words for words in _commands(ROOT / "README.md") if "zoo_lightning" in words or "train.py" in words]
    assert len(calls) >= 10
    for words in calls:
        after = words[words.index("zoo_lightning" if "zoo_lightning" in words else "train.py") + 1 :]
        assert after and after[0] in COMMANDS, f"not a command of the CLI: {' '.join(words)}"
