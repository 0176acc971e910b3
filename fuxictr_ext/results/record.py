"""Results as data: one JSON record per run beside FuxiCTR's CSV line, and reports made from them.

Every run of :func:`fuxictr_ext.runner.run_experiment` appends two lines in the working
directory, both named after the config directory (FuxiCTR's convention):

* ``<config dir name>.csv`` - FuxiCTR's own results line, field for field as FuxiCTR's
  ``run_expid.py`` writes it (``' {time},[command] python ...,[exp_id] ...,[dataset_id] ...,
  [train] ...,[val] ...,[test] ...'``), so FuxiCTR's scripts that read it with
  ``pd.read_csv(path, header=None)`` keep working (``experiment/enumerate_param_list.py``
  takes column 2 as the experiment id). Two fields of ours follow, ``[cost]`` and
  ``[processes]``; no field holds a comma, so every line has the same 9 columns.
* ``<config dir name>.jsonl`` - the machine-readable record, one JSON object a line::

    {"record": 1, "status": "ok", "time": "2026-12-01T20:31:02", "expid": "DNN_demo",
     "dataset_id": "demo", "model": "DNN", "seed": 2019,
     "config": {...every model-config value that differs from the Base block...},
     "valid": {"logloss": 0.48, "AUC": 0.75}, "test": {...},
     "config_fingerprint": "3f2a...", "epochs": 3,
     "params": {"total": 123456, "embedding": 120000, "dense": 3456},
     "flops_per_sample": 8192.0, "train_seconds": 12.3, "processes": 1,
     "git_revision": "a1eb035...", "command": "python run_expid.py --expid DNN_demo"}

  :mod:`fuxictr_ext.results.reproduce` adds ``"status": "failed"`` records (with ``"error"``) for
  runs that raised, so a report can say which runs are missing and why.

Each line is written with one ``write`` call on a file opened for appending, then flushed
and fsynced: concurrent writers (tuner children) interleave whole lines, and a killed
run leaves either its whole line or none.

Report (group by experiment id, mean +- sample std over the records of each id)::

    python -m fuxictr_ext.results config.jsonl                  # every metric of the test split
    python -m fuxictr_ext.results config.jsonl --split valid --out report.md
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import subprocess
import sys
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import yaml

from ..atomic import write_text_atomic

__all__ = ["RECORD_VERSION", "Summary", "append_record", "base_block", "config_diff", "fuxictr_csv_line",
           "git_revision", "group_records", "main", "read_records", "record_paths", "report_markdown",
           "run_record", "summarize"]

RECORD_VERSION = 1
_REPO = Path(__file__).resolve().parents[2]


def record_paths(config_dir: str) -> Dict[str, Path]:
    """``{"csv": <name>.csv, "jsonl": <name>.jsonl}`` in the working directory, where
    ``<name>`` is the config directory's name (FuxiCTR's rule)."""
    name = Path(config_dir).name.replace(".yaml", "")
    return {"csv": Path(name + ".csv"), "jsonl": Path(name + ".jsonl")}


def base_block(config_dir: str) -> dict:
    """The ``Base`` block FuxiCTR's ``load_model_config`` merges under every experiment id of
    ``config_dir`` (``model_config.yaml``, else the first of ``model_config/*.yaml`` in glob
    order that has one); ``{}`` when there is none."""
    files = glob.glob(os.path.join(config_dir, "model_config.yaml")) or \
        glob.glob(os.path.join(config_dir, "model_config", "*.yaml"))
    for path in files:
        with open(path) as handle:
            content = yaml.safe_load(handle) or {}
        if "Base" in content:
            return dict(content["Base"] or {})
    return {}


def config_diff(model_params: Mapping, base: Mapping) -> dict:
    """The model-config values that differ from (or are absent in) ``base``; FuxiCTR's
    derived ``model_id`` is left out (it is the record's ``expid``)."""
    missing = object()
    return {key: value for key, value in model_params.items()
            if key != "model_id" and base.get(key, missing) != value}


def git_revision(path: Path = _REPO) -> Optional[str]:
    """``git rev-parse HEAD`` of the checkout holding this package, with ``-dirty`` when
    tracked files differ from it; None outside a git checkout or without git."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    revision = head.stdout.strip()
    return revision + "-dirty" if status.returncode == 0 and status.stdout.strip() else revision


def _csv_field(text: str) -> str:
    """A field value that cannot split FuxiCTR's comma-separated line (commas -> semicolons)."""
    return str(text).replace(",", ";").replace("\n", " ")


def _metrics_text(metrics: Mapping[str, float]) -> str:
    """FuxiCTR's ``print_to_list``: ``"logloss: 0.480000 - AUC: 0.750000"``."""
    return " - ".join(f"{key}: {value:.6f}" for key, value in metrics.items())


def fuxictr_csv_line(command: str, expid: str, dataset_id: str, train_seconds: float,
                     valid: Mapping[str, float], test: Mapping[str, float], cost_text: str,
                     processes: int, when: Optional[datetime] = None) -> str:
    """FuxiCTR's results line (its 7 fields, in its order and spelling) plus ``[cost]`` and
    ``[processes]``; 9 comma-separated fields whatever the values hold.

    Example:
        >>> fuxictr_csv_line("run_expid.py --expid X", "X", "demo", 1.0, {"AUC": 0.7}, {"AUC": 0.7},
        ...                  "params: total=10 | flops/sample=20", 1).count(",")
        8
    """
    when = when or datetime.now()
    fields = [f" {when.strftime('%Y%m%d-%H%M%S')}", f"[command] python {command}", f"[exp_id] {expid}",
              f"[dataset_id] {dataset_id}", f"[train] {train_seconds:.1f}s", f"[val] {_metrics_text(valid)}",
              f"[test] {_metrics_text(test)}", f"[cost] {cost_text}", f"[processes] {processes}"]
    return ",".join(_csv_field(field) for field in fields) + "\n"


def run_record(expid: str, params: Mapping, model_params: Mapping, base: Mapping, result: Mapping,
               command: Optional[str] = None) -> dict:
    """The JSON record of one finished run (see the module docstring for the fields).

    Args:
        expid: the experiment id that ran.
        params: the run's merged params (model and dataset config).
        model_params: the model config of ``expid`` as FuxiCTR merged it (Base + its block).
        base: the Base block (:func:`base_block`).
        result: :func:`fuxictr_ext.runner.run_experiment`'s result (valid, test, cost,
            train_seconds, epochs, world_size).

    ``config_fingerprint`` is the run's settings hash (:func:`fuxictr_ext.config.config_fingerprint`
    of the merged params, seed included): a record with the same fingerprint ran the same
    config, which lets a benchmark skip runs it already has. ``epochs`` is how many epochs
    trained (early stopping included).
    """
    cost = result["cost"]
    return {"record": RECORD_VERSION, "status": "ok", "time": datetime.now().isoformat(timespec="seconds"),
            "expid": expid, "dataset_id": params["dataset_id"], "model": params.get("model"),
            "seed": params.get("seed", 2019), "config": config_diff(model_params, base),
            "config_fingerprint": params.get("config_fingerprint"), "epochs": result.get("epochs"),
            "valid": dict(result["valid"]), "test": dict(result["test"]),
            "params": {"total": cost.total_params, "embedding": cost.embedding_params, "dense": cost.dense_params},
            "flops_per_sample": cost.flops_per_sample, "train_seconds": round(float(result["train_seconds"]), 3),
            "processes": int(result["world_size"]), "git_revision": git_revision(),
            "command": command if command is not None else "python " + " ".join(sys.argv)}


def _json_value(value):
    """YAML values are JSON's except tuples and odd scalars: lists and strings for those."""
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def append_record(path, record: Mapping) -> None:
    """Append ``record`` as one JSON line: one write, flushed and fsynced."""
    line = json.dumps(record, default=_json_value, sort_keys=False) + "\n"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_records(path) -> List[dict]:
    """Every record of a ``.jsonl`` results file, in order; a missing file is empty.

    A last line without its newline (a writer killed mid-line) is skipped; any other line
    that is not a JSON object raises ValueError naming the file and line.
    """
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        text = handle.read()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                continue
            raise ValueError(f"{path}, line {number}: not a JSON record: {err}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}: not a JSON object")
        records.append(record)
    return records


class Summary:
    """Mean and sample standard deviation (n - 1 in the denominator) of n values.

    Attributes:
        n: number of values; mean; std (None for n < 2).
    """

    def __init__(self, values: Sequence[float]):
        self.values = [float(v) for v in values]
        self.n = len(self.values)
        self.mean = sum(self.values) / self.n if self.n else None
        self.std = (math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))
                    if self.n > 1 else None)

    def text(self, digits: int = 6) -> str:
        """``"0.812345 +- 0.000123"``; ``"0.812345"`` for one value; ``"-"`` for none."""
        if not self.n:
            return "-"
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} +- {self.std:.{digits}f}"


def summarize(values: Sequence[float]) -> Summary:
    """:class:`Summary` of ``values``."""
    return Summary(values)


def group_records(records: Iterable[Mapping]) -> "OrderedDict[tuple, List[dict]]":
    """Successful records grouped by (expid, dataset_id), in order of first appearance;
    a seed recorded twice counts once (its latest record)."""
    groups: "OrderedDict[tuple, Dict[object, dict]]" = OrderedDict()
    for record in records:
        if record.get("status", "ok") != "ok":
            continue
        groups.setdefault((record["expid"], record.get("dataset_id")), {})[record.get("seed")] = dict(record)
    return OrderedDict((key, list(by_seed.values())) for key, by_seed in groups.items())


def report_markdown(records: Sequence[Mapping], split: str = "test", title: str = "Results") -> str:
    """A markdown table: one row per (expid, dataset), n seeds, mean +- std of every metric
    of ``split``, parameters and FLOPs per sample; failed runs listed below it."""
    groups = group_records(records)
    metrics: List[str] = []
    for runs in groups.values():
        for run in runs:
            metrics.extend(m for m in run.get(split, {}) if m not in metrics)
    lines = [f"# {title}", "", f"{split} metrics: mean +- sample std over seeds (n - 1 in the denominator).", "",
             "| expid | dataset | seeds | " + " | ".join(metrics) + " | params | flops/sample |",
             "|---|---|---|" + "---|" * len(metrics) + "---|---|"]
    for (expid, dataset), runs in groups.items():
        cells = [summarize([run[split][m] for run in runs if m in run.get(split, {})]).text() for m in metrics]
        params = sorted({run.get("params", {}).get("total") for run in runs} - {None})
        flops = sorted({run.get("flops_per_sample") for run in runs} - {None})
        seeds = ", ".join(str(run.get("seed")) for run in runs)
        lines.append(f"| {expid} | {dataset} | {len(runs)} ({seeds}) | " + " | ".join(cells)
                     + f" | {'/'.join(str(p) for p in params) or '-'} | {'/'.join(f'{f:.0f}' for f in flops) or '-'} |")
    failed = [r for r in records if r.get("status", "ok") != "ok"]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"* {r['expid']} ({r.get('dataset_id')}, seed {r.get('seed')}): {r.get('error', 'no message')}"
                  for r in failed]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fuxictr_ext.results RECORD.jsonl [--split test] [--out report.md]``."""
    parser = argparse.ArgumentParser(description="Report on a results record: group by experiment id, "
                                                 "mean +- std over seeds, without re-running.")
    parser.add_argument("record", help="a .jsonl results record (written beside FuxiCTR's CSV)")
    parser.add_argument("--split", default="test", choices=["test", "valid"], help="metrics of this split")
    parser.add_argument("--out", default=None, help="write the markdown here instead of printing it")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.record):
        print(f"report: error: no results record at {args.record}", file=sys.stderr)
        return 2
    try:
        records = read_records(args.record)
    except ValueError as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 2
    text = report_markdown(records, split=args.split, title=f"Results of {args.record}")
    if args.out:
        write_text_atomic(args.out, text)
        print(f"report: wrote {args.out}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
