"""Imports paid for on first use: a package's public names (PEP 562) and heavy modules.

A process imports the few modules it needs. A package ``__init__`` that re-exported
everything would import pandas, the ocpp package and every pydantic model for each of them;
a module that converts schedules would make every process that merely imports it load
pandas (about 0.4 s and 60 MB), although only the code paths that handle a schedule use it.

    __getattr__, __dir__ = lazy_exports(__name__, globals(), {".dispatch": ("DispatchEngine",)})

    if TYPE_CHECKING:
        import pandas as pd
    else:
        pd = LazyModule("pandas", globals(), "pd")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
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


class LazyModule:
    """Stands for module ``name`` as the global ``alias`` of ``namespace`` until an attribute
    of it is first used: then the module is imported and replaces this stand-in there, so
    later uses cost what a plain module global costs. Type checkers should see the real
    import (``if TYPE_CHECKING``)."""

    def __init__(self, name: str, namespace: dict[str, Any], alias: str) -> None:
        self._name, self._namespace, self._alias = name, namespace, alias

    def __getattr__(self, attribute: str) -> Any:
        module: ModuleType = importlib.import_module(self._name)
        self._namespace[self._alias] = module
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<{self._name}, imported on first use>"
