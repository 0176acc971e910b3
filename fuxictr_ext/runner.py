"""The experiment runner behind ``run_expid.py``.

config -> (synthetic data if configured and missing) -> atomic dataset build ->
FeatureMap -> model class from the registry -> fit -> evaluate valid and test ->
results line appended to ``<config dir name>.csv`` in the working directory,
the same file FuxiCTR's own run_expid.py and its tuner use, and the run's JSON
record to ``<config dir name>.jsonl`` beside it (:mod:`fuxictr_ext.results`).
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import time
from typing import Dict, List, Optional

import torch
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.torch_utils import seed_everything
from fuxictr.utils import load_dataset_config, print_to_json, set_logger

from . import distributed as zoo_dist
from . import results
from .spectrum.callbacks import build_spectrum_callbacks
from .config import (ConfigError, apply_overrides, check_run_params, config_fingerprint, constructor_args,
                     load_params, warn_unknown_dataset_keys, warn_unknown_model_keys)
from .cost import model_cost
from .data import DataError, MappedDataLoader, TensorDataLoader, build_dataset, is_built, processed_paths
from .data import load_feature_map
from .data.build import build_lock, read_build_record
from .data.synthetic import planted_report, write as write_synthetic
from .registry import get_model_class
from .training import Trainer, TrainingConfig, TrainingDiverged
from .training.runs import RunDir, new_run_id

DATA_LOADERS = {"memory": TensorDataLoader, "mapped": MappedDataLoader, "fuxictr": None}


def resolve_device(gpu: int) -> int:
    """-1 stays CPU; a GPU index is checked against the machine (CPU fallback, said loudly)."""
    if gpu < 0:
        return -1
    if not torch.cuda.is_available():
        logging.warning(f"--gpu {gpu} requested but this machine has no CUDA device: running on CPU")
        return -1
    if gpu >= torch.cuda.device_count():
        raise ConfigError(f"--gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) (0..{torch.cuda.device_count() - 1})")
    return gpu


def ensure_raw_data(params: dict) -> None:
    """Generate configured synthetic data when missing; otherwise name the missing file.
    Under the dataset's build lock and the raw folder's own (tuner ids share raw folders),
    so that concurrent first runs generate it once."""
    def missing() -> List[str]:
        return [params[f"{s}_data"] for s in ("train", "valid", "test")
                if params.get(f"{s}_data") and not glob.glob(params[f"{s}_data"])]

    with build_lock(params["data_root"], params["dataset_id"]):
        if not missing() or is_built(params):
            return
        spec = params.get("synthetic")
        if not spec:
            raise DataError(f"data file not found: {missing()[0]}. Prepare dataset {params['dataset_id']} with: "
                            f"python -m data_prep.prepare {params['dataset_id']} --src <the downloaded release: "
                            "its folder, .zip or .tar.gz>")
        out_dir = os.path.abspath(os.path.dirname(params["train_data"]))
        with build_lock(os.path.dirname(out_dir), os.path.basename(out_dir)):
            if not missing():
                return
            logging.info(f"Raw data for {params['dataset_id']} not found: generating synthetic "
                         f"{spec['schema']}-like data ({spec['rows']} rows, seed {spec['seed']}) in {out_dir}")
            write_synthetic(spec["schema"], int(spec["rows"]), out_dir, seed=int(spec["seed"]),
                            data_format=params.get("data_format", "parquet"))


def _ceiling(params: dict) -> Optional[dict]:
    """The planted model's report of synthetic data, when it describes the test split that was built."""
    if not params.get("synthetic"):
        return None
    record = read_build_record(params) or {}
    return planted_report(os.path.dirname(params.get("train_data", "")), record.get("raw_files", {}).get("test"))


