"""Every docstring example of the library runs (issue 15 item 5): the modules of ``stepwise/`` that hold a ``>>>``
example, found by walking the package, so a new example cannot be forgotten. Under the suite's strict JAX flags
(``tests/conftest.py``), like every other test."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Examples known to be out of date, each with what is wrong; fix the example and remove its line.
def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted((ROOT / "stepwise").rglob("*.py")):
        if ">>> " in path.read_text():
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see the output above)"
