"""A run's config: reading it (the YAML files, FuxiCTR's merge, ``--override``), checking it
before anything runs (keys no code reads, the types and ranges of the settings every
experiment has), and the zoo's user errors.

Every error a user can cause and fix (a config key, a data file, a request, a diverged
run) is a :class:`ZooError`, so one handler (:func:`fuxictr_ext.cli.report_user_errors`)
turns each into a one-line message and exit status 2 instead of a traceback from deep
inside FuxiCTR or torch."""

from __future__ import annotations

import difflib
import glob
import hashlib
import inspect
import json
import logging
import math
import numbers
import os
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import yaml
from fuxictr.pytorch.torch_utils import get_activation
from fuxictr.utils import load_dataset_config, load_model_config
from torch import nn


class ZooError(ValueError):
    """A mistake the user can fix (a setting, a file, a request): the message names it.

    The zoo's user errors subclass it: :class:`ConfigError`,
    :class:`~fuxictr_ext.data.DataError`, :class:`~fuxictr_ext.base.TrainingDiverged`,
    :class:`~fuxictr_ext.distributed.DistributedSetupError`,
    :class:`~fuxictr_ext.serving.RequestError`,
    :class:`~fuxictr_ext.layers.rank_aware.RankAwareUnsupportedError`."""


class ConfigError(ZooError):
    """A config directory, experiment id or setting that cannot be used."""

# Keys that run_expid.py, FuxiCTR's BaseModel or its data loaders read.
RUNNER_KEYS = frozenset({
    "model", "dataset_id", "model_id", "model_root", "gpu", "verbose", "workers", "num_workers",
    "epochs", "batch_size", "seed", "shuffle", "debug_mode", "data_format", "data_loader",
    "monitor", "monitor_mode", "early_stop_patience", "save_best_only", "eval_steps",
    "reduce_lr_on_plateau", "max_gradient_norm", "metrics", "task", "loss", "optimizer",
    "learning_rate", "embedding_regularizer", "net_regularizer", "group_id",
    "use_features", "feature_specs", "feature_config", "spectrum_callbacks", "pickle_feature_encoder",
    "rebuild_dataset", "buffer_size", "dist_backend", "dist_timeout_s", "config_fingerprint", "precision",
})

# Keys of a dataset config entry: FuxiCTR's (read by its FeatureProcessor, build_dataset and
# loaders) and this project's (`synthetic`, see config/dataset_config.yaml).
DATASET_KEYS = frozenset({
    "dataset_id", "data_root", "data_format", "train_data", "valid_data", "test_data", "item_info", "min_categr_count",
    "num_buckets", "feature_cols", "label_col", "rebuild_dataset", "group_id", "sep", "synthetic",
})
FEATURE_COL_KEYS = frozenset({
    "name", "active", "dtype", "type", "source", "preprocess", "remap", "vocab_size", "max_len", "padding",
    "splitter", "encoder", "feature_encoder", "embedding_dim", "emb_output_dim", "pretrained_emb",
    "pretrain_dim", "pretrain_usage", "freeze_emb", "share_embedding", "min_categr_count", "fill_na",
    "normalizer", "category_processor", "num_buckets", "embedding_callback",
})
MONITOR_MODES = ("max", "min")  # the two values FuxiCTR's BaseModel compares against
PRECISIONS = ("float32", "bf16")  # the `precision` run setting (fuxictr_ext.precision)
# Run settings with a default that an experiment need not spell out; --override may set them.
RUN_SETTING_DEFAULTS = {"precision": "float32"}


