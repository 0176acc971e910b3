"""Spectrum monitoring callbacks that any zoo model switches on from its YAML.

A model names its monitored stages with ``x = self.tap("name", x)`` in
``forward`` (:class:`fuxictr_ext.base.ZooModel`). A callback runs
``model.collect_stages(batch)`` on a few batches of one split, measures every
stage with the metrics of :mod:`fuxictr_ext.spectrum`, and writes, beside the
checkpoint:

* ``<run>.spectrum.csv`` - one row per (split, epoch, stage, metric) with
  columns ``run, split, epoch, stage, stage_index, metric, stack_batch, mean,
  std, n_samples, n_nonfinite``;
* ``<run>.spectrum.json`` - the same records plus the histogram
  (``hist_counts``, ``hist_edges``) and up to ``max_values`` per-sample values,
  which :mod:`fuxictr_ext.spectrum.plot` overlays across runs;
* ``<run>.spectrum.png`` - one subplot per metric, metric vs stage, one line per
  epoch.

Every file is rewritten atomically after each recording. ``epoch`` is 1-based as
in FuxiCTR's logs; the record taken at train end (after ``fit`` has reloaded the
best checkpoint) has epoch ``"end"``.

YAML::

    spectrum_callbacks:
      - {metric: [IA, stable_rank], layers: auto, every: epoch, split: valid, max_batches: 20}

Keys: ``metric`` (a name or list of ``IA``, ``stable_rank``, ``erank``; default
all), ``layers`` (``auto`` = every tapped stage, or a list of stage names),
``every`` (``epoch`` or N = every N epochs), ``split`` (``train``, ``valid`` or
``test``), ``max_batches`` (batches per recording, null = the whole split;
default 20), ``stack_batch`` (measure each batch as one (B*n, d) matrix instead
of per sample; default false), ``bins`` (histogram bins; default 20),
``max_values`` (per-sample values kept per record in the JSON; default 1000),
``plot`` (write the PNG, needs matplotlib; default true).

A stage tensor (B, n, d) gives B matrices (n, d); (B, ..., d) is flattened to
(B, prod(...), d); a 2-D stage (B, d) has no per-sample matrix and is measured
as one (B, d) matrix per batch (its rows say ``stack_batch: true``).

Recording leaves training untouched: it runs in eval mode under no_grad,
restores every module's train/eval flag, and restores the Python, NumPy and
torch (CPU and the model's CUDA device) random states, so a seeded run gives
the same weights with and without the callbacks. Under torch.distributed only
rank 0 records.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import logging
import os
import random
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .metrics import METRICS, spectrum_metrics, summarize
from ..atomic import write_text_atomic
from .plot import plot_epochs, require_matplotlib
from ..training.callbacks import Callback

__all__ = ["SPLITS", "SpectrumCallback", "SpectrumLog", "build_spectrum_callbacks"]

from ..data.build import SPLITS
CSV_COLUMNS = ("run", "split", "epoch", "stage", "stage_index", "metric", "stack_batch",
               "mean", "std", "n_samples", "n_nonfinite")
SPEC_DEFAULTS = {"metric": list(METRICS), "layers": "auto", "every": "epoch", "split": "valid",
                 "max_batches": 20, "stack_batch": False, "bins": 20, "max_values": 1000, "plot": True}


class SpectrumLog:
    """The records of one run, written to ``<out_dir>/<run_name>.spectrum.{csv,json,png}``.

    Args:
        out_dir: folder of the run's checkpoint.
        run_name: experiment id; names the files and fills the ``run`` column.
        plot: also draw the PNG (needs matplotlib).
    """

    def __init__(self, out_dir: str, run_name: str, plot: bool = True):
        self.run_name = run_name
        self.plot = plot
        base = os.path.join(out_dir, f"{run_name}.spectrum")
        self.csv_path, self.json_path, self.png_path = base + ".csv", base + ".json", base + ".png"
        self.records: List[Dict[str, object]] = []

    def add(self, records: Sequence[Dict[str, object]]) -> None:
        """Append records and rewrite every file."""
        self.records.extend(records)
        self.write()

    def write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records)
        write_text_atomic(self.csv_path, buffer.getvalue())
        payload = {"run": self.run_name, "columns": list(CSV_COLUMNS), "records": self.records}
        write_text_atomic(self.json_path, json.dumps(payload, allow_nan=False))
        written = [self.csv_path, self.json_path]
        if self.plot and self.records:
            plot_epochs(self.records, self.png_path, title=self.run_name)
            written.append(self.png_path)
        logging.info(f"Spectrum records of {self.run_name} ({len(self.records)} rows) written to "
                     + ", ".join(written))


@contextlib.contextmanager
def _preserved_state(model: torch.nn.Module) -> Iterator[None]:
    """Restore RNG states (Python, NumPy, torch CPU and CUDA device) and every module's mode."""
    modes = [(module, module.training) for module in model.modules()]
    python_state, numpy_state = random.getstate(), np.random.get_state()
    device = getattr(model, "device", torch.device("cpu"))
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        fork = torch.random.fork_rng(devices=[index])
    else:
        fork = torch.random.fork_rng(devices=[])
    try:
        with fork:
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        for module, training in modes:
            module.training = training


