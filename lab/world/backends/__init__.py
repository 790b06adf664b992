"""Backend registry: ``get(name)`` returns a ready :class:`~lab.world.backends.base.Backend`.

``netns`` (Linux network namespaces via pyroute2) is the default; ``docker`` is registered
lazily from :mod:`lab.world.backends.docker` when that module imports. A backend module exposes its
class as ``BACKEND_CLASS`` (or defines a ``Backend`` subclass whose ``name`` is the registry name).
The default comes from the environment variable ``DP2PT_LAB_BACKEND`` when set.
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Callable

from lab.world.backends.base import Backend, Capture, Lab, LabInfo
from lab.errors import UnknownBackend

DEFAULT_BACKEND = "netns"
ENV_VAR = "DP2PT_LAB_BACKEND"

#: name -> module that defines it; imported on first use so a missing SDK only matters when asked for.
_LAZY: dict[str, str] = {"netns": "lab.world.backends.netns", "docker": "lab.world.backends.docker"}
_FACTORIES: dict[str, Callable[[], Backend]] = {}

__all__ = ["Backend", "Capture", "Lab", "LabInfo", "get", "register", "names", "default_name"]


def register(name: str, factory: Callable[[], Backend]) -> None:
    """Register (or replace) a backend factory under ``name``."""
    _FACTORIES[name] = factory


def default_name() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_BACKEND


def names() -> list[str]:
    """Every backend name known (not necessarily importable here)."""
    return sorted(set(_LAZY) | set(_FACTORIES))


def _load(name: str) -> Callable[[], Backend]:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise UnknownBackend(f"unknown backend {name!r}; known: {', '.join(names())}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownBackend(f"backend {name!r} is not available here: {exc}") from None
    cls = getattr(module, "BACKEND_CLASS", None)
    if cls is None:
        found = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, Backend) and obj is not Backend
            and getattr(obj, "name", None) == name and not inspect.isabstract(obj)
        ]
        if not found:
            raise UnknownBackend(f"module {module_name} defines no Backend named {name!r}")
        cls = found[0]
    register(name, cls)
    return cls


def get(name: str | None = None) -> Backend:
    """A fresh backend object by registry name (default: ``$DP2PT_LAB_BACKEND`` or ``netns``).

    Raises:
        UnknownBackend: no such backend, or it cannot be imported on this machine.
    """
    name = name or default_name()
    factory = _FACTORIES.get(name) or _load(name)
    return factory()