def _number_text_hint(key: str, value) -> str:
    """For a string that YAML would have read as a number if written differently
    (nothing for a value that is a number already)."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except (TypeError, ValueError):
        return ""
    return (f" (YAML reads {value} as text: it needs a decimal point and a signed exponent, "
            f"e.g. {float(value):.1e})")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value) -> Optional[str]:
    return None if _is_int(value) and value >= 1 else "a whole number >= 1"


def _non_negative_int(value) -> Optional[str]:
    return None if _is_int(value) and value >= 0 else "a whole number >= 0"


def _integer(value) -> Optional[str]:
    return None if _is_int(value) else "a whole number"


def _positive_real(value) -> Optional[str]:
    return None if _is_real(value) and value > 0 else "a number > 0"


def _probability(value) -> Optional[str]:
    return None if _is_real(value) and 0 <= value < 1 else "a number in [0, 1)"


def _layer_widths(value) -> Optional[str]:
    ok = value is None or (isinstance(value, (list, tuple)) and all(_is_int(v) and v >= 1 for v in value))
    return None if ok else "a list of layer widths (whole numbers >= 1), e.g. [400, 400]"


def _monitor_mode(value) -> Optional[str]:
    return None if value in MONITOR_MODES else f"one of {list(MONITOR_MODES)}"


def _precision(value) -> Optional[str]:
    return None if value in PRECISIONS else f"one of {list(PRECISIONS)}"


def _non_negative(value) -> Optional[str]:
    return None if _is_real(value) and value >= 0 else "a number >= 0"


# ---------------------------------------------------------------- model constructor arguments
# The one way models and shared layers check their constructor arguments: every check returns
# the (canonical) value or raises ConfigError naming the key, the value and what it must be.
#
#     num_heads = check_positive_int("num_heads", num_heads)
#     router = check_choice("router", router, ROUTERS)
#     check_arg(embedding_dim % num_heads == 0, "num_heads", num_heads, f"a divisor of embedding_dim={embedding_dim}")

def check_arg(ok: bool, key: str, value, expected: str):
    """Return ``value`` if ``ok``, else raise ``ConfigError("{key}={value!r} must be {expected}")``.

    The general form, for conditions that tie one key to another."""
    if not ok:
        raise ConfigError(f"{key}={value!r} must be {expected}")
    return value


def _check_rule(key: str, value, rule: Callable, optional: bool):
    if optional and value is None:
        return value
    expected = rule(value)
    return check_arg(expected is None, key, value, f"{expected} or null" if expected and optional else expected)


def check_positive_int(key: str, value, optional: bool = False):
    """A whole number >= 1 (or None when ``optional``)."""
    return _check_rule(key, value, _positive_int, optional)


def check_non_negative_int(key: str, value):
    """A whole number >= 0."""
    return _check_rule(key, value, _non_negative_int, False)


def check_non_negative(key: str, value):
    """A finite number >= 0."""
    return _check_rule(key, value, _non_negative, False)


def check_probability(key: str, value):
    """A dropout-like rate in [0, 1)."""
    return _check_rule(key, value, _probability, False)


def check_positive_ints(key: str, values, min_length: int = 0) -> List[int]:
    """A list of at least ``min_length`` whole numbers >= 1 (layer widths); returned as a list."""
    ok = (isinstance(values, Sequence) and not isinstance(values, (str, bytes)) and len(values) >= min_length
          and all(_is_int(v) and v >= 1 for v in values))
    at_least = f"at least {min_length} " if min_length else ""
    check_arg(ok, key, values, f"a list of {at_least}whole numbers >= 1, e.g. [400, 400]")
    return list(values)


def check_choice(key: str, value, choices: Sequence[str]) -> str:
    """One of ``choices``, matched without regard to case (null matches ``"none"``); returns the
    choice as spelled in ``choices``. The error names the nearest choices."""
    text = "none" if value is None else str(value)
    for choice in choices:
        if text.lower() == str(choice).lower():
            return choice
    near = difflib.get_close_matches(text.lower(), [str(c).lower() for c in choices], n=1, cutoff=0.6)
    hint = "".join(f"; did you mean {c!r}?" for c in choices if near and str(c).lower() == near[0])
    raise ConfigError(f"{key}={value!r} must be one of {list(choices)}{hint}")


PARAM_RULES: Dict[str, Callable] = {
    "epochs": _positive_int, "batch_size": _positive_int, "embedding_dim": _positive_int,
    "early_stop_patience": _non_negative_int, "seed": _integer, "learning_rate": _positive_real,
    "monitor_mode": _monitor_mode, "precision": _precision,
}
SUFFIX_RULES = {"hidden_units": _layer_widths, "dropout": _probability}


def check_run_params(params: dict, where: str) -> None:
    """Types and ranges of the common settings (PARAM_RULES, and every ``*hidden_units`` /
    ``*dropout`` key); ConfigError naming the key, its value and what it must be."""
    for key, value in params.items():
        rule = PARAM_RULES.get(key) or next((r for suffix, r in SUFFIX_RULES.items() if key.endswith(suffix)), None)
        if rule is None:
            continue
        expected = rule(value)
        if expected:
            raise ConfigError(f"{where}: {key}={value!r} must be {expected}{_number_text_hint(key, value)}")
    check_names(params, where)


# ---------------------------------------------------------------------------- names
# What FuxiCTR resolves by name, checked when the config is read (a typo otherwise fails
# when the model is built, after the dataset build, or - for a metric - after training).
LOSS_ALIASES = ("bce", "binary_crossentropy", "binary_cross_entropy")  # fuxictr's get_loss
METRIC_NAMES = ("logloss", "binary_crossentropy", "AUC", "gAUC", "avgAUC", "MRR", "NDCG")  # its evaluate_metrics
GROUP_METRICS = ("gAUC", "avgAUC", "MRR", "NDCG")  # need the dataset's group_id
DEFAULT_METRICS = ["logloss", "AUC"]  # ZooModel's default
CASELESS_ACTIVATION_KEYS = ("ffn_activation",)  # read without case (layers.token_mixing.config_choice)


def _near(value, choices: Iterable[str]) -> str:
    """``"; near matches: a, b"`` (compared without case) or ``""``."""
    by_lower = {c.lower(): c for c in choices}
    near = difflib.get_close_matches(str(value).lower(), list(by_lower), n=3, cutoff=0.6)
    return f"; near matches: {', '.join(by_lower[n] for n in near)}" if near else ""


def _is_activation(name) -> bool:
    """fuxictr's ``get_activation`` builds a module from ``name`` (hidden_units=1 for PReLU, Dice)."""
    if not isinstance(name, str):
        return False
    try:
        return isinstance(get_activation(name, hidden_units=1), nn.Module)
    except Exception:  # fuxictr raises AttributeError, TypeError or AssertionError for a name it cannot build
        return False


