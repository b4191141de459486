"""The import rules of ARCHITECTURE.md, read from the source with ``ast`` (no module is imported).

Every ``import`` and ``from ... import`` counts, at module level or inside a function alike (a lazy import is still
a dependency); relative imports are resolved against the importing module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each part of the library (a top-level module or a subpackage of stepwise/) and the parts it may import besides
# itself and the base (``stepwise``, ``stepwise._typing``, ``stepwise._compat``, ``stepwise._precision``,
# ``stepwise._lazy``, ``stepwise._validate``, ``stepwise._memory``).
# A part that is not listed here is an error: a new module or subpackage gets its row (and its line in
# ARCHITECTURE.md).
BASE = {"stepwise", "stepwise._typing", "stepwise._compat", "stepwise._precision", "stepwise._lazy",
        "stepwise._validate", "stepwise._memory"}
ALLOWED: dict[str, set[str]] = {
    "stepwise._typing": set(),
    "stepwise._compat": set(),
    "stepwise._precision": set(),
    "stepwise._lazy": set(),
    "stepwise._validate": set(),
    "stepwise._memory": set(),
    "stepwise.theory": set(),
    "stepwise.data": set(),
    "stepwise.losses": set(),
    "stepwise.models": set(),
    "stepwise.errors": {"stepwise.data"},
    "stepwise.ntk": {"stepwise.models"},
    "stepwise.compare": {"stepwise.theory"},
    "stepwise.io": {"stepwise.compare"},
    "stepwise.training": {"stepwise.data", "stepwise.errors", "stepwise.io", "stepwise.losses", "stepwise.theory"},
    "stepwise.plots": {"stepwise.compare", "stepwise.io"},
    "stepwise.scale": {"stepwise.data", "stepwise.losses", "stepwise.models", "stepwise.ntk", "stepwise.theory",
                       "stepwise.training"},
    "stepwise.verify": {"stepwise.compare", "stepwise.data", "stepwise.errors", "stepwise.io", "stepwise.losses",
                        "stepwise.models", "stepwise.ntk", "stepwise.plots", "stepwise.scale", "stepwise.theory",
                        "stepwise.training"},
    "stepwise.launch": {"stepwise.cli", "stepwise.training"},
    "stepwise.cli": {"*", "experiments"},  # the entry point: everything, and the experiments it runs
}

# Cross-module imports of a private name (``from stepwise.x import _name``) that predate this rule; none may be
# added (make the name public instead).
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import statement in ``path``; ``names`` are those of a ``from`` import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            found.append((module, [alias.name for alias in node.names]))
    return found


def _part(module: str) -> str:
    """The part of the library a module belongs to: ``stepwise.training.ssl`` -> ``stepwise.training``."""
    return ".".join(module.split(".")[:2])


def _targets(module: str, names: list[str]) -> set[str]:
    """The parts an import reaches (``from stepwise import io`` reaches ``stepwise.io``)."""
    if module == "stepwise" and names:
        return {_part(f"stepwise.{n}") for n in names}
    return {_part(module)}


def _files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


LIBRARY = _files("stepwise")


def test_every_part_of_the_library_has_a_rule():
    parts = {_part(_module_name(p)) for p in LIBRARY} - {"stepwise"}
    assert not sorted(parts - set(ALLOWED)), "add the new part to ALLOWED and to ARCHITECTURE.md"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_imports_only_downward(path):
    own = _part(_module_name(path))
    allowed = ALLOWED.get(own, set()) | BASE | {own}
    bad = []
    for module, names in _imports(path):
        for target in _targets(module, names):
            top = target.split(".")[0]
            if top == "stepwise" and target not in allowed and "*" not in allowed:
                bad.append(target)
            elif top in ("experiments", "benchmarks", "tests") and top not in allowed:
                bad.append(target)
    assert not bad, f"{own} may not import {sorted(set(bad))} (ARCHITECTURE.md, 'What may import what')"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_plotting_and_torch_stay_out_of_the_library(path):
    tops = {module.split(".")[0] for module, _ in _imports(path)}
    assert "torch" not in tops, "PyTorch belongs to benchmarks/, not the library"
    if _part(_module_name(path)) != "stepwise.plots":
        assert "matplotlib" not in tops, "matplotlib is imported only under stepwise/plots/"


def test_plots_import_matplotlib_inside_functions_only():
    """Importing any module of the library (plots included) does not import matplotlib."""
    for path in _files("stepwise/plots"):
        tree = ast.parse(path.read_text())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in top_level:
            module = node.names[0].name if isinstance(node, ast.Import) else node.module or ""
            assert not module.startswith("matplotlib"), f"{path.name}: matplotlib at module level"


def test_no_new_cross_module_private_imports():
    """Neither the library nor a runner imports another module's private name (runners share public helpers)."""
    found = set()
    for path in LIBRARY + _files("experiments"):
        for module, names in _imports(path):
            if not module.startswith(("stepwise", "experiments")) or module == _module_name(path):
                continue
            for name in names:
                # a private module (stepwise._compat) is the package's own; a private name of another module is not
                if name.startswith("_") and not name.startswith("__") and f"{module}.{name}" not in BASE:
                    found.add((str(path.relative_to(ROOT)), module, name))
    assert not sorted(found - KNOWN_PRIVATE_IMPORTS), "import a public name instead (or make it public)"


@pytest.mark.parametrize("path", _files("experiments"), ids=lambda p: str(p.relative_to(ROOT)))
def test_experiments_use_the_library_not_benchmarks(path):
    tops = {target.split(".")[0] for module, names in _imports(path) for target in _targets(module, names)}
    assert not tops & {"benchmarks", "tests"}, "an experiment imports stepwise and experiments only"


@pytest.mark.parametrize("package", sorted(p.parent.name for p in (ROOT / "stepwise").glob("*/__init__.py")))
def test_every_subpackage_lists_its_public_names(package):
    """Each subpackage's face: an ``__all__`` whose every name resolves (re-exports, or modules for theory)."""
    import importlib

    module = importlib.import_module(f"stepwise.{package}")
    names = getattr(module, "__all__", None)
    assert names, f"stepwise/{package}/__init__.py has no __all__"
    assert len(set(names)) == len(names), "a name listed twice"
    for name in names:
        assert getattr(module, name) is not None


def test_lines_fit_the_configured_width():
    """pyproject.toml's ``[tool.ruff] line-length`` holds for every Python file of the repository (a line holding a
    URL may run over), so the limit is enforced here without ruff installed."""
    import tomllib

    width = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["line-length"]
    long = [f"{path.relative_to(ROOT)}:{i}: {len(line)} columns"
            for top in ("stepwise", "experiments", "tests", "benchmarks", "tools")
            for path in sorted((ROOT / top).rglob("*.py"))
            for i, line in enumerate(path.read_text().splitlines(), 1)
            if len(line) > width and "://" not in line]
    assert not long, f"lines over {width} columns:\n" + "\n".join(long)
