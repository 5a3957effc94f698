"""No module of the package uses a private name of torch, torchvision, Lightning, jsonargparse or tensorboard.

A name with a leading underscore in a library is not part of its API: it can change or vanish in any
release. The walker reads every ``.py`` file under ``zoo_lightning/`` and reports:

- an import of a private name or a private submodule of those libraries
  (``from torch.nn.modules.batchnorm import _NormBase``, ``import jsonargparse._util``);
- an attribute chain from an imported library name through a private part
  (``nn.modules.batchnorm._NormBase``, ``lightning.fabric.connector._PRECISION_INPUT``);
- any other ``x._name`` (``self._trainer``, ``super()._copy_average_to_current``, ``getattr(x, "_name")``)
  whose ``_name`` the package itself never defines: such a name can only come from a library;
- ``self._name`` in a class whose library parent defines ``_name``, even where we assign it
  (``self._latest_update_step = step`` in a ``WeightAveraging`` subclass).

Dunder names (``__init__``) are Python's, not private. Each finding is printed as ``path:line: name``.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import textwrap

from tests.helpers import ROOT

PACKAGE = ROOT / "zoo_lightning"
LIBRARIES = frozenset(
    {
        "torch",
        "torchvision",
        "lightning",
        "pytorch_lightning",
        "lightning_fabric",
        "lightning_utilities",
        "jsonargparse",
        "tensorboard",
    }
)
ATTRIBUTE_BUILTINS = frozenset({"getattr", "hasattr", "setattr", "delattr"})


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_library(module: str) -> bool:
    return module.split(".", 1)[0] in LIBRARIES


def _first_private(dotted: str) -> bool:
    return any(is_private(part) for part in dotted.split("."))


def _targets(node: ast.AST) -> list[str]:
    """The plain names an assignment target binds (``a``, ``a, b``, ``[a, *b]``)."""
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


def _bindings(body: list[ast.stmt]) -> set[str]:
    """Names a module or class body binds at its own level, inside if/try/with/for blocks included."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue  # their names are collected with every definition, their bodies are not this level
        if isinstance(node, ast.Assign):
            names.update(n for target in node.targets for n in _targets(target))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
            names.update(_targets(node.target))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        blocks = [getattr(node, block, []) for block in ("body", "orelse", "finalbody")]
        for block in blocks + [handler.body for handler in getattr(node, "handlers", [])]:
            names |= _bindings(block)
    return names


def defined_names(trees: list[ast.Module]) -> set[str]:
    """Every name the package defines: functions, classes, their arguments, attributes it assigns
    (``self._x = ...``), class-level and module-level names."""
    names: set[str] = set()
    for tree in trees:
        names |= _bindings(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= _bindings(node.body)
            elif isinstance(node, ast.arguments):
                every = [*node.posonlyargs, *node.args, *node.kwonlyargs, node.vararg, node.kwarg]
                names.update(arg.arg for arg in every if arg is not None)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return names


def _library_imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted library path it stands for (``nn`` -> ``torch.nn``), from the file's imports."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_library(alias.name):
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        bound[top] = top
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module and _is_library(node.module):
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _chain(node: ast.Attribute) -> tuple[str, list[str]] | None:
    """(root name, attributes) of ``a.b.c``; None when the chain starts at a call, subscript, ..."""
    parts = []
    value: ast.expr = node
    while isinstance(value, ast.Attribute):
        parts.append(value.attr)
        value = value.value
    return (value.id, parts[::-1]) if isinstance(value, ast.Name) else None


def _private_imports(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_library(a.name) and _first_private(a.name)]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module and _is_library(node.module):
            found += [
                (node.lineno, f"{node.module}.{a.name}")
                for a in node.names
                if _first_private(node.module) or is_private(a.name)
            ]
    return found


def _private_attributes(tree: ast.Module, bound: dict[str, str], ours: set[str]) -> list[tuple[int, str]]:
    """Chains through a private part of a library, and ``x._name`` (or ``getattr(x, "_name")``) not ours."""
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}  # a chain is reported once
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain and chain[0] in bound:  # a library's module or class: every part of the chain is the library's
                parts = bound[chain[0]].split(".") + chain[1]
                private = next((i for i, part in enumerate(parts) if is_private(part)), None)
                if id(node) not in inner and private is not None:
                    found.append((node.lineno, ".".join(parts[: private + 1])))
            elif is_private(node.attr) and node.attr not in ours:
                found.append((node.lineno, f"{ast.unparse(node.value)}.{node.attr}"))
        elif (attr := _getattr_name(node)) and is_private(attr) and attr not in ours:
            found.append((node.lineno, ast.unparse(node)))
    return found


