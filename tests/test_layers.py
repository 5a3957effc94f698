"""Imports go one way: commands on top, then the module, callbacks, data and objectives, then models.

Read from the source with ``ast`` (imports inside functions count too), so a lazy import cannot
hide an upward dependency or a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "zoo_lightning"

# Lowest first. A module may import from a lower layer, or from its own package of the same layer.
LAYERS = [
    [
        "zoo_lightning",
        "zoo_lightning.files",
        "zoo_lightning.batch",
        "zoo_lightning.metric_names",
        "zoo_lightning.progress",
        "zoo_lightning.parsing",
        "zoo_lightning.hardware",
        "zoo_lightning.options",
        "zoo_lightning.signals",
    ],
    ["zoo_lightning.runs", "zoo_lightning.studies"],
    ["zoo_lightning.models"],
    [
        "zoo_lightning.checkpoints",
        "zoo_lightning.schedulers",
        "zoo_lightning.figures",
        "zoo_lightning.optimization",
        "zoo_lightning.optimizers",
        "zoo_lightning.tta",
    ],
    ["zoo_lightning.pretrained"],
    ["zoo_lightning.data", "zoo_lightning.objectives"],
    # Above the data: some callbacks need the DataModule contract (training images, class names, predict paths).
    ["zoo_lightning.callbacks"],
    ["zoo_lightning.classifier"],
    ["zoo_lightning.commands", "zoo_lightning.cli"],
    ["zoo_lightning.__main__"],
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _home(module: str) -> tuple[int, str]:
    """(layer, group) of a module: the longest group name it falls under."""
    best = None
    for layer, groups in enumerate(LAYERS):
        for group in groups:
            inside = module == group or (group != "zoo_lightning" and module.startswith(group + "."))
            if inside and (best is None or len(group) > len(best[1])):
                best = (layer, group)
    assert best is not None, f"{module} is in no layer of tests/test_layers.py: add it"
    return best


def _imports(path: Path) -> set[str]:
    found = set()
    module = _module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level + (path.name == "__init__.py") or None]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "zoo_lightning" or name.startswith("zoo_lightning.")}


def _existing(name: str) -> str | None:
    """The module an imported name refers to (``from a.b import c`` may name a function c)."""
    parts = name.split(".")
    while parts:
        candidate = PACKAGE.parent.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return None


GRAPH = {
    _module_name(p): {m for n in _imports(p) if (m := _existing(n))} - {_module_name(p)}
    for p in sorted(PACKAGE.rglob("*.py"))
}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_one_above_it_or_beside_it(module):
    layer, group = _home(module)
    for target in GRAPH[module]:
        if target == "zoo_lightning":
            continue
        target_layer, target_group = _home(target)
        assert target_layer < layer or target_group == group, (
            f"{module} (layer {layer}, {group}) imports {target} (layer {target_layer}, {target_group})"
        )


def test_no_import_circles():
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail("import circle: " + " -> ".join(path[path.index(module) :] + [module]))
        if module in done:
            return
        for target in GRAPH.get(module, ()):
            visit(target, path + [module])
        done.add(module)

    for module in GRAPH:
        visit(module, [])


def test_the_module_never_imports_the_data_and_the_data_never_the_models():
    def reaches(start: str, prefix: str, seen: set[str] | None = None) -> bool:
        seen = set() if seen is None else seen
        for target in GRAPH.get(start, ()):
            if target.startswith(prefix):
                return True
            if target not in seen:
                seen.add(target)
                if reaches(target, prefix, seen):
                    return True
        return False

    assert not reaches("zoo_lightning.classifier", "zoo_lightning.data")
    for module in GRAPH:
        if module.startswith("zoo_lightning.data"):
            assert not reaches(module, "zoo_lightning.models"), module
        if module.startswith("zoo_lightning.models"):
            assert all(t.startswith("zoo_lightning.models") for t in GRAPH[module]), module
