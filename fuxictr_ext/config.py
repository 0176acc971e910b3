"""Checking a model's YAML keys against its constructor signature."""

from __future__ import annotations

import inspect
import logging
from typing import Iterable, List

# Keys that run_expid.py, FuxiCTR's BaseModel or its data loaders read.
RUNNER_KEYS = frozenset({
    "model", "dataset_id", "model_id", "model_root", "gpu", "verbose", "workers", "num_workers",
    "epochs", "batch_size", "seed", "shuffle", "debug_mode", "data_format", "data_loader",
    "monitor", "monitor_mode", "early_stop_patience", "save_best_only", "eval_steps",
    "reduce_lr_on_plateau", "max_gradient_norm", "metrics", "task", "loss", "optimizer",
    "learning_rate", "embedding_regularizer", "net_regularizer", "group_id",
    "use_features", "feature_specs", "feature_config", "spectrum_callbacks", "pickle_feature_encoder",
    "rebuild_dataset", "buffer_size", "dist_backend", "dist_timeout_s",
})


def constructor_args(model_cls: type) -> List[str]:
    """Named constructor arguments of ``model_cls`` and its ZooModel/BaseModel parents."""
    names = []
    for klass in inspect.getmro(model_cls):
        if "__init__" not in vars(klass):
            continue
        for name, param in inspect.signature(klass.__init__).parameters.items():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and name != "self":
                names.append(name)
    return names


def unknown_model_keys(model_cls: type, model_params: Iterable[str]) -> List[str]:
    """Keys of a model config block that neither the model nor the runner reads."""
    known = set(constructor_args(model_cls)) | RUNNER_KEYS
    return sorted(k for k in model_params if k not in known)


def warn_unknown_model_keys(model_cls: type, model_params: Iterable[str]) -> List[str]:
    """Log a warning naming every model config key that no code reads; return them."""
    unknown = unknown_model_keys(model_cls, model_params)
    for key in unknown:
        logging.warning(f"config key {key!r} is not an argument of {model_cls.__name__} "
                        "and no runner code reads it; it has no effect")
    return unknown
