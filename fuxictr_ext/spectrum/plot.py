"""Plots of spectrum logs: per-run epoch curves, several runs overlaid, per-sample histograms.

The spectrum callbacks (:mod:`fuxictr_ext.spectrum.callbacks`) write ``<run>.spectrum.json``
beside the checkpoint. This module draws them:

* :func:`plot_epochs` - one run, one subplot per metric, the metric against the
  stage, one line per recorded epoch (the callbacks' own PNG);
* :func:`plot_runs` - several runs overlaid, one line per run (RoBlock Figure 4,
  RankElastor Figures 2 and 6: layer-wise IA / effective rank of several models);
* :func:`plot_histograms` - histograms of the per-sample values of chosen stages,
  one subplot per stage, runs overlaid (RankElastor Figures 1 and 5: the
  distribution shift from raw embeddings to successive module outputs).

Command line (``python -m fuxictr_ext.spectrum.plot`` or ``fuxictr-zoo-plot``)::

    fuxictr-zoo-plot a.spectrum.json b.spectrum.json --metric IA --out ia.png
    fuxictr-zoo-plot a.spectrum.json b.spectrum.json --metric stable_rank \\
        --hist embedding mix_0_out --out hist.png --epoch end

matplotlib is an optional dependency (``pip install 'fuxictr-zoo[plots]'``); it
is imported only when a plot is drawn, and never through pyplot (no global
figure state, no display backend needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..atomic import atomic_output

__all__ = ["METRIC_NAMES", "epoch_text", "load_spectrum", "main", "metric_name", "plot_epochs",
           "plot_histograms", "plot_runs", "require_matplotlib", "select_records"]

Record = Dict[str, object]
Epoch = Union[int, str]

METRIC_NAMES = {"IA": "information abundance", "stable_rank": "stable rank", "erank": "effective rank"}


def metric_name(metric: str) -> str:
    """The metric's full name with its key, e.g. ``"information abundance (IA)"``."""
    return f"{METRIC_NAMES[metric]} ({metric})" if metric in METRIC_NAMES else metric


def epoch_text(epoch: Epoch) -> str:
    """``"epoch 3"``; the record taken at train end is the reloaded best checkpoint."""
    return "train end (best checkpoint)" if epoch == "end" else f"epoch {epoch}"