def make_loaders(feature_map, params: dict, stage: str, context: Optional[zoo_dist.DistContext] = None):
    """FuxiCTR's RankDataLoader with the configured loader; under torchrun the
    training loader yields this rank's shard (evaluation loaders are whole)."""
    choice = params.get("data_loader", "memory")
    if choice not in DATA_LOADERS:
        raise ConfigError(f"data_loader={choice!r}: choose one of {sorted(DATA_LOADERS)}")
    kwargs = dict(params)
    kwargs["data_loader"] = DATA_LOADERS[choice]
    kwargs.setdefault("data_format", "parquet")
    if context is not None:
        if DATA_LOADERS[choice] is None:
            raise ConfigError(f"data_loader={choice!r} cannot shard data across torchrun processes; "
                              "use data_loader: memory or mapped")
        kwargs.update(rank=context.rank, world_size=context.world_size)
    return RankDataLoader(feature_map, stage=stage, **kwargs)


def _format_metrics(logs: Dict[str, float]) -> str:
    return " - ".join(f"{k}: {v:.6f}" for k, v in logs.items())


def setup_run(config_dir: str, expid: str, gpu: int, overrides: Optional[Dict[str, object]] = None):
    """Step 1: params (with ``overrides``, see :func:`apply_overrides`), model class,
    device and process group, logging, seed.

    Returns (params, model_params, model_cls, context); context is None outside torchrun.
    """
    overrides = dict(overrides or {})
    params, model_params = load_params(config_dir, expid, overrides.pop("dataset_id", None))
    model_name = overrides.get("model", params.get("model"))
    if model_name is None:
        raise ConfigError(f"experiment {expid}: no `model:` key in its config")
    try:
        model_cls = get_model_class(model_name)
    except ValueError as err:
        raise ConfigError(f"experiment {expid}: {err}") from None
    apply_overrides(params, overrides, settable=constructor_args(model_cls))
    check_run_params(params, f"experiment {expid}")
    params["gpu"] = gpu
    context = None
    if zoo_dist.torchrun_world_size() > 1:
        context = zoo_dist.init_from_env(gpu, params.get("dist_backend"), float(params.get("dist_timeout_s", 300)))
        params["gpu"] = context.gpu
    if context is None or context.is_main:
        set_logger(params)
    else:
        logging.getLogger().setLevel(logging.WARNING)
    if context is None:
        params["gpu"] = resolve_device(gpu)
    params["config_fingerprint"] = config_fingerprint(params)
    logging.info("Params: " + print_to_json(params))
    warn_unknown_model_keys(model_cls, model_params)
    dataset_id = model_params["dataset_id"]  # the config entry's name (the tuner's entries rename the id)
    warn_unknown_dataset_keys(dataset_id, load_dataset_config(config_dir, dataset_id))
    seed_everything(seed=params.get("seed", 2019))
    return params, model_params, model_cls, context


def prepare_data(params: dict, context: Optional[zoo_dist.DistContext]):
    """Step 2: raw data present (synthetic generated), dataset built once on the main rank
    (the other ranks wait for it without the collective timeout), params pointed at the
    processed splits.

    Returns (the loaded FeatureMap, the planted model's report for synthetic data or None).
    """
    def build() -> None:
        with build_lock(params["data_root"], params["dataset_id"]):
            ensure_raw_data(params)
            build_dataset(params)

    if context is None:
        build()
    else:
        zoo_dist.wait_for_main(context, build)
    ceiling = _ceiling(params)
    paths = processed_paths(params)
    params["train_data"], params["valid_data"], params["test_data"] = paths["train"], paths["valid"], paths["test"]
    feature_map = load_feature_map(params)
    logging.info("Feature specs: " + print_to_json(feature_map.features))
    return feature_map, ceiling


def evaluate_splits(trainer: Trainer, loaders: dict) -> tuple:
    """Step 5: (valid metrics, test metrics or {} without a test split)."""
    logging.info("****** Validation evaluation ******")
    valid_result = trainer.evaluate(loaders["valid"])
    test_result: Dict[str, float] = {}
    if "test" in loaders:
        logging.info("******** Test evaluation ********")
        test_result = trainer.evaluate(loaders["test"])
    return valid_result, test_result


