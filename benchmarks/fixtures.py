"""Shared benchmark fixtures: synthetic datasets built into a work dir, and experiment sweeps
run through the zoo's runner on a generated copy of ``config/``.

Datasets:

* :func:`criteo_like_params` / :func:`prepare_criteo_like` - a Criteo-like synthetic dataset
  (13 numeric, 26 categorical fields, seed 7) of a given number of training rows, generated
  and built once under ``<work_dir>``; :func:`fuxictr_ext.data.load_feature_map` loads its
  FeatureMap.

Sweeps (a list of :class:`Point`, each a committed experiment id plus overrides):

* :func:`write_config_dir` copies ``config/`` into the work dir with the points as generated
  experiment ids, and the datasets' paths made absolute (the repository's ``data/``, shared
  by later runs) or, with ``rows``, moved into the work dir at that many synthetic rows;
* :func:`run_within_budget` trains the points in order while the budget allows, ``--jobs``
  (:func:`add_jobs_option`) of them at once;
* :func:`ceiling_lines` names the planted model's test AUC of synthetic data.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import yaml

from benchmarks.harness import REPO, clock, now

TINY_ROWS = 3000
"""Synthetic rows of a ``--tiny`` run's datasets."""


# ----------------------------------------------------------------------------- datasets

def criteo_like_params(work_dir: str, rows: int) -> dict:
    """Dataset config of the Criteo-like synthetic set of ``rows`` training rows in ``work_dir``
    (raw files in ``<work_dir>/raw``, the build in ``<work_dir>/data/bench_<rows>``)."""
    raw = os.path.join(work_dir, "raw")
    return {"dataset_id": f"bench_{rows}", "data_root": os.path.join(work_dir, "data"), "data_format": "parquet",
            "train_data": os.path.join(raw, "train.parquet"), "valid_data": os.path.join(raw, "valid.parquet"),
            "test_data": os.path.join(raw, "test.parquet"), "min_categr_count": 2,
            "feature_cols": [{"name": [f"I{i}" for i in range(1, 14)], "active": True, "dtype": "float",
                              "type": "numeric"},
                             {"name": [f"C{i}" for i in range(1, 27)], "active": True, "dtype": "str",
                              "type": "categorical"}],
            "label_col": {"name": "label", "dtype": "float"}}


def raw_rows(rows: int) -> int:
    """Rows generated for ``rows`` training rows (train / valid / test = 80 / 10 / 10)."""
    return rows * 5 // 4


def generate_raw(work_dir: str, rows: int) -> None:
    """The raw Criteo-like files for ``rows`` training rows in ``<work_dir>/raw`` (seed 7),
    generated unless already there at that size."""
    from fuxictr_ext.data.synthetic import write
    planted = os.path.join(work_dir, "raw", "planted.json")
    if os.path.isfile(planted):
        with open(planted) as fd:
            if json.load(fd)["rows"] == raw_rows(rows):
                return
    with clock() as t:
        write("criteo", raw_rows(rows), os.path.join(work_dir, "raw"), seed=7)
    print(f"generated {raw_rows(rows)} rows in {t.wall_s:.1f}s", flush=True)


def prepare_criteo_like(work_dir: str, rows: int) -> dict:
    """Generate and build (once) the Criteo-like set of ``rows`` training rows; its params."""
    from fuxictr_ext.data import build_dataset, is_built
    params = criteo_like_params(work_dir, rows)
    if not is_built(params):
        generate_raw(work_dir, rows)
        with clock() as t:
            build_dataset(params)
        print(f"built the dataset in {t.wall_s:.1f}s (in-process)", flush=True)
    return params


def train_split(params: dict) -> str:
    """Path of the built training split of ``params``'s dataset."""
    return os.path.join(params["data_root"], params["dataset_id"], "train.parquet")


# ----------------------------------------------------------------------------- sweeps

@dataclass
class Point:
    """One experiment of a sweep.

    Args:
        expid: generated experiment id.
        family: model family shown in tables and plots.
        base_expid: committed experiment id the point starts from.
        overrides: keys replaced in the base experiment.
        dim: effective embedding dimension (None where a sweep has none).
        channels: channel count where a sweep has one, else None.
    """

    expid: str
    family: str
    base_expid: str
    overrides: Dict[str, object] = field(default_factory=dict)
    dim: Optional[int] = None
    channels: Optional[int] = None