def require_matplotlib():
    """Return matplotlib's ``Figure`` class, or raise ImportError saying how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "spectrum plots need matplotlib, an optional dependency: "
            "pip install 'fuxictr-zoo[plots]' (or pip install matplotlib); "
            "set `plot: false` in spectrum_callbacks to write only CSV/JSON") from err
    return Figure


def save_figure(fig, path: str) -> None:
    """Write ``fig`` as PNG atomically: a temporary file in the same folder, then rename."""
    with atomic_output(path) as tmp_path:
        fig.savefig(tmp_path, format="png", dpi=110, bbox_inches="tight")


def load_spectrum(path: str) -> Dict[str, object]:
    """Read a ``.spectrum.json`` written by the spectrum callbacks."""
    with open(path) as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or "records" not in data:
        raise ValueError(f"{path} is not a spectrum log (no 'records' key)")
    return data


def _epoch_key(epoch: Epoch) -> Tuple[int, int]:
    """Order epochs numerically with 'end' (the train-end record) last."""
    return (1, 0) if epoch == "end" else (0, int(epoch))


def _parse_epoch(text: str) -> Epoch:
    if text in ("last", "end"):
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"--epoch must be 'last', 'end' or a positive integer, got {text!r}")


def select_records(records: Sequence[Record], metric: str, epoch: Epoch = "last",
                   split: Optional[str] = None, stack_batch: bool = False,
                   source: str = "spectrum log") -> List[Record]:
    """The records of one metric, split and epoch, ordered by stage index.

    Args:
        records: records of one run.
        metric: metric name (``IA``, ``stable_rank``, ``erank``).
        epoch: an epoch number, ``"end"`` (recorded at train end) or ``"last"``
            (``"end"`` when present, else the highest epoch).
        split: the data split; None picks ``valid`` when recorded, else the only split.
        stack_batch: pick the rows measured with the batch stacked into one matrix.
        source: name used in error messages.
    """
    rows = [r for r in records if r["metric"] == metric and bool(r["stack_batch"]) == stack_batch]
    if not rows:
        known = sorted({(r["metric"], bool(r["stack_batch"])) for r in records})
        raise ValueError(f"{source}: no records of metric {metric!r} with stack_batch={stack_batch}; "
                         f"it holds (metric, stack_batch) {known}")
    splits = sorted({r["split"] for r in rows})
    if split is None:
        if "valid" in splits or len(splits) == 1:
            split = "valid" if "valid" in splits else splits[0]
        else:
            raise ValueError(f"{source}: several splits recorded {splits}; choose one with --split")
    rows = [r for r in rows if r["split"] == split]
    if not rows:
        raise ValueError(f"{source}: no records of split {split!r}; recorded splits: {splits}")
    epochs = sorted({r["epoch"] for r in rows}, key=_epoch_key)
    chosen = epochs[-1] if epoch == "last" else epoch
    rows = [r for r in rows if r["epoch"] == chosen]
    if not rows:
        raise ValueError(f"{source}: no records of epoch {epoch!r}; recorded epochs: {epochs}")
    return sorted(rows, key=lambda r: r["stage_index"])


def _stage_axis(ax, stage_lists: Sequence[Sequence[str]]) -> None:
    """Stage names as x tick labels when every line has the same stages, else indices."""
    longest = max(stage_lists, key=len)
    ax.set_xticks(range(len(longest)))
    if all(list(stages) == list(stage_lists[0]) for stages in stage_lists):
        ax.set_xticklabels(longest, rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("stage")
    else:
        ax.set_xlabel("stage index")


def plot_epochs(records: Sequence[Record], path: str, title: str = ""):
    """One run: a subplot per metric, the mean metric against the stage, a line per epoch.

    Lines are drawn per (split, stack_batch, epoch); every line of a subplot shares
    one stage axis (the recorded stages in tap order), so a line that skips a
    stage (e.g. a (B, d) stage, measured only stacked) stays aligned. Each line has
    its own colour, marker and dash and a small sideways offset, so lines that
    coincide (the train-end record is often the last epoch's weights) stay visible;
    error bars are the spread (std) across samples where it was recorded.

    Returns the matplotlib Figure (already written to ``path``).
    """
    Figure = require_matplotlib()
    metrics = list(OrderedDict.fromkeys(r["metric"] for r in records))
    fig = Figure(figsize=(6.0 * len(metrics), 4.2))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        lines: Dict[Tuple[str, bool, Epoch], List[Record]] = OrderedDict()
        for r in records:
            if r["metric"] == metric:
                lines.setdefault((r["split"], bool(r["stack_batch"]), r["epoch"]), []).append(r)
        stages = sorted({(int(r["stage_index"]), str(r["stage"])) for r in records if r["metric"] == metric})
        position = {name: x for x, (_, name) in enumerate(stages)}
        ordered = sorted(lines.items(), key=lambda kv: (kv[0][0], kv[0][1], _epoch_key(kv[0][2])))
        for index, ((split, stacked, epoch), rows) in enumerate(ordered):
            rows = sorted(rows, key=lambda r: r["stage_index"])
            label = f"{split} {epoch_text(epoch)}" + (" (stacked)" if stacked else "")
            _draw_line(ax, [position[str(r["stage"])] for r in rows], rows, index, len(ordered), label)
        ax.set_xticks(range(len(stages)))
        ax.set_xticklabels([name for _, name in stages], rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("stage")
        ax.set_ylabel(f"mean {metric_name(metric)} ± std")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title(f"{title}: {metric_name(metric)} by stage" if title else f"{metric_name(metric)} by stage")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)
    return fig


def plot_runs(runs: Sequence[Tuple[str, Sequence[Record]]], metric: str, path: str,
              epoch: Epoch = "last", split: Optional[str] = None, stack_batch: bool = False):
    """Several runs overlaid: the mean ``metric`` against the stage, one line per run.

    The title names the metric in full and the split and epoch actually drawn ("last"
    resolved to the run's epoch); when runs differ there, each legend entry says its
    own. Lines are styled and offset as in :func:`plot_epochs`, with the spread
    across samples as error bars where recorded.

    Args:
        runs: (label, records) per run.
        metric: metric to draw.
        path: PNG to write.
        epoch, split, stack_batch: which records of each run (see :func:`select_records`).

    Returns the matplotlib Figure (already written to ``path``).
    """
    Figure = require_matplotlib()
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    selected = [(label, select_records(records, metric, epoch, split, stack_batch, source=label))
                for label, records in runs]
    drawn = {(rows[0]["split"], rows[0]["epoch"]) for _, rows in selected}
    stage_lists = []
    for index, (label, rows) in enumerate(selected):
        stage_lists.append([str(r["stage"]) for r in rows])
        if len(drawn) > 1:
            label = f"{label} ({rows[0]['split']}, {epoch_text(rows[0]['epoch'])})"
        _draw_line(ax, list(range(len(rows))), rows, index, len(selected), label)
    _stage_axis(ax, stage_lists)
    ax.set_ylabel(f"mean {metric_name(metric)} ± std")
    ax.ticklabel_format(axis="y", useOffset=False)
    which = ""
    if len(drawn) == 1:
        (drawn_split, drawn_epoch), = drawn
        which = f" - {drawn_split} split, {epoch_text(drawn_epoch)}"
    stacked = " (batch stacked)" if stack_batch else ""
    ax.set_title(f"{metric_name(metric)} by stage{stacked}{which}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # outside: never over the lines
    save_figure(fig, path)
    return fig


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_DASHES = ("-", "--", "-.", ":")


def _line_style(index: int, num_lines: int) -> Dict[str, object]:
    """Colour, marker and dash of line ``index``: colours distinct for up to 20 lines
    (tab10, or tab20 beyond 10), markers and dashes cycling on their own so that two
    lines never share all three."""
    from matplotlib import colormaps
    palette = colormaps["tab10" if num_lines <= 10 else "tab20"]
    return {"color": palette(index % palette.N), "marker": _MARKERS[index % len(_MARKERS)],
            "linestyle": _DASHES[index % len(_DASHES)]}


def _draw_line(ax, x: Sequence[float], rows: Sequence[Record], index: int, num_lines: int, label: str) -> None:
    """One line of mean values at stage positions ``x``, offset sideways by its index
    (at most 0.15 stage either side), with the recorded std as error bars."""
    offset = 0.0 if num_lines == 1 else 0.3 * (index / (num_lines - 1) - 0.5)
    mean = [np.nan if r["mean"] is None else float(r["mean"]) for r in rows]
    spread = [np.nan if r.get("std") is None else float(r["std"]) for r in rows]
    ax.errorbar(np.asarray(x, dtype=float) + offset, mean, yerr=spread, capsize=2, elinewidth=0.8,
                markersize=5, label=label, **_line_style(index, num_lines))


def plot_histograms(runs: Sequence[Tuple[str, Sequence[Record]]], metric: str, stages: Sequence[str],
                    path: str, epoch: Epoch = "last", split: Optional[str] = None,
                    stack_batch: bool = False, bins: int = 30) -> None:
    """Histograms of per-sample values: a subplot per stage, runs overlaid on shared bins.

    Uses the per-sample values stored in each record (capped by the callback's
    ``max_values``). Returns the matplotlib Figure (already written to ``path``).
    """
    if not stages:
        raise ValueError("plot_histograms needs at least one stage name")
    Figure = require_matplotlib()
    fig = Figure(figsize=(4.5 * len(stages), 3.8))
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    selected = [(label, select_records(records, metric, epoch, split, stack_batch, source=label))
                for label, records in runs]
    for ax, stage in zip(axes, stages):
        per_run = []
        for label, rows in selected:
            by_stage = {r["stage"]: r for r in rows}
            if stage not in by_stage:
                raise ValueError(f"{label}: no stage {stage!r}; its stages: {list(by_stage)}")
            per_run.append((label, np.asarray(by_stage[stage]["values"], dtype=np.float64)))
        pooled = np.concatenate([values for _, values in per_run])
        if pooled.size == 0:
            raise ValueError(f"no per-sample values stored for stage {stage!r} "
                             "(the callback's max_values was 0, or every value was non-finite)")
        edges = np.histogram_bin_edges(pooled, bins=bins)
        for label, values in per_run:
            ax.hist(values, bins=edges, alpha=0.5, density=True, label=f"{label} (n={values.size})")
        ax.set_title(stage)
        ax.set_xlabel(metric_name(metric))
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    drawn = {(rows[0]["split"], rows[0]["epoch"]) for _, rows in selected}
    which = ", ".join(f"{s} split, {epoch_text(e)}" for s, e in sorted(drawn, key=lambda d: (d[0], _epoch_key(d[1]))))
    fig.suptitle(f"per-sample {metric_name(metric)} - {which}")
    save_figure(fig, path)
    return fig


def _run_labels(paths: Sequence[str], logs: Sequence[Dict[str, object]],
                labels: Optional[Sequence[str]]) -> List[str]:
    if labels is not None:
        if len(labels) != len(paths):
            raise ValueError(f"--labels has {len(labels)} names for {len(paths)} logs")
        return list(labels)
    names = [str(log.get("run", os.path.basename(p))) for p, log in zip(paths, logs)]
    if len(set(names)) < len(names):
        names = [f"{name} ({p})" for name, p in zip(names, paths)]
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fuxictr-zoo-plot",
        description="Overlay spectrum logs (<run>.spectrum.json) of several runs: "
                    "metric vs stage, or histograms of per-sample values.")
    parser.add_argument("logs", nargs="+", help="spectrum JSON files written by the spectrum callbacks")
    parser.add_argument("--metric", required=True, help="IA, stable_rank or erank")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--epoch", type=_parse_epoch, default="last",
                        help="epoch number, 'end' (train end) or 'last' (default)")
    parser.add_argument("--split", default=None, help="data split (default: valid, or the only one)")
    parser.add_argument("--stacked", action="store_true", help="use the stack_batch records")
    parser.add_argument("--hist", nargs="+", metavar="STAGE", default=None,
                        help="draw histograms of per-sample values of these stages instead")
    parser.add_argument("--bins", type=int, default=30, help="histogram bins (with --hist)")
    parser.add_argument("--labels", nargs="+", default=None, help="one legend label per log")
    args = parser.parse_args(argv)
    try:
        logs = [load_spectrum(path) for path in args.logs]
        labels = _run_labels(args.logs, logs, args.labels)
        runs = [(label, log["records"]) for label, log in zip(labels, logs)]
        if args.hist:
            plot_histograms(runs, args.metric, args.hist, args.out, args.epoch, args.split,
                            args.stacked, args.bins)
        else:
            plot_runs(runs, args.metric, args.out, args.epoch, args.split, args.stacked)
    except (ImportError, OSError, ValueError) as err:
        print(f"fuxictr-zoo-plot: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