def _getattr_name(node: ast.AST) -> str | None:
    """``"_name"`` of ``getattr(x, "_name")`` (or hasattr, setattr, delattr); None for anything else."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ATTRIBUTE_BUILTINS:
        if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            return node.args[1].value
    return None


@functools.cache
def _library_object(dotted: str) -> object | None:
    """The object a dotted library path names (``lightning.pytorch.callbacks.WeightAveraging``), None if none."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            found = getattr(found, part, None)
        return found
    return None


@functools.cache
def _library_class_privates(cls: type) -> frozenset[str]:
    """The private names a library class and its library bases define: members and ``self._x = ...`` attributes."""
    names: set[str] = set()
    for klass in inspect.getmro(cls):
        if not _is_library(klass.__module__):
            continue
        names.update(name for name in vars(klass) if is_private(name))
        try:
            source = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        names.update(
            n.attr
            for n in ast.walk(source)
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and is_private(n.attr)
        )
    return frozenset(names)


Classes = dict[str, list[tuple[ast.ClassDef, dict[str, str]]]]  # our class name -> (its node, its file's imports)


def _inherited_privates(
    node: ast.ClassDef, bound: dict[str, str], classes: Classes, seen: frozenset[int] = frozenset()
) -> frozenset[str]:
    """Private names ``node`` inherits from library classes, through our own classes too."""
    names: set[str] = set()
    for base in node.bases:
        if isinstance(base, ast.Name):
            chain: tuple[str, list[str]] | None = (base.id, [])
        else:
            chain = _chain(base) if isinstance(base, ast.Attribute) else None
        if chain is None:
            continue
        if chain[0] in bound:
            found = _library_object(".".join([bound[chain[0]], *chain[1]]))
            if isinstance(found, type):
                names |= _library_class_privates(found)
        elif not chain[1]:
            for parent, parent_bound in classes.get(chain[0], []):
                if id(parent) not in seen:
                    names |= _inherited_privates(parent, parent_bound, classes, seen | {id(node)})
    return frozenset(names)


def _inherited_uses(tree: ast.Module, bound: dict[str, str], classes: Classes) -> list[tuple[int, str]]:
    """``self._x`` and ``super()._x`` in a class whose library parent defines ``_x``, assigned by us or not."""
    found = []
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        inherited = _inherited_privates(cls, bound, classes)
        for node in ast.walk(cls):
            attr = node.attr if isinstance(node, ast.Attribute) else _getattr_name(node)
            target = node.value if isinstance(node, ast.Attribute) else node.args[0] if attr else None
            on_self = (
                isinstance(target, ast.Name)
                and target.id == "self"
                or (isinstance(target, ast.Call) and isinstance(target.func, ast.Name) and target.func.id == "super")
            )
            if attr in inherited and on_self:
                found.append((node.lineno, f"{ast.unparse(target)}.{attr}"))
    return found


def violations(sources: dict[str, str]) -> list[str]:
    """``path:line: name`` for each private name of the libraries that ``sources`` (path -> code) use."""
    trees = {path: ast.parse(code, filename=path) for path, code in sources.items()}
    ours = defined_names(list(trees.values()))
    bound = {path: _library_imports(tree) for path, tree in trees.items()}
    classes: Classes = {}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append((node, bound[path]))
    found = set()
    for path, tree in trees.items():
        for line, name in (
            _private_imports(tree)
            + _private_attributes(tree, bound[path], ours)
            + _inherited_uses(tree, bound[path], classes)
        ):
            found.add((path, line, name))
    return [f"{path}:{line}: {name}" for path, line, name in sorted(found)]


