"""One registry for every model in the zoo.

Each ``model_zoo/<Folder>/__init__.py`` imports its model classes, and each
class is decorated with :func:`register_model`. ``run_expid.py`` and the tests
look models up here by the name written under ``model:`` in a YAML config.

Where the models are found: this distribution's ``model_zoo`` folder is the one
next to the ``fuxictr_ext`` package (in a clone and in an installed wheel alike),
whatever ``import model_zoo`` resolves to. Normally ``model_zoo`` is a namespace
package shared with the fuxictr wheel (which ships ``model_zoo.LongCTR`` and
``model_zoo.multitask``), and our folders are imported as ``model_zoo.<Folder>``,
the same modules as a user's ``from model_zoo.DNN import DNN``. When the name
``model_zoo`` resolves elsewhere for any of our folders - FuxiCTR's source
checkout on sys.path is a regular package with an ``__init__.py``, which hides
every namespace portion, and has its own DNN, DCNv2, ... - our folders are
imported under :data:`ZOO_ALIAS` instead (``fuxictr_zoo_models.<Folder>``) and
``model_zoo`` stays the user's. Sub-packages that fuxictr's own distribution
installed are never imported by discovery.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Type

ZOO_ALIAS = "fuxictr_zoo_models"

_REGISTRY: Dict[str, type] = {}
_DISCOVERED = False
_PACKAGE: Optional[str] = None


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


def zoo_dir() -> Path:
    """This distribution's ``model_zoo`` folder (a sibling of the ``fuxictr_ext`` package)."""
    return Path(__file__).resolve().parent.parent / "model_zoo"


def zoo_folders() -> List[str]:
    """Our model folders: sub-packages of :func:`zoo_dir` that fuxictr did not install."""
    foreign = _foreign_zoo_packages()
    root = zoo_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if (p / "__init__.py").is_file() and p.name not in foreign)


def _first_portion(locations: Sequence[str], name: str) -> Optional[Path]:
    """The search location that ``<package>.<name>`` is imported from (first one holding it)."""
    for location in locations:
        candidate = Path(location)
        if (candidate / name).is_dir() or (candidate / f"{name}.py").is_file():
            return candidate.resolve()
    return None


def _model_zoo_locations() -> List[str]:
    """Where ``model_zoo.<Folder>`` is looked up, without importing ``model_zoo``."""
    module = sys.modules.get("model_zoo")
    if module is not None:
        return list(getattr(module, "__path__", []))
    spec = importlib.util.find_spec("model_zoo")
    return list(spec.submodule_search_locations or []) if spec is not None else []


def _alias_package() -> str:
    """Create (once) the package :data:`ZOO_ALIAS` whose only location is :func:`zoo_dir`."""
    if ZOO_ALIAS not in sys.modules:
        spec = importlib.machinery.ModuleSpec(ZOO_ALIAS, None, is_package=True)
        spec.submodule_search_locations = [str(zoo_dir())]
        sys.modules[ZOO_ALIAS] = importlib.util.module_from_spec(spec)
    return ZOO_ALIAS


def zoo_package() -> str:
    """The package name our model folders are imported under: ``model_zoo`` when every
    one of our folders resolves to ours there, :data:`ZOO_ALIAS` otherwise.

    Decided once per process, so that no model is imported under both names.
    """
    global _PACKAGE
    if _PACKAGE is None:
        locations = _model_zoo_locations()
        ours = zoo_dir()
        if all(_first_portion(locations, name) == ours for name in zoo_folders()):
            _PACKAGE = "model_zoo"
        else:
            _PACKAGE = _alias_package()
    return _PACKAGE


def discover_models() -> None:
    """Import every model folder of this project (see the module docstring for where from)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    package = zoo_package()
    for name in zoo_folders():
        importlib.import_module(f"{package}.{name}")
    _DISCOVERED = True


def get_model_class(name: str) -> type:
    """Return the registered class called ``name``; ValueError with near matches otherwise.

    A model in a folder of its own name (``model_zoo/<name>/``) is imported alone;
    any other name triggers discovery of every folder.
    """
    if name not in _REGISTRY and name in zoo_folders():
        importlib.import_module(f"{zoo_package()}.{name}")
    if name not in _REGISTRY:
        discover_models()
    if name not in _REGISTRY:
        near = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise ValueError(f"model={name!r} is not a registered model of this zoo.{hint} "
                         f"Registered: {', '.join(sorted(_REGISTRY))} (from {zoo_dir()})")
    return _REGISTRY[name]


def list_models() -> List[str]:
    """Names of all registered models, sorted."""
    discover_models()
    return sorted(_REGISTRY)