def _stage_matrices(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """(B, n, d) per-sample matrices of a stage; a (B, d) stage becomes one (1, B, d) matrix."""
    if tensor.dim() < 2:
        raise ValueError(f"stage {name!r} has shape {tuple(tensor.shape)}; spectrum stages need "
                         "(B, n, d) or (B, d) tensors")
    if tensor.dim() == 2:
        return tensor.unsqueeze(0)                                          # (1, B, d)
    return tensor.flatten(start_dim=1, end_dim=-2)                          # (B, n, d)


@dataclass
class StageValues:
    """Per-sample values of one stage: its tap index, whether it was measured as one
    matrix per batch, and ``{metric: (N,) float64 values}``."""

    index: int
    stack_batch: bool
    values: Dict[str, np.ndarray]


def _is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_rank() != 0)


class SpectrumCallback(Callback):
    """Measures the spectrum of a model's tapped stages on one split at epoch ends and at train end.

    Args:
        log: the :class:`SpectrumLog` the records go to.
        loader: iterable of batch dicts of the split.
        split: name of the split (for the records).
        metrics: names from :data:`fuxictr_ext.spectrum.METRICS`.
        layers: ``"auto"`` for every tapped stage, or the stage names to measure.
        every: record after every ``every``-th epoch (1 = each epoch).
        max_batches: batches per recording; None = the whole loader.
        stack_batch: measure each batch as one (B*n, d) matrix.
        bins: histogram bins.
        max_values: per-sample values kept per record for histogram plots.

    Example:
        >>> log = SpectrumLog(model.model_dir, "DNN_demo")
        >>> trainer = Trainer(model, callbacks=[SpectrumCallback(log, valid_batches, "valid", ["IA"])])
    """

    def __init__(self, log: SpectrumLog, loader: Iterable, split: str, metrics: Sequence[str],
                 layers: Union[str, Sequence[str]] = "auto", every: int = 1,
                 max_batches: Optional[int] = 20, stack_batch: bool = False, bins: int = 20,
                 max_values: int = 1000):
        self.log = log
        self.loader = loader
        self.split = split
        self.metrics = list(metrics)
        self.layers = layers
        self.every = every
        self.max_batches = max_batches
        self.stack_batch = stack_batch
        self.bins = bins
        self.max_values = max_values

    def on_epoch_end(self, trainer, epoch: int) -> None:
        """Record after epoch ``epoch`` (0-based) when it is due (a trainer callback)."""
        if (epoch + 1) % self.every == 0:
            self.record(trainer.model, epoch + 1)

    def on_fit_end(self, trainer) -> None:
        """Record the restored best model (a trainer callback)."""
        self.record(trainer.model, "end")

    def _select(self, stages: Mapping[str, torch.Tensor], model) -> Dict[str, int]:
        """Stage name -> index in the model's tap order, for the stages to measure."""
        order = {name: index for index, name in enumerate(stages)}
        if not order:
            raise ValueError(f"{model.__class__.__name__} taps no stages: spectrum_callbacks needs "
                             "`x = self.tap(name, x)` calls in its forward")
        if self.layers == "auto":
            return order
        missing = [name for name in self.layers if name not in order]
        if missing:
            raise ValueError(f"spectrum_callbacks layers {missing} are not tapped by "
                             f"{model.__class__.__name__}; its stages: {list(order)}")
        return {name: order[name] for name in sorted(self.layers, key=order.__getitem__)}

    def measure(self, model) -> Dict[str, StageValues]:
        """Per-sample metric values of every selected stage, over up to ``max_batches`` batches."""
        chunks: Dict[str, Dict[str, List[torch.Tensor]]] = {}
        selected: Dict[str, int] = {}
        batch_matrix: Dict[str, bool] = {}
        with _preserved_state(model), torch.no_grad():
            for batch in itertools.islice(self.loader, self.max_batches):
                stages = model.collect_stages(batch)
                selected = selected or self._select(stages, model)
                for name in selected:
                    batch_matrix[name] = stages[name].dim() == 2
                    matrices = _stage_matrices(name, stages[name])
                    values = spectrum_metrics(matrices, self.metrics, self.stack_batch)
                    for metric, per_sample in values.items():
                        chunks.setdefault(name, {}).setdefault(metric, []).append(per_sample.double().cpu())
        if not chunks:
            raise ValueError(f"spectrum_callbacks split {self.split!r}: the loader yielded no batch")
        return {name: StageValues(index=selected[name],
                                  stack_batch=self.stack_batch or batch_matrix[name],
                                  values={metric: torch.cat(parts).numpy() for metric, parts in by_metric.items()})
                for name, by_metric in chunks.items()}

    def record(self, model, epoch: Union[int, str]) -> None:
        """Measure, summarize and hand the records to the log (rank 0 only)."""
        if not _is_main_process():
            return
        records = []
        for name, stage in self.measure(model).items():
            for metric, values in stage.values.items():
                finite = values[np.isfinite(values)][: self.max_values]
                records.append({
                    "run": self.log.run_name, "split": self.split, "epoch": epoch, "stage": name,
                    "stage_index": stage.index, "metric": metric, "stack_batch": stage.stack_batch,
                    **asdict(summarize(values, self.bins)),
                    "values": [float(f"{v:.6g}") for v in finite],
                })
        self.log.add(records)


