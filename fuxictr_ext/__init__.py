"""Shared mechanics of the model zoo: registry, zoo base model, data loading,
cost accounting, spectrum tools, losses and layers used by several models."""

from .registry import register_model, get_model_class, list_models

__all__ = ["register_model", "get_model_class", "list_models"]
__version__ = "0.1.0"
