"""A package's public names, imported from their modules on first use (PEP 562).

A process imports the few modules it needs; a package ``__init__`` that re-exports
everything would import pandas, the ocpp package and every pydantic model for each of them.

    __getattr__, __dir__ = lazy_exports(__name__, globals(), {".dispatch": ("DispatchEngine",)})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], homes: Mapping[str, tuple[str, ...]],
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``: each name of ``homes``
    (module -> names, relative to ``package`` when it starts with a dot) is imported from its
    module when first asked for, then kept in ``namespace`` (the package's globals)."""
    home_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = home_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # once found, a plain attribute: no second lookup
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(home_of))

    return __getattr__, __dir__