GENERATED_CONFIG = "zz_benchmark_points.yaml"
"""The file under ``<config_dir>/model_config`` that holds a sweep's generated experiment ids."""

_BASE_KEYS = ("model_root", "num_workers", "verbose", "early_stop_patience", "pickle_feature_encoder",
              "save_best_only", "eval_steps", "debug_mode", "group_id", "use_features",
              "feature_specs", "feature_config")


def write_config_dir(points: List[Point], epochs: Optional[int], work_dir: str, datasets: Iterable[str] = ("demo",),
                     rows: Optional[int] = None, extra: Optional[dict] = None) -> str:
    """Copy ``config/`` into ``<work_dir>/benchmark_config`` (replacing an earlier copy) and add
    the points as experiment ids (epochs ``epochs`` unless None, checkpoints under ``<work_dir>/checkpoints``,
    spectrum callbacks dropped, then ``extra`` keys set on every point).

    Args:
        datasets: dataset ids whose paths are made absolute: the repository's ``data/`` (generated
            there on first use, shared by later runs), or with ``rows`` the work dir.
        rows: synthetic rows of those datasets (their raw files and build then live in the work
            dir), for tiny runs; None keeps the configured size.

    Returns:
        the config folder.
    """
    from fuxictr.utils import load_model_config
    config_dir = os.path.join(work_dir, "benchmark_config")
    shutil.rmtree(config_dir, ignore_errors=True)
    shutil.copytree(os.path.join(REPO, "config"), config_dir)
    dataset_file = os.path.join(config_dir, "dataset_config.yaml")
    with open(dataset_file) as fd:
        content = yaml.safe_load(fd)
    for dataset_id in datasets:
        _locate(content[dataset_id], work_dir, rows)
    with open(dataset_file, "w") as fd:
        yaml.safe_dump(content, fd, sort_keys=False)

    model_root = os.path.join(work_dir, "checkpoints") + "/"
    generated = {}
    for point in points:
        params = load_model_config(os.path.join(REPO, "config"), point.base_expid)
        params.pop("model_id")
        params.pop("spectrum_callbacks", None)
        params.update(point.overrides)
        params.update(extra or {})
        if epochs is not None:
            params["epochs"] = epochs
        params["model_root"] = model_root
        generated[point.expid] = params
    base = dict(load_model_config(os.path.join(REPO, "config"), "MLCC_synthetic"))
    content = {"Base": {key: base[key] for key in _BASE_KEYS}, **generated}
    content["Base"]["model_root"] = model_root
    with open(os.path.join(config_dir, "model_config", GENERATED_CONFIG), "w") as fd:
        yaml.safe_dump(content, fd, sort_keys=False)
    return config_dir


def _locate(entry: dict, work_dir: str, rows: Optional[int]) -> dict:
    """Make a dataset config entry's paths absolute: the repository's, or with ``rows`` a synthetic
    copy of that many rows under ``<work_dir>/tiny_data``."""
    root = REPO if rows is None else os.path.join(work_dir, "tiny_data")
    for key in ("data_root", "train_data", "valid_data", "test_data"):
        entry[key] = os.path.normpath(os.path.join(root, entry[key])) + ("/" if key == "data_root" else "")
    if rows is not None:
        entry["synthetic"] = dict(entry["synthetic"], rows=rows)
    return entry


def configured_dataset(dataset_id: str, work_dir: str, rows: Optional[int] = None) -> tuple:
    """(params, FeatureMap) of a dataset of ``config/dataset_config.yaml``, generated (synthetic
    data) and built when missing: in the repository's ``data/``, or with ``rows`` a synthetic copy
    of that many rows in the work dir."""
    from fuxictr.utils import load_dataset_config

    from fuxictr_ext.runner import prepare_data
    params = _locate(dict(load_dataset_config(os.path.join(REPO, "config"), dataset_id)), work_dir, rows)
    feature_map, _ = prepare_data(params, None)
    return params, feature_map


