"""One registry for every model in the zoo.

Each ``model_zoo/<Folder>/__init__.py`` imports its model classes, and each
class is decorated with :func:`register_model`. ``run_expid.py`` and the tests
look models up here by the name written under ``model:`` in a YAML config.

``model_zoo`` is a namespace package shared with the fuxictr wheel (which ships
``model_zoo.LongCTR`` and ``model_zoo.multitask``); discovery imports only the
sub-packages that fuxictr's own distribution did not install.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import pkgutil
from typing import Dict, List, Type

_REGISTRY: Dict[str, type] = {}
_DISCOVERED = False


def register_model(cls: Type) -> Type:
    """Class decorator: make ``cls`` reachable by its class name.

    Example:
        >>> @register_model
        ... class MyModel(ZooModel): ...
    """
    name = cls.__name__
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"model name {name!r} is registered twice: "
                         f"{_REGISTRY[name].__module__} and {cls.__module__}")
    _REGISTRY[name] = cls
    return cls


def _foreign_zoo_packages() -> set:
    """Names of ``model_zoo.*`` packages installed by the fuxictr wheel itself."""
    try:
        files = importlib.metadata.files("fuxictr") or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    return {f.parts[1] for f in files if len(f.parts) > 2 and f.parts[0] == "model_zoo"}


def discover_models() -> None:
    """Import every model folder of this project under ``model_zoo``."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import model_zoo

    foreign = _foreign_zoo_packages()
    for info in sorted(pkgutil.iter_modules(model_zoo.__path__), key=lambda i: i.name):
        if info.ispkg and info.name not in foreign:
            importlib.import_module(f"model_zoo.{info.name}")
    _DISCOVERED = True


def get_model_class(name: str) -> type:
    """Return the registered class called ``name``; ValueError with near matches otherwise.

    A model in a folder of its own name (``model_zoo/<name>/``) is imported alone;
    any other name triggers discovery of every folder.
    """
    if name not in _REGISTRY and name not in _foreign_zoo_packages() \
            and importlib.util.find_spec(f"model_zoo.{name}") is not None:
        importlib.import_module(f"model_zoo.{name}")
    if name not in _REGISTRY:
        discover_models()
    if name not in _REGISTRY:
        near = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise ValueError(f"model={name!r} is not a registered model of this zoo.{hint} "
                         f"Registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_models() -> List[str]:
    """Names of all registered models, sorted."""
    discover_models()
    return sorted(_REGISTRY)