def _activation_names() -> List[str]:
    return ["relu", "sigmoid", "tanh", "softmax", "prelu", "dice", "Identity"] + \
        [n for n in torch.nn.modules.activation.__all__ if _is_activation(n)]


def _optimizer_names() -> List[str]:
    return [n for n, cls in vars(torch.optim).items()
            if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer]


def _loss_names() -> List[str]:
    return list(dict.fromkeys(list(LOSS_ALIASES) + [n for n in dir(F) if n.endswith("_loss") or "entropy" in n]))


def _is_metric(name) -> bool:
    return isinstance(name, str) and (name in METRIC_NAMES or name.startswith("NDCG"))


def _name_errors(params: dict) -> Iterator[Tuple[str, object, str, List[str]]]:
    """(key, value, what it must be, the names it may take) for every name FuxiCTR would not resolve."""
    for key, value in params.items():
        if "activation" in key and value is not None:
            names = value if isinstance(value, (list, tuple)) else [value]
            if key in CASELESS_ACTIVATION_KEYS:
                canonical = {n.lower(): n for n in _activation_names()}
                names = [canonical.get(n.lower(), n) if isinstance(n, str) else n for n in names]
            for name in names:
                if not _is_activation(name):
                    yield key, name, "an activation of fuxictr's get_activation (a torch.nn activation name)", \
                        _activation_names()
    optimizer = params.get("optimizer")
    if optimizer is not None and not (isinstance(optimizer, str) and
                                      (optimizer.lower() == "adam" or optimizer in _optimizer_names())):
        yield "optimizer", optimizer, "an optimizer class of torch.optim (fuxictr's get_optimizer)", _optimizer_names()
    loss = params.get("loss")
    if loss is not None and not (isinstance(loss, str) and (loss in LOSS_ALIASES or hasattr(F, loss))):
        yield "loss", loss, "a loss of torch.nn.functional or bce (fuxictr's get_loss)", _loss_names()
    metrics = params.get("metrics", DEFAULT_METRICS)
    if not isinstance(metrics, (list, tuple)) or not metrics:
        yield "metrics", metrics, "a non-empty list of metric names", list(METRIC_NAMES)
    monitor = params.get("monitor", "AUC")  # validation evaluates the monitor's metrics
    for key, names in (("metrics", metrics if isinstance(metrics, (list, tuple)) else []),
                       ("monitor", list(monitor) if isinstance(monitor, dict) else [monitor])):
        for name in names:
            if not _is_metric(name):
                yield key, name, f"a metric of fuxictr's evaluate_metrics ({', '.join(METRIC_NAMES)})", \
                    list(METRIC_NAMES)
            elif name.startswith(GROUP_METRICS) and not params.get("group_id"):
                yield key, name, "a metric this dataset can compute: it needs a group_id in the dataset config", []
    from .layers.multi_embedding import EMBEDDING_MODES  # layers import this module (ZooError)

    mode = params.get("embedding_mode")
    if mode is not None and mode not in EMBEDDING_MODES:
        yield "embedding_mode", mode, f"one of {list(EMBEDDING_MODES)}", list(EMBEDDING_MODES)