def _positive_int(value, key: str, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"spectrum_callbacks {key} must be a positive integer"
                         f"{' or null' if allow_none else ''}, got {value!r}")
    return value


def _parse_spec(spec, loaders: Mapping[str, Optional[Iterable]], position: int) -> dict:
    """Validate one YAML entry; return it with defaults filled in and values normalised."""
    where = f"spectrum_callbacks[{position}]"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping like {{metric: [IA], split: valid}}, got {spec!r}")
    unknown = sorted(set(spec) - set(SPEC_DEFAULTS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(SPEC_DEFAULTS)}")
    parsed = {**SPEC_DEFAULTS, **spec}
    metrics = [parsed["metric"]] if isinstance(parsed["metric"], str) else parsed["metric"]
    if not isinstance(metrics, (list, tuple)) or not metrics:
        raise ValueError(f"{where} metric must be a name or a non-empty list, got {parsed['metric']!r}")
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ValueError(f"{where} metric: unknown {bad}; known metrics: {list(METRICS)}")
    parsed["metric"] = list(dict.fromkeys(metrics))
    layers = parsed["layers"]
    if isinstance(layers, str) and layers != "auto":
        layers = [layers]
    if layers != "auto" and (not isinstance(layers, (list, tuple)) or not layers
                             or not all(isinstance(name, str) and name for name in layers)):
        raise ValueError(f"{where} layers must be 'auto' or a list of stage names, got {parsed['layers']!r}")
    parsed["layers"] = layers if layers == "auto" else list(layers)
    every = parsed["every"]
    parsed["every"] = 1 if every == "epoch" else _positive_int(every, f"{where} every ('epoch' or N)")
    if parsed["split"] not in SPLITS:
        raise ValueError(f"{where} split: unknown {parsed['split']!r}; known splits: {list(SPLITS)}")
    if loaders.get(parsed["split"]) is None:
        raise ValueError(f"{where} split {parsed['split']!r} has no data loader in this run; "
                         f"available: {[k for k, v in loaders.items() if v is not None]}")
    parsed["max_batches"] = _positive_int(parsed["max_batches"], f"{where} max_batches", allow_none=True)
    parsed["bins"] = _positive_int(parsed["bins"], f"{where} bins")
    max_values = parsed["max_values"]
    if isinstance(max_values, bool) or not isinstance(max_values, int) or max_values < 0:
        raise ValueError(f"{where} max_values must be a non-negative integer, got {max_values!r}")
    for key in ("stack_batch", "plot"):
        if not isinstance(parsed[key], bool):
            raise ValueError(f"{where} {key} must be true or false, got {parsed[key]!r}")
    return parsed


def build_spectrum_callbacks(specs: Optional[Sequence[Mapping]], loaders: Mapping[str, Optional[Iterable]],
                             out_dir: str, run_name: str) -> List[SpectrumCallback]:
    """Callbacks for the ``spectrum_callbacks`` value of an experiment's YAML.

    Args:
        specs: None (no monitoring) or a list of mappings (keys in the module docstring).
        loaders: ``{"train": ..., "valid": ..., "test": ...}`` iterables of batch dicts;
            a split may be missing or None when no spec uses it.
        out_dir: folder of the checkpoint; the CSV/JSON/PNG go there.
        run_name: experiment id; names the files.

    Returns:
        Callbacks sharing one :class:`SpectrumLog`, for ``Trainer(model, callbacks=...)``.

    Raises:
        ValueError: a bad key or value, naming it; two specs measuring the same
            metric on the same split with the same ``stack_batch``.
        ImportError: a spec asks for the PNG and matplotlib is not installed.
    """
    if specs is None:
        return []
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence):
        raise ValueError(f"spectrum_callbacks must be a list of mappings, got {specs!r}")
    parsed = [_parse_spec(spec, loaders, position) for position, spec in enumerate(specs)]
    seen: Dict[tuple, int] = {}
    for position, spec in enumerate(parsed):
        for metric in spec["metric"]:
            key = (spec["split"], spec["stack_batch"], metric)
            if key in seen:
                raise ValueError(f"spectrum_callbacks[{seen[key]}] and [{position}] both measure "
                                 f"{metric} on split {spec['split']!r} (stack_batch={spec['stack_batch']})")
            seen[key] = position
    plot = any(spec["plot"] for spec in parsed)
    if plot:
        require_matplotlib()
    log = SpectrumLog(out_dir, run_name, plot=plot)
    return [SpectrumCallback(log, loaders[spec["split"]], spec["split"], spec["metric"], spec["layers"],
                             spec["every"], spec["max_batches"], spec["stack_batch"], spec["bins"],
                             spec["max_values"])
            for spec in parsed]
