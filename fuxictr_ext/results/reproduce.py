"""Reproduce a paper table: every cell's experiment for every seed, then our numbers beside the paper's.

The papers' published numbers are data in ``<config>/paper_results/<paper>.yaml``: one
entry per table cell with ``table``, ``row``, ``column``, ``dataset``, ``metric``,
``value`` (and ``std`` where the paper prints one) and, where one of our configs runs that
cell, ``expid`` (a config id) with optional ``overrides`` (a tuner grid point) and their
``run_id``. ``reproduce``

1. picks the cells of one table on one dataset,
2. writes, for each seed, a FuxiCTR config directory ``<workdir>/seed_<s>/<record>/`` with
   one block per run (the experiment's config + overrides + ``seed: s``; at ``--scale tiny``
   also the tiny widths and data of ``paper_results/tiny.yaml``),
3. runs every (run, seed) sequentially through :func:`fuxictr_ext.runner.run_experiment`,
   skipping those already in the results record ``<record>.jsonl`` in the working
   directory (so a killed reproduction resumes where it stopped); a run that raises is
   recorded as failed and the others go on,
4. writes ``<out>/<record>.md``: per cell our mean +- std over the seeds, how many seeds it
   holds, the paper's value and our difference, and a PNG for tables with a ``plot`` entry
   (AUC against width, one line per model and depth). A cell with a failed or missing seed
   says so; nothing is averaged over missing runs silently.

``<record>`` is ``<paper>_<table>_<dataset>`` (``_tiny`` at tiny scale). Seeds are the
``seed`` of the table's first experiment (2019 in every config here) + 0, 1, ..., n - 1;
n defaults to the paper's own count (RoBlock 20, RankElastor 10; MLCC and the rank-aware
paper give none, so ``--seeds`` is required there). Runs are sequential, on the one device
``--gpu`` names. The exit status is 1 when a run failed, 2 for a bad table, dataset or config.

Examples::

    python -m fuxictr_ext.results.reproduce --list
    python -m fuxictr_ext.results.reproduce roblock:table3 --dataset criteo_x1 --gpu 0        # 20 seeds
    python -m fuxictr_ext.results.reproduce roblock:table3 --dataset criteo_x1 --scale tiny --seeds 3 --threads 1
    python -m fuxictr_ext.results.reproduce roblock:table3 --dataset criteo_x1 --report-only  # no runs
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import yaml

from .. import results
from ..atomic import write_text_atomic
from ..config import ConfigError, ZooError, load_params
from ..runner import run_experiment

__all__ = ["Run", "load_paper", "list_tables", "main", "plan_runs", "reproduce", "table_report", "write_configs"]

PAPER_DIR = "paper_results"
TINY_FILE = "tiny.yaml"
RUNNER_METRICS = ("AUC", "logloss", "gAUC")


@dataclass
class Run:
    """One experiment of a table: the config id it starts from, its cell's overrides, its run id.

    Attributes:
        run_id: the experiment id the runs are recorded under.
        expid: the config id it starts from.
        overrides: settings on top of the config (a tuner grid point), ``{}`` for none.
        dataset_id: the dataset it runs on.
    """

    run_id: str
    expid: str
    overrides: dict
    dataset_id: str


def _paper_path(config_dir: str, paper: str) -> str:
    return os.path.join(config_dir, PAPER_DIR, f"{paper}.yaml")


def load_paper(config_dir: str, paper: str) -> dict:
    """``<config_dir>/paper_results/<paper>.yaml``; ConfigError naming the file if absent or bad."""
    path = _paper_path(config_dir, paper)
    if not os.path.isfile(path):
        known = sorted(Path(p).stem for p in glob.glob(os.path.join(config_dir, PAPER_DIR, "*.yaml"))
                       if Path(p).name != TINY_FILE)
        raise ConfigError(f"no paper {paper!r}: {path} does not exist (papers: {', '.join(known)})")
    with open(path) as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
    for number, cell in enumerate(data.get("cells", [])):
        missing = [k for k in ("table", "row", "column", "dataset", "metric", "value") if k not in cell]
        if missing:
            raise ConfigError(f"{path}: cell {number} has no {', '.join(missing)}")
    data["path"] = path
    return data


def list_tables(config_dir: str) -> List[Tuple[str, str, List[str], int, int]]:
    """``(paper, table, datasets, cells, cells with an experiment)`` for every table of every paper."""
    rows = []
    for path in sorted(glob.glob(os.path.join(config_dir, PAPER_DIR, "*.yaml"))):
        if Path(path).name == TINY_FILE:
            continue
        paper = load_paper(config_dir, Path(path).stem)
        tables: "OrderedDict[str, List[dict]]" = OrderedDict()
        for cell in paper.get("cells", []):
            tables.setdefault(cell["table"], []).append(cell)
        for table, cells in tables.items():
            datasets = sorted({c["dataset"] for c in cells})
            rows.append((Path(path).stem, table, datasets, len(cells), sum(1 for c in cells if c.get("expid"))))
    return rows


def _split_table_id(table_id: str) -> Tuple[str, str]:
    if ":" not in table_id:
        raise ConfigError(f"table {table_id!r}: write it as <paper>:<table>, e.g. roblock:table3 (see --list)")
    paper, table = table_id.split(":", 1)
    return paper, table


def select_cells(paper: dict, table: str, dataset: Optional[str]) -> Tuple[List[dict], str]:
    """The cells of ``table`` on ``dataset`` (the only one when ``None`` and the table has one)."""
    cells = [c for c in paper.get("cells", []) if c["table"] == table]
    if not cells:
        tables = sorted({c["table"] for c in paper.get("cells", [])})
        raise ConfigError(f"{paper['path']}: no table {table!r} (tables: {', '.join(tables)})")
    datasets = sorted({c["dataset"] for c in cells})
    if dataset is None:
        if len(datasets) > 1:
            raise ConfigError(f"{table} has cells on {', '.join(datasets)}: choose one with --dataset")
        dataset = datasets[0]
    chosen = [c for c in cells if c["dataset"] == dataset]
    if not chosen:
        raise ConfigError(f"--dataset {dataset}: {table} has cells on {', '.join(datasets)} only")
    return chosen, dataset


def _dataset_configs(config_dir: str) -> dict:
    files = glob.glob(os.path.join(config_dir, "dataset_config.yaml")) or \
        sorted(glob.glob(os.path.join(config_dir, "dataset_config", "*.yaml")))
    datasets: dict = {}
    for path in files:
        with open(path) as handle:
            datasets.update(yaml.safe_load(handle) or {})
    return datasets


def _load_tiny(config_dir: str) -> dict:
    path = os.path.join(config_dir, PAPER_DIR, TINY_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"--scale tiny needs {path}")
    with open(path) as handle:
        tiny = yaml.safe_load(handle) or {}
    tiny["path"] = path
    return tiny


def _tiny_dataset(datasets: dict, spec: Mapping) -> dict:
    """The tiny dataset block: the ``from`` dataset with fewer synthetic rows in its own folder."""
    source = datasets.get(spec["from"])
    if source is None or not source.get("synthetic"):
        raise ConfigError(f"tiny dataset {spec['dataset_id']}: {spec['from']!r} is not a synthetic dataset id")
    block = dict(source, synthetic=dict(source["synthetic"], rows=int(spec["rows"])))
    for split in ("train_data", "valid_data", "test_data"):
        if block.get(split):
            raw_root = os.path.dirname(os.path.dirname(block[split]))
            block[split] = os.path.join(raw_root, spec["dataset_id"], os.path.basename(block[split]))
    return block


def plan_runs(config_dir: str, cells: Sequence[dict], scale: str) -> "OrderedDict[str, Tuple[Run, dict]]":
    """Every distinct run of ``cells`` (several cells may share one, e.g. AUC and logloss)
    with its config block before the seed: ``{run_id: (Run, block)}``."""
    tiny = _load_tiny(config_dir) if scale == "tiny" else None
    plan: "OrderedDict[str, Tuple[Run, dict]]" = OrderedDict()
    configs: Dict[str, dict] = {}
    for cell in cells:
        if not cell.get("expid"):
            continue
        run_id = cell.get("run_id") or cell["expid"]
        if cell["expid"] not in configs:
            configs[cell["expid"]] = load_params(config_dir, cell["expid"])[1]
        block = {k: v for k, v in configs[cell["expid"]].items() if k != "model_id"}
        if tiny is not None:
            spec = tiny.get("datasets", {}).get(cell["dataset"])
            widths = tiny.get("models", {}).get(block.get("model"))
            if spec is None or widths is None:
                what = f"dataset {cell['dataset']}" if spec is None else f"model {block.get('model')}"
                raise ConfigError(f"{tiny['path']}: no tiny scale for {what} (cell {run_id})")
            block.update(tiny.get("all_models", {}))
            block.update(widths)
            block.update((tiny.get("experiments") or {}).get(cell["expid"], {}))
            block["dataset_id"] = spec["dataset_id"]
            run_id += "_tiny"
        block.update(cell.get("overrides") or {})
        run = Run(run_id, cell["expid"], dict(cell.get("overrides") or {}), block["dataset_id"])
        previous = plan.get(run_id)
        if previous is not None and previous[1] != block:
            raise ConfigError(f"run id {run_id} names two different configs in the paper's cells")
        plan[run_id] = (run, block)
    return plan


def write_configs(config_dir: str, work_dir: str, record_name: str, plan: Mapping, seeds: Sequence[int],
                  scale: str) -> Dict[int, str]:
    """One FuxiCTR config directory per seed; returns ``{seed: directory}``."""
    datasets = _dataset_configs(config_dir)
    if scale == "tiny":
        for spec in _load_tiny(config_dir).get("datasets", {}).values():
            if spec["from"] in datasets:
                datasets[spec["dataset_id"]] = _tiny_dataset(datasets, spec)
    base = results.base_block(config_dir)
    folders = {}
    for seed in seeds:
        folder = os.path.join(work_dir, f"seed_{seed}", record_name)
        models = OrderedDict([("Base", base)])
        for run_id, (_, block) in plan.items():
            models[run_id] = dict(block, seed=seed)
        os.makedirs(folder, exist_ok=True)
        write_text_atomic(os.path.join(folder, "model_config.yaml"),
                          yaml.safe_dump(dict(models), sort_keys=False, default_flow_style=None))
        write_text_atomic(os.path.join(folder, "dataset_config.yaml"),
                          yaml.safe_dump(datasets, sort_keys=False, default_flow_style=None))
        folders[seed] = folder
    return folders


def _seed_list(paper: dict, plan: Mapping, count: Optional[int]) -> List[int]:
    if count is None:
        count = paper.get("seeds")
        if not count:
            raise ConfigError(f"{paper['path']}: the paper gives no number of seeds "
                              f"({paper.get('seeds_note', 'none stated')}); pass --seeds N")
    if int(count) < 1:
        raise ConfigError(f"--seeds {count}: need at least 1")
    first = next(iter(plan.values()))[1].get("seed", 2019) if plan else 2019
    return [int(first) + i for i in range(int(count))]


def _runs_done(records: Sequence[Mapping]) -> set:
    return {(r["expid"], r.get("dataset_id"), r.get("seed")) for r in records if r.get("status", "ok") == "ok"}


def _failure_record(run: Run, seed: int, error: BaseException) -> dict:
    return {"record": results.RECORD_VERSION, "status": "failed", "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "expid": run.run_id, "dataset_id": run.dataset_id, "seed": seed,
            "error": f"{error.__class__.__name__}: {error}"[:500], "git_revision": results.git_revision(),
            "command": "python " + " ".join(sys.argv)}


def _our_value(record: Mapping, metric: str) -> Optional[float]:
    if metric in RUNNER_METRICS:
        return record.get("test", {}).get(metric)
    if metric == "params_M":
        return record.get("params", {}).get("total", 0) / 1e6
    return None


def _digits(metric: str) -> int:
    return 2 if metric == "params_M" else 6


def table_report(paper: dict, table: str, dataset: str, cells: Sequence[dict],
                 seeds: Sequence[int], records: Sequence[Mapping], scale: str, command: str,
                 png_name: Optional[str] = None) -> Tuple[str, List[dict]]:
    """The markdown of one table and its rows ``{"cell", "summary", "flops"}`` (for the plot).

    Args:
        paper: :func:`load_paper`'s content; cells: the table's cells on ``dataset``;
        seeds: the seeds each run should have; records: the results record's lines;
        scale: ``"full"`` or ``"tiny"`` (run ids get ``_tiny``); command: shown in the report.
    """
    by_run: Dict[Tuple[str, int], dict] = {}
    failures: Dict[Tuple[str, int], str] = {}
    for record in records:
        key = (record.get("expid"), record.get("seed"))
        if record.get("status", "ok") == "ok":
            by_run[key] = dict(record)
            failures.pop(key, None)
        elif key not in by_run:
            failures[key] = record.get("error", "failed")
    info = paper.get("tables", {}).get(table, {})
    lines = [f"# {paper.get('paper', '')} {table} on {dataset}" + (" (tiny scale)" if scale == "tiny" else ""), "",
             f"{info.get('caption', '')}".strip(), "",
             f"Command: `{command}`", "",
             f"Seeds: {', '.join(str(s) for s in seeds)} ({len(seeds)}; the paper: "
             f"{paper.get('seeds') or 'none stated'}{' - ' + paper['seeds_note'] if paper.get('seeds_note') else ''}).",
             "Ours: mean +- sample std (n - 1) of the test metric over the seeds that finished; "
             "`k/n` says how many did. Difference: ours - paper."]
    if scale == "tiny":
        lines.append("Tiny scale: a few thousand synthetic rows and the demo widths "
                     "(config/paper_results/tiny.yaml); the paper's numbers are on the real data, so the "
                     "differences say nothing about the paper; the table shows the flow.")
    if info.get("note"):
        lines.append(f"Note: {info['note']}")
    lines += ["", "| row | column | metric | ours | seeds | paper | difference | run |", "|---|---|---|---|---|---|---|---|"]
    rows = []
    for cell in cells:
        metric = cell["metric"]
        paper_text = f"{cell['value']}" + (f" +- {cell['std']}" if cell.get("std") is not None else "")
        row = {"cell": cell, "summary": None}
        if not cell.get("expid"):
            status = "not run: " + cell.get("note", "no experiment in this repository")
            lines.append(f"| {cell['row']} | {cell['column']} | {metric} | - | - | {paper_text} | - | {status} |")
            rows.append(row)
            continue
        run_id = (cell.get("run_id") or cell["expid"]) + ("_tiny" if scale == "tiny" else "")
        values, problems = [], []
        for seed in seeds:
            record = by_run.get((run_id, seed))
            if record is not None:
                value = _our_value(record, metric)
                if value is None:
                    problems.append(f"seed {seed}: no {metric} in its record")
                else:
                    values.append(value)
            elif (run_id, seed) in failures:
                problems.append(f"FAILED seed {seed}: {failures[(run_id, seed)]}")
            else:
                problems.append(f"missing seed {seed}")
        if metric not in RUNNER_METRICS and metric != "params_M":
            ours, diff, seeds_text = "-", "-", "-"
            run_text = f"{run_id} (the runner does not measure {metric})"
        else:
            summary = results.summarize(values)
            row["summary"] = summary
            flops = [by_run[(run_id, s)]["flops_per_sample"] for s in seeds
                     if by_run.get((run_id, s), {}).get("flops_per_sample") is not None]
            row["flops"] = sum(flops) / len(flops) if flops else None
            ours = summary.text(_digits(metric))
            diff = f"{summary.mean - float(cell['value']):+.{_digits(metric)}f}" if summary.n else "-"
            seeds_text = f"{summary.n}/{len(seeds)}"
            run_text = run_id + ("".join(f"; {p}" for p in problems) if problems else "")
        lines.append(f"| {cell['row']} | {cell['column']} | {metric} | {ours} | {seeds_text} | {paper_text} | "
                     f"{diff} | {run_text} |")
        rows.append(row)
    if png_name:
        lines += ["", f"![{table}]({png_name})"]
    return "\n".join(lines) + "\n", rows


def plot_table(rows: Sequence[dict], spec: Mapping, title: str, path: str) -> bool:
    """Ours (left: solid, error bars = std) and the paper's (right: dashed) metric, one line
    per value of the cell fields ``spec['line']`` (legend ``spec['label']``, a format string
    over the cell's fields); False if nothing to draw.

    The x axis is the cell field ``spec['x']`` (width, depth, heads ...; log scale with
    ``log_x``) on both sides, or cost: ``x_ours: flops_per_sample`` puts our measured MFLOPs
    per sample on the left and ``x_paper: <metric>`` the paper's value of that metric in the
    same row (e.g. GFLOPs) on the right, both on a linear scale.
    """
    from ..spectrum.plot import require_matplotlib, save_figure

    metric = spec.get("metric", "AUC")
    siblings = {(r["cell"]["row"], r["cell"].get("series")): r["cell"]["value"] for r in rows
                if "x_paper" in spec and r["cell"]["metric"] == spec["x_paper"]}

    def x_of(row: dict, side: str) -> Optional[float]:
        cell = row["cell"]
        if side == "paper" and "x_paper" in spec:
            return siblings.get((cell["row"], cell.get("series")))
        if side == "ours" and spec.get("x_ours") == "flops_per_sample":
            return row["flops"] / 1e6 if row.get("flops") else None
        return cell.get(spec["x"])

    lines: "OrderedDict[tuple, List[dict]]" = OrderedDict()
    for row in rows:
        if row["cell"]["metric"] == metric:
            lines.setdefault(tuple(row["cell"].get(k) for k in spec.get("line", [])), []).append(row)
    if not lines:
        return False
    Figure = require_matplotlib()
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    axes = {"ours": None, "paper": None}
    axes["ours"], axes["paper"] = fig.subplots(1, 2)
    for colour, (key, members) in zip([f"C{i % 10}" for i in range(len(lines))], lines.items()):
        label = spec.get("label", " ".join("{%s}" % name for name in spec.get("line", []))).format(**members[0]["cell"])
        paper = sorted((x_of(r, "paper"), r["cell"]["value"]) for r in members if x_of(r, "paper") is not None)
        if paper:
            axes["paper"].plot(*zip(*paper), "--o", color=colour, label=label, markersize=3)
        ours = sorted((x_of(r, "ours"), r["summary"].mean, r["summary"].std or 0.0) for r in members
                      if r["summary"] is not None and r["summary"].n and x_of(r, "ours") is not None)
        if ours:
            xs, means, stds = zip(*ours)
            axes["ours"].errorbar(xs, means, yerr=stds, fmt="-o", color=colour, label=label, markersize=3, capsize=2)
    for side, ax in axes.items():
        cost_axis = (side == "ours" and "x_ours" in spec) or (side == "paper" and "x_paper" in spec)
        ax.set_title(side)
        ax.set_xlabel(spec.get(f"xlabel_{side}", spec.get("xlabel", spec["x"])) if cost_axis else
                      spec.get("xlabel", spec["x"]))
        ax.set_ylabel(f"test {metric}")
        if not cost_axis:
            if spec.get("log_x"):
                ax.set_xscale("log")
                ax.minorticks_off()
            ticks = sorted({r["cell"][spec["x"]] for members in lines.values() for r in members if spec["x"] in r["cell"]})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.grid(alpha=0.3)
    axes["paper"].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
    return True


def reproduce(table_id: str, dataset: Optional[str] = None, seeds: Optional[int] = None, gpu: int = -1,
              scale: str = "full", config_dir: str = "./config", out_dir: str = "results",
              work_dir: str = "reproduce_runs", report_only: bool = False, command: Optional[str] = None) -> dict:
    """Run one table (see the module docstring); returns ``{"report": path, "png": path or None,
    "record": path, "ran": n, "skipped": n, "failed": n}``."""
    paper_name, table = _split_table_id(table_id)
    paper = load_paper(config_dir, paper_name)
    cells, dataset = select_cells(paper, table, dataset)
    plan = plan_runs(config_dir, cells, scale)
    seed_list = _seed_list(paper, plan, seeds)
    record_name = f"{paper_name}_{table}_{dataset}" + ("_tiny" if scale == "tiny" else "")
    record_path = results.record_paths(record_name)["jsonl"]
    counts = {"ran": 0, "skipped": 0, "failed": 0}
    if not report_only and plan:
        folders = write_configs(config_dir, work_dir, record_name, plan, seed_list, scale)
        done = _runs_done(results.read_records(record_path))
        total = len(plan) * len(seed_list)
        for seed in seed_list:
            for run_id, (run, _) in plan.items():
                if (run_id, run.dataset_id, seed) in done:
                    counts["skipped"] += 1
                    continue
                step = counts["ran"] + counts["skipped"] + counts["failed"] + 1
                print(f"[reproduce] {step}/{total}: {run_id} seed {seed}", flush=True)
                try:
                    run_experiment(folders[seed], run_id, gpu)
                    counts["ran"] += 1
                except Exception as err:  # a failed cell is recorded and reported; the table goes on
                    logging.error(f"[reproduce] {run_id} seed {seed} failed:\n{traceback.format_exc()}")
                    results.append_record(record_path, _failure_record(run, seed, err))
                    counts["failed"] += 1
    spec = paper.get("tables", {}).get(table, {}).get("plot")
    png_path = os.path.join(out_dir, record_name + ".png") if spec else None
    text, rows = table_report(paper, table, dataset, cells, seed_list, results.read_records(record_path), scale,
                              command or "python -m fuxictr_ext.results.reproduce " + " ".join(sys.argv[1:]),
                              os.path.basename(png_path) if png_path else None)
    if png_path and not plot_table(rows, spec, f"{paper.get('paper', '')} {table}, {dataset}", png_path):
        png_path = None
        text = text.replace(f"\n![{table}]({record_name}.png)\n", "\n")
    report_path = os.path.join(out_dir, record_name + ".md")
    write_text_atomic(report_path, text)
    return dict(counts, report=report_path, png=png_path, record=str(record_path))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description="Reproduce a paper table: run every cell's experiment for "
                                                 "every seed, then report ours beside the paper's numbers.")
    parser.add_argument("table", nargs="?", help="<paper>:<table>, e.g. roblock:table3 (see --list)")
    parser.add_argument("--dataset", default=None, help="dataset id of the cells, e.g. criteo_x1")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the paper's)")
    parser.add_argument("--gpu", type=int, default=-1, help="GPU index, -1 for CPU")
    parser.add_argument("--scale", choices=["full", "tiny"], default="full",
                        help="tiny: synthetic data and small widths (config/paper_results/tiny.yaml)")
    parser.add_argument("--config", default="./config", help="config directory (with paper_results/)")
    parser.add_argument("--out", default="results", help="folder of the markdown report and PNG")
    parser.add_argument("--workdir", default="reproduce_runs", help="folder of the generated config directories")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the record, run nothing")
    parser.add_argument("--list", action="store_true", help="list the papers' tables and exit")
    args = parser.parse_args(argv)
    try:
        if args.list:
            print("| table | datasets | cells | cells with an experiment |\n|---|---|---|---|")
            for paper, table, datasets, n, mapped in list_tables(args.config):
                print(f"| {paper}:{table} | {', '.join(datasets)} | {n} | {mapped} |")
            return 0
        if not args.table:
            parser.error("give a table (<paper>:<table>) or --list")
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        start = time.time()
        outcome = reproduce(args.table, args.dataset, args.seeds, args.gpu, args.scale, args.config, args.out,
                            args.workdir, args.report_only,
                            command="python -m fuxictr_ext.results.reproduce " + " ".join(sys.argv[1:] if argv is None else argv))
    except ZooError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    print(f"[reproduce] {outcome['ran']} run(s), {outcome['skipped']} already recorded, {outcome['failed']} failed "
          f"in {time.time() - start:.0f} s; record {outcome['record']}; report {outcome['report']}"
          + (f"; plot {outcome['png']}" if outcome["png"] else ""))
    return 1 if outcome["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