def check_names(params: dict, where: str) -> None:
    """The names FuxiCTR resolves (``*activation*`` keys, optimizer, loss, metrics, monitor)
    and ``embedding_mode``, resolved now; ConfigError naming the key, the value and near matches."""
    error = next(_name_errors(params), None)
    if error is not None:
        key, value, expected, choices = error
        raise ConfigError(f"{where}: {key}={value!r} must be {expected}{_near(value, choices)}")


def config_fingerprint(params: dict) -> str:
    """A hash of the run's settings (every key but the per-process ``gpu``): what a resume
    state must have been written under to be loaded."""
    settings = {k: v for k, v in params.items() if k not in ("gpu", "config_fingerprint")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def warn_unknown_dataset_keys(dataset_id: str, entry: dict) -> List[str]:
    """Log a warning naming every key of a dataset config entry (and of its feature_cols)
    that no code reads; return them."""
    unknown = sorted(k for k in entry if k not in DATASET_KEYS)
    for col in entry.get("feature_cols") or []:
        if isinstance(col, dict):
            unknown += sorted(f"feature_cols[{col.get('name')}].{k}" for k in col if k not in FEATURE_COL_KEYS)
    for key in unknown:
        logging.warning(f"dataset config {dataset_id!r}: key {key!r} is not read by FuxiCTR or this project; "
                        "it has no effect")
    return unknown


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


# ---------------------------------------------------------------------------- reading
def _yaml_files(config_dir: str, name: str) -> List[str]:
    single = os.path.join(config_dir, f"{name}.yaml")
    return [single] if os.path.isfile(single) else sorted(glob.glob(os.path.join(config_dir, name, "*.yaml")))


def _top_level_keys(path: str, text: str) -> List[Tuple[object, int]]:
    """(key, line) of every top-level entry of a YAML document, duplicates included
    (``yaml.safe_load`` keeps only the last of two equal keys)."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return []
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}: expected a mapping of ids to blocks, got a {node.id}")
    return [(key.value, key.start_mark.line + 1) for key, _ in node.value]


def _blocks_in(files: List[str]) -> Tuple[Dict[str, Tuple[str, dict]], Dict[str, dict]]:
    """The blocks of ``files`` by id with the file each is in, ``{id: (path, block)}``, and
    the ``Base`` block of each file that has one, ``{path: block}``.

    An id defined twice (in one file, or in two; ``Base`` once per file) is a ConfigError
    naming both places: FuxiCTR would silently take one of them."""
    blocks: Dict[str, Tuple[str, dict]] = {}
    bases: Dict[str, dict] = {}
    places: Dict[str, str] = {}
    for path in files:
        with open(path) as fd:
            text = fd.read()
        try:
            keys = _top_level_keys(path, text)
            content = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        for key, line in keys:
            place = f"{path}:{line}"
            if key in places and (key != "Base" or places[key].rsplit(":", 1)[0] == path):
                raise ConfigError(f"{key!r} is defined twice, at {places[key]} and at {place}; "
                                  "rename or remove one of them")
            places[key] = place
        blocks.update((key, (path, block)) for key, block in content.items() if key != "Base")
        if "Base" in content:
            bases[path] = content["Base"] or {}
    return blocks, bases


def load_params(config_dir: str, expid: str, dataset_id: Optional[str] = None) -> tuple:
    """Merged params (FuxiCTR's loader) and the model block's own keys; clear errors.

    ``dataset_id`` replaces the experiment's own (its dataset config is merged instead)."""
    model_files = _yaml_files(config_dir, "model_config")
    if not model_files:
        raise ConfigError(f"--config {config_dir}: no model_config.yaml or model_config/*.yaml there")
    blocks, bases = _blocks_in(model_files)
    expids = list(blocks)
    if expid not in expids:
        near = difflib.get_close_matches(expid, expids, n=5, cutoff=0.4)
        hint = f" Near matches: {', '.join(near)}." if near else ""
        raise ConfigError(f"--expid {expid}: no such experiment id in {config_dir}.{hint}")
    path, block = blocks[expid]
    base = bases.get(path) or next(iter(bases.values()), {})  # FuxiCTR takes the Base of the expid's file
    if "dataset_id" not in {**base, **(block or {})}:
        raise ConfigError(f"experiment {expid}: no `dataset_id:` key in its config ({path}, its block or Base)")
    model_params = load_model_config(config_dir, expid)
    if dataset_id is not None:
        model_params["dataset_id"] = dataset_id
    dataset_id = model_params["dataset_id"]
    dataset_files = _yaml_files(config_dir, "dataset_config")
    if not dataset_files:
        raise ConfigError(f"--config {config_dir}: no dataset_config.yaml or dataset_config/*.yaml there "
                          f"(experiment {expid} needs dataset_id={dataset_id!r})")
    known = list(_blocks_in(dataset_files)[0])
    if dataset_id not in known:
        raise ConfigError(f"dataset_id={dataset_id!r} (experiment {expid}) is not in "
                          f"{', '.join(dataset_files)}; known ids: {', '.join(known)}")
    params = dict(model_params)
    params.update(load_dataset_config(config_dir, dataset_id))
    return params, model_params


def apply_overrides(params: dict, overrides: Dict[str, object], settable: Iterable[str] = ()) -> dict:
    """Set ``key`` (or ``key.sub.key`` inside a mapping such as ``synthetic``) to a value.
    (``dataset_id`` is not set here: :func:`fuxictr_ext.runner.setup_run` loads that dataset's config instead.)

    Only keys the experiment already has, the run settings with a default
    (``RUN_SETTING_DEFAULTS``, e.g. ``precision``) and the top-level keys in ``settable`` (the
    runner passes the model's constructor arguments, so that an argument the experiment id
    leaves at its default can be set) can be overridden, so that a typo is an error rather than
    a setting that nothing reads.

    Example:
        >>> apply_overrides({"epochs": 3, "synthetic": {"rows": 200000}}, {"synthetic.rows": 3000})
        {'epochs': 3, 'synthetic': {'rows': 3000}}
        >>> apply_overrides({"epochs": 3}, {"net_dropout": 0.2}, settable=["net_dropout"])
        {'epochs': 3, 'net_dropout': 0.2}
    """
    settable = set(settable)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        target = params
        for depth, key in enumerate(parents):
            if not isinstance(target.get(key), dict):
                raise ConfigError(f"override {dotted}: {'.'.join(parents[:depth + 1])} is not a mapping "
                                  "of this experiment's params")
            target[key] = dict(target[key])
            target = target[key]
        if leaf not in target and (parents or (leaf not in RUN_SETTING_DEFAULTS and leaf not in settable)):
            candidates = [str(k) for k in target] + ([] if parents else sorted(settable))
            near = difflib.get_close_matches(leaf, candidates, n=5, cutoff=0.5)
            hint = f" Near matches: {', '.join(near)}." if near else ""
            raise ConfigError(f"override {dotted}: the experiment has no key {leaf!r} to override.{hint}")
        target[leaf] = value
    return params


def parse_overrides(pairs: Sequence[str]) -> Dict[str, object]:
    """``["epochs=1", "synthetic.rows=3000"]`` -> ``{"epochs": 1, "synthetic.rows": 3000}``
    (values read as YAML, so numbers, lists and null keep their types)."""
    overrides: Dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--override {pair!r}: expected KEY=VALUE")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--override {pair!r}: the value is not valid YAML "
                              f"({' '.join(str(err).split())})") from err
    return overrides