def run_point(config_dir: str, point: Point) -> dict:
    """Train and evaluate one point through the runner; its results row."""
    from fuxictr_ext.runner import run_experiment
    result = run_experiment(config_dir, point.expid, gpu=-1)
    cost = result["cost"]
    return {"expid": point.expid, "family": point.family, "base_expid": point.base_expid,
            "overrides": point.overrides, "dim": point.dim, "channels": point.channels,
            "test_AUC": result["test"]["AUC"], "test_logloss": result["test"]["logloss"],
            "valid_AUC": result["valid"]["AUC"], "embedding_params": cost.embedding_params,
            "dense_params": cost.dense_params, "flops_per_sample": cost.flops_per_sample,
            "train_seconds": result["train_seconds"],
            "ceiling_test_AUC": (result["ceiling"] or {}).get("ceiling_test_AUC")}


def add_jobs_option(parser) -> None:
    """``--jobs N``: how many points of a sweep train at once (each in a process of its own)."""
    parser.add_argument("--jobs", type=int, default=1,
                        help="points trained at once, each in its own process with --threads torch threads "
                             "(default 1: one after another in this process)")


def timed_point(config_dir: str, point: Point, threads: Optional[int] = None) -> Tuple[dict, float]:
    """(:func:`run_point`'s row, wall seconds); ``threads`` sets torch's thread count first (a
    fresh process of ``run_within_budget(jobs > 1)`` starts with torch's default)."""
    if threads is not None:
        import torch
        torch.set_num_threads(threads)
    with clock() as t:
        row = run_point(config_dir, point)
    return row, t.wall_s


def run_within_budget(config_dir: str, points: List[Point], budget_s: Optional[float], tag: str,
                      on_row: Callable[[Point, dict, float], None], jobs: int = 1,
                      threads: Optional[int] = None) -> int:
    """Run ``points`` in order, calling ``on_row(point, row, seconds)`` after each; a new point
    starts only if the time spent plus the longest point so far fits ``budget_s`` (None: no
    limit). Returns how many points ran.

    Args:
        jobs: points trained at once. 1 runs them one after another in this process; more runs
            each in a fresh spawned process (``threads`` torch threads; the working directory and
            ``sys.path`` of this one), ``on_row`` called here as each finishes. The runs append
            their records to the config folder's results file themselves (one write per record).
        threads: torch threads of each spawned process (None: torch's default there).

    Raises:
        ValueError: ``jobs`` below 1.
    """
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    start = now()
    longest = 0.0
    pending = list(points)
    ran = 0

    def fits() -> bool:
        elapsed = now() - start
        if budget_s is None or elapsed + longest <= budget_s:
            return True
        print(f"[{tag}] budget: {elapsed / 60:.1f} min spent, longest point {longest / 60:.1f} min; "
              f"not run: {', '.join(p.expid for p in pending)}", flush=True)
        return False

    def finish(point: Point, row: dict, seconds: float) -> None:
        nonlocal longest, ran
        longest = max(longest, seconds)
        ran += 1
        on_row(point, row, seconds)
        print(f"[{tag}] elapsed {(now() - start) / 60:.1f} min", flush=True)

    if jobs == 1:
        while pending and fits():
            point = pending.pop(0)
            finish(point, *timed_point(config_dir, point))
        return ran
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        running: Dict[Future, Point] = {}
        while pending or running:
            while pending and len(running) < jobs and fits():
                point = pending.pop(0)
                running[pool.submit(timed_point, config_dir, point, threads)] = point
            if not running:
                break
            if pending and len(running) < jobs:     # the budget stopped new points: finish the running ones
                pending = []
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finish(running.pop(future), *future.result())
    return ran


def planted_ceilings(rows: List[dict]) -> List[float]:
    """The distinct planted-model test AUCs (the best any model can do) of the rows' data."""
    return sorted({row["ceiling_test_AUC"] for row in rows if row["ceiling_test_AUC"] is not None})


def ceiling_lines(rows: List[dict]) -> List[str]:
    """The report's closing lines naming the planted model's test AUC (none without one)."""
    ceilings = planted_ceilings(rows)
    if not ceilings:
        return []
    return ["", "Planted model (the best any model can do) on the same test split: AUC "
            + ", ".join(f"{c:.4f}" for c in ceilings) + "."]