def append_results_line(config_dir: str, params: dict, model_params: dict, result: dict) -> dict:
    """Step 6: FuxiCTR's results line appended to ``<config dir name>.csv`` and the run's
    JSON record to ``<config dir name>.jsonl`` (see :mod:`fuxictr_ext.results`); returns the record."""
    paths = results.record_paths(config_dir)
    command = " ".join(sys.argv)
    line = results.fuxictr_csv_line(command, result["expid"], params["dataset_id"], result["train_seconds"],
                                    result["valid"], result["test"], result["cost"].summary(grouped=False),
                                    result["world_size"])
    with open(paths["csv"], "a+") as fw:
        fw.write(line)
    record = results.run_record(result["expid"], params, model_params, results.base_block(config_dir), result,
                                command="python " + command)
    results.append_record(paths["jsonl"], record)
    return record


def summary_lines(result: dict) -> List[str]:
    """The closing lines of a run: its test metrics (validation without a test split)
    and, on synthetic data, the planted model's AUC. ``run_experiment`` writes them to
    the run's log; ``fuxictr-zoo run`` prints them (``run_expid.py`` prints the same text)."""
    metrics = result["test"] or result["valid"]
    lines = [f"[{result['expid']}] test {_format_metrics(metrics)}"]
    if result["ceiling"]:
        lines.append(f"[{result['expid']}] planted-model ceiling on this synthetic test split: "
                     f"AUC {result['ceiling']['ceiling_test_AUC']:.6f}")
    return lines


def run_experiment(config_dir: str, expid: str, gpu: int = -1,
                   overrides: Optional[Dict[str, object]] = None) -> dict:
    """Train and evaluate one experiment id; returns valid/test metrics and costs.

    The steps: set-up (params with ``overrides``, device, process group, logging), data
    (build, FeatureMap), model and its cost, loaders and spectrum callbacks, fit,
    evaluation, results line.
    """
    params, model_params, model_cls, context = setup_run(config_dir, expid, gpu, overrides)
    is_main = context is None or context.is_main
    feature_map, ceiling = prepare_data(params, context)

    model = model_cls(feature_map, **params)
    train_gen, valid_gen = make_loaders(feature_map, params, "train", context)
    model.count_parameters()  # FuxiCTR's own "Total number of parameters: N." line, which scripts parse
    cost = model_cost(model, next(iter(valid_gen)))
    logging.info(f"Model cost: {cost.summary()}")

    loaders = {"train": train_gen, "valid": valid_gen}
    if params.get("test_data"):
        loaders["test"] = make_loaders(feature_map, params, "test")
    run = RunDir.of(params.get("model_root", "./checkpoints/"), params["dataset_id"], expid,
                    params["config_fingerprint"], new_run_id(context))
    callbacks = build_spectrum_callbacks(params.get("spectrum_callbacks"), loaders, run.path, expid)
    trainer = Trainer(model, TrainingConfig.from_params(params), callbacks, context, checkpoint=run.checkpoint)

    start = time.time()
    try:
        trainer.fit(train_gen, valid_gen)
    except TrainingDiverged:
        if is_main:
            run.discard_checkpoint()
        raise
    train_seconds = time.time() - start

    valid_result, test_result = evaluate_splits(trainer, loaders)
    if ceiling:
        logging.info(f"Planted model (the ceiling) on the synthetic test split: "
                     f"AUC {ceiling['ceiling_test_AUC']:.6f} - logloss {ceiling['ceiling_test_logloss']:.6f}")
    result = {"expid": expid, "valid": valid_result, "test": test_result, "cost": cost,
              "train_seconds": train_seconds, "epochs": trainer.state.epochs_done, "ceiling": ceiling,
              "checkpoint": run.checkpoint, "world_size": 1 if context is None else context.world_size,
              "is_main": is_main, "record": None}
    if is_main:
        result["record"] = append_results_line(config_dir, params, model_params, result)
        run.complete({"expid": expid, "checkpoint": run.checkpoint, "finished_at": time.time(),
                      "valid": valid_result, "test": test_result, "params": params})
        for line in summary_lines(result):
            logging.info(line)
    return result
