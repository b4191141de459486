"""Packages that import their parts on first use (PEP 562), so importing one part does not import the others'
dependencies (diffrax for the theory, matplotlib for the plots)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], *, modules: Iterable[str] = (), names: Mapping[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose module globals are ``namespace``.

    ``package.<m>`` for ``m`` in ``modules`` imports the submodule ``package.m``; ``package.<name>`` for ``name`` in
    ``names`` is the attribute ``name`` of the submodule ``package.<names[name]>``. ``__dir__`` lists the
    package's globals and its ``__all__``. In a package's ``__init__.py``:
    ``__getattr__, __dir__ = lazy_exports(__name__, globals(), modules=__all__)``.
    """
    modules, names = frozenset(modules), dict(names or {})

    def __getattr__(name: str) -> Any:
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