def package_sources() -> dict[str, str]:
    return {path.relative_to(ROOT).as_posix(): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


# --- the walker on small snippets ----------------------------------------------------------------------


def test_a_private_import_of_a_library_is_caught():
    found = violations(
        {
            "a.py": "from torch.nn.modules.batchnorm import _NormBase\n"
            "import jsonargparse._util\n"
            "from lightning.fabric.connector import _PRECISION_INPUT as P\n"
            "from torch.nn.modules.batchnorm import BatchNorm2d\n"
            "from . import _ours\n"
        }
    )
    assert found == [
        "a.py:1: torch.nn.modules.batchnorm._NormBase",
        "a.py:2: jsonargparse._util",
        "a.py:3: lightning.fabric.connector._PRECISION_INPUT",
    ]


def test_an_attribute_chain_through_a_private_part_of_a_library_is_caught():
    code = (
        "import lightning\nfrom torch import nn\n"
        "A = nn.modules.batchnorm._NormBase\nB = lightning.fabric.connector._PRECISION_INPUT\n"
        "C = nn.modules.batchnorm.BatchNorm2d\n"
    )
    assert violations({"a.py": code}) == [
        "a.py:3: torch.nn.modules.batchnorm._NormBase",
        "a.py:4: lightning.fabric.connector._PRECISION_INPUT",
    ]


def test_a_library_class_private_attribute_is_caught_even_when_we_define_the_name():
    code = (
        "from lightning.pytorch.callbacks import WeightAveraging\n"
        "class Ours:\n    _average_model = None\n"
        "x = WeightAveraging._average_model\n"
    )
    assert violations({"a.py": code}) == ["a.py:4: lightning.pytorch.callbacks.WeightAveraging._average_model"]


def test_our_own_private_attributes_are_allowed_and_inherited_ones_caught():
    ours = (
        "class Callback:\n"
        "    def __init__(self, _seed):\n        self._own = 1\n"
        "    def hook(self, trainer):\n"
        "        self._own += 1\n"
        "        return self._trainer, super()._copy_average_to_current(), trainer._own, self.__class__\n"
    )
    other = "from a import _helper\n_LIMIT = 3\ndef _helper():\n    return _LIMIT\nx = y._helper, z._LIMIT, w._seed\n"
    assert violations({"a.py": ours, "b.py": other}) == [
        "a.py:6: self._trainer",
        "a.py:6: super()._copy_average_to_current",
    ]


def test_a_private_attribute_of_a_library_parent_is_caught_even_when_we_assign_it():
    lookahead = (
        "from lightning.pytorch.callbacks import WeightAveraging\n"
        "class Lookahead(WeightAveraging):\n"
        "    def __init__(self):\n        self._own = 0\n"
        "    def hook(self):\n        self._latest_update_step = 1\n        return self._own\n"
    )
    child = "from a import Lookahead\nclass Child(Lookahead):\n    def hook(self):\n        return self._swap_models\n"
    assert violations({"a.py": lookahead, "b.py": child}) == [
        "a.py:6: self._latest_update_step",
        "b.py:4: self._swap_models",
    ]


def test_a_dunder_is_allowed_and_a_private_name_through_getattr_is_caught():
    code = "x = y.__dict__\nz = getattr(y, '_results')\nimport torch\nw = torch.__version__\n"
    assert violations({"a.py": code}) == ["a.py:2: getattr(y, '_results')"]


# --- the package ----------------------------------------------------------------------------------------


def test_the_walker_knows_the_private_names_the_package_defines():
    sources = package_sources()
    assert "zoo_lightning/cli.py" in sources and "zoo_lightning/models/registry.py" in sources
    ours = defined_names([ast.parse(code) for code in sources.values()])
    assert {"_add_summaries", "_LEGACY_DENSENET_KEY", "_tensors"} <= ours  # a function, a constant, a method
    assert not {"_trainer", "_get_file_writer", "_copy_average_to_current"} & ours


def test_no_module_uses_a_private_name_of_its_libraries():
    found = violations(package_sources())
    assert not found, "private names of torch/torchvision/Lightning/jsonargparse/tensorboard:\n" + "\n".join(found)
