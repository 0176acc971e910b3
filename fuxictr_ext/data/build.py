"""Building FuxiCTR datasets atomically and loading them fast.

Two pieces FuxiCTR users can take separately:

* :func:`build_dataset` - the same work as ``fuxictr.preprocess.build_dataset``
  (FuxiCTR's own ``FeatureProcessor`` fits the vocabularies and encodes the
  columns) done in-process without Ray, into a temporary folder that is renamed
  into place only when every file is written. An interrupted build leaves no
  folder that a later run would trust. The built folder records what it was
  made from (``build_record.json``: the dataset config's build keys, the raw
  files' sizes and modification times); a build that no longer matches its
  config or raw files is rebuilt, as is any build when ``rebuild_dataset:
  true``. Builds of one dataset id are serialised by a lock file, and every
  raw split's labels and numeric columns are checked before anything is
  written. It also reads CSV with polars 2.x, where fuxictr 2.3.10's
  ``scan_csv(dtypes=...)`` raises.
* :class:`TensorDataLoader` - loads a processed parquet split into memory once
  and yields FuxiCTR batches (``dict[str, Tensor]`` of shape (B,) or
  (B, max_len)) by tensor indexing. Pass it through FuxiCTR's hook:
  ``RankDataLoader(feature_map, ..., data_loader=TensorDataLoader)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import re
import shutil
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from fuxictr.datasets import avazu, criteo

from ..config import ZooError

SPLITS = ("train", "valid", "test")
BUILD_RECORD = "build_record.json"
BUILD_RECORD_VERSION = 1
# Dataset config keys that change what a build contains (group_id does not: FeatureMap.load
# takes it from the run's params, and model configs set it per experiment).
BUILD_KEYS = ("data_format", "sep", "feature_cols", "label_col", "min_categr_count", "num_buckets",
              "train_data", "valid_data", "test_data")
BUILD_CHUNK_ROWS = 1_000_000  # rows encoded at a time (one parquet row group)
_WORK_FOLDER = re.compile(r"^\.(building|replaced)-(.+)-(\d+)$")


class DataError(ZooError):
    """Input data that cannot be used; the message names the file and the problem."""


class ZooFeatureProcessor(avazu.CustomizedFeatureProcessor, criteo.CustomizedFeatureProcessor):
    """FuxiCTR's FeatureProcessor with a reader that works with polars 1.x and 2.x.

    It carries the release-specific ``preprocess`` functions that fuxictr ships
    (Avazu's convert_hour / convert_weekday / convert_weekend, Criteo's
    convert_to_bucket), so the BARS dataset configs work as written, and refuses
    a categorical or sequence column whose vocabulary would be empty, naming
    ``train_source`` (the raw training file).
    """

    train_source: str = "the training data"

    def read_data(self, data_path, data_format="csv", sep=",", n_rows=None, **kwargs):
        files = resolve_files(data_path, data_format)
        if data_format == "csv":
            frames = [pl.scan_csv(f, separator=sep, schema_overrides=_polars_schema(self.dtype_dict),
                                  low_memory=False, n_rows=n_rows) for f in files]
        elif data_format == "parquet":
            frames = [pl.scan_parquet(f, n_rows=n_rows) for f in files]
        else:
            raise DataError(f"data_format={data_format!r} is not supported (use csv or parquet)")
        return pl.concat(frames)

    def _collect_statistics(self, train_ddf, meta_ddf=None):
        """FuxiCTR's statistics pass, one feature column at a time. FuxiCTR collects the
        queries of all columns together (``pl.collect_all``), where polars' common-subplan
        elimination caches the whole preprocessed training split in memory: 6.9 GB peak RSS
        at 16M Criteo-like rows, against 1.0 GB one column at a time (benchmarks/build_memory.py,
        results/data_at_size.md)."""
        feature_cols = self.feature_cols
        stats = {}
        try:
            for col in feature_cols:
                self.feature_cols = [col]
                stats.update(super()._collect_statistics(train_ddf, meta_ddf))
        finally:
            self.feature_cols = feature_cols
        return stats

    def fit_categorical_col(self, col, col_series=None, min_categr_count=1, num_buckets=10):
        self._check_vocabulary(col, col_series, min_categr_count)
        super().fit_categorical_col(col, col_series, min_categr_count=min_categr_count, num_buckets=num_buckets)

    def fit_sequence_col(self, col, stats_dict=None, min_categr_count=1):
        self._check_vocabulary(col, stats_dict, min_categr_count)
        super().fit_sequence_col(col, stats_dict, min_categr_count=min_categr_count)

    def _check_vocabulary(self, col: dict, stats: Optional[dict], min_categr_count: int) -> None:
        """Refuse a column no value of which reaches ``min_categr_count`` in the training data:
        FuxiCTR's tokenizer would fail on its empty vocabulary with an IndexError."""
        if not isinstance(stats, dict) or "value_counts" not in stats or col.get("category_processor"):
            return
        min_count = col.get("min_categr_count", min_categr_count)
        counts = {token: n for token, n in stats["value_counts"].items() if token != col.get("fill_na", "")}
        if not any(n >= min_count for n in counts.values()):
            raise DataError(f"{self.train_source}: {col['type']} column {col['name']!r}: no value occurs "
                            f"min_categr_count={min_count} times ({len(counts)} distinct values, the most "
                            f"frequent {max(counts.values(), default=0)} times), so its vocabulary would be "
                            "empty; set `active: False` for it or lower min_categr_count")


def _polars_schema(dtype_dict: Dict[str, type]) -> Dict[str, pl.DataType]:
    mapping = {str: pl.String, float: pl.Float64, int: pl.Int64}
    return {name: mapping[t] for name, t in dtype_dict.items() if t in mapping}


def resolve_files(data_path: str, data_format: str) -> List[str]:
    pattern = data_path if data_path.endswith(data_format) else os.path.join(data_path, f"*.{data_format}")
    files = sorted(glob.glob(pattern))
    if not files:
        raise DataError(f"data file not found: {data_path}")
    return files


def _expected_columns(params: dict) -> Tuple[List[str], List[str]]:
    """Raw columns a split must have: configured features (except those that a
    ``preprocess`` function derives, e.g. Avazu's weekday) and the labels."""
    feature_names: List[str] = []
    for col in params.get("feature_cols", []):
        if col.get("active", True) is False or col.get("preprocess"):
            continue
        names = col["name"] if isinstance(col["name"], list) else [col["name"]]
        feature_names.extend(names)
    labels = params.get("label_col", [])
    labels = labels if isinstance(labels, list) else [labels]
    return feature_names, [lab["name"] for lab in labels]


def validate_raw_split(path: str, params: dict, data_format: str) -> int:
    """Check one raw split file: present, non-empty, every configured column there,
    a numeric binary-compatible label. Returns its row count; raises DataError."""
    files = resolve_files(path, data_format)
    features, labels = _expected_columns(params)
    rows = 0
    for f in files:
        try:
            if data_format == "parquet":
                schema = pq.read_schema(f)
                columns = schema.names
                n = pq.ParquetFile(f).metadata.num_rows
                label_types = {lab: schema.field(lab).type for lab in labels if lab in columns}
                non_numeric = [lab for lab, t in label_types.items()
                               if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))]
            else:
                head = pl.read_csv(f, separator=params.get("sep", ","), n_rows=1000, infer_schema_length=1000)
                columns = head.columns
                n = 0 if head.height == 0 else sum(1 for _ in open(f, "rb")) - 1
                non_numeric = [lab for lab in labels if lab in columns and not head[lab].dtype.is_numeric()]
        except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as err:
            raise DataError(f"{f}: cannot be read as {data_format}: {err}") from err
        missing = [c for c in features + labels if c not in columns]
        if missing:
            raise DataError(f"{f}: missing column(s) {missing}; the dataset config expects "
                            f"{len(features)} features and label(s) {labels}")
        if n == 0:
            raise DataError(f"{f}: the file has no rows")
        if non_numeric:
            raise DataError(f"{f}: label column(s) {non_numeric} are not numeric")
        _check_values(f, params, data_format, labels, [c for c in _numeric_columns(params) if c in columns])
        rows += n
    return rows


def _numeric_columns(params: dict) -> List[str]:
    names: List[str] = []
    for col in params.get("feature_cols", []):
        if col.get("type") == "numeric" and col.get("active", True) is not False and not col.get("preprocess"):
            names.extend(col["name"] if isinstance(col["name"], list) else [col["name"]])
    return names


def _describe(values: list) -> str:
    return ", ".join("empty" if v is None else "NaN" if v != v else repr(v) for v in values)


def _check_values(path: str, params: dict, data_format: str, labels: List[str], numeric: List[str]) -> None:
    """One pass over the label and numeric columns of ``path``: binary labels (for
    ``task: binary_classification``) must be 0 or 1 on every row - no empty, NaN or
    other value, which FuxiCTR would silently turn into 0 or score as 1 - and numeric
    features must be finite."""
    columns = labels + numeric
    if data_format == "csv":
        frame = pl.scan_csv(path, separator=params.get("sep", ","), infer_schema=False,
                            schema_overrides={c: pl.Float64 for c in columns})
    else:
        frame = pl.scan_parquet(path)
    exprs = []
    binary = params.get("task", "binary_classification") == "binary_classification"
    for label in labels if binary else []:
        value = pl.col(label).cast(pl.Float64)
        bad = (value.is_null() | value.is_nan() | ~value.is_in([0.0, 1.0])).fill_null(True)
        exprs += [bad.sum().alias(f"bad:{label}"),
                  value.filter(bad).unique(maintain_order=True).head(5).implode().alias(f"found:{label}")]
    exprs += [pl.col(c).cast(pl.Float64).is_infinite().sum().alias(f"inf:{c}") for c in numeric]
    if not exprs:
        return
    try:
        stats = frame.select(pl.len().alias("rows"), *exprs).collect().row(0, named=True)
    except pl.exceptions.PolarsError as err:
        raise DataError(f"{path}: a label or numeric column does not read as numbers: {err}") from err
    for label in labels if binary else []:
        if stats[f"bad:{label}"]:
            raise DataError(f"{path}: label column {label!r} is not 0 or 1 on {stats[f'bad:{label}']} of "
                            f"{stats['rows']} rows (found: {_describe(stats[f'found:{label}'])}); "
                            "task: binary_classification needs labels 0 and 1")
    infinite = {c: stats[f"inf:{c}"] for c in numeric if stats[f"inf:{c}"]}
    if infinite:
        raise DataError(f"{path}: numeric column(s) hold infinite values (column: rows) {infinite}")


def processed_paths(params: dict) -> Dict[str, Optional[str]]:
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    return {split: (os.path.join(data_dir, f"{split}.parquet") if params.get(f"{split}_data") else None)
            for split in SPLITS}


def build_record(params: dict) -> dict:
    """What a build of ``params`` is made from: the dataset config's build keys and,
    for every raw split file present, its absolute path, size and modification time."""
    data_format = params.get("data_format", "csv")
    raw_files: Dict[str, List[dict]] = {}
    for split in SPLITS:
        raw = params.get(f"{split}_data")
        if not raw:
            continue
        try:
            files = resolve_files(raw, data_format)
        except DataError:
            continue
        raw_files[split] = [{"path": os.path.abspath(f), "bytes": os.stat(f).st_size,
                             "mtime_ns": os.stat(f).st_mtime_ns} for f in files]
    config = json.loads(json.dumps({k: params.get(k) for k in BUILD_KEYS}, default=str))
    return {"version": BUILD_RECORD_VERSION, "config": config, "raw_files": raw_files}


def stale_reason(params: dict) -> Optional[str]:
    """Why the processed folder of ``params`` cannot be used as it is (None: it can).

    A build is usable when feature_map.json and every configured split are there and
    its build record matches the config and the raw files. A raw split whose files
    are gone is not compared (a build outlives the raw files it was made from).
    """
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    wanted = [p for p in processed_paths(params).values() if p]
    if not os.path.isdir(data_dir):
        return "not built yet"
    missing = [os.path.basename(p) for p in [os.path.join(data_dir, "feature_map.json")] + wanted
               if not os.path.isfile(p)]
    if missing:
        return f"incomplete (no {', '.join(missing)})"
    unreadable = _unreadable_build_file(data_dir, wanted)
    if unreadable:
        return unreadable
    record_path = os.path.join(data_dir, BUILD_RECORD)
    try:
        with open(record_path) as fd:
            built = json.load(fd)
    except FileNotFoundError:
        return f"it has no {BUILD_RECORD} (built by an older version)"
    except (OSError, ValueError) as err:
        return f"{record_path} is unreadable ({err})"
    now = build_record(params)
    if built.get("version") != now["version"]:
        return f"built with build record version {built.get('version')}, now {now['version']}"
    changed = [k for k in BUILD_KEYS if built["config"].get(k) != now["config"].get(k)]
    if changed:
        return f"dataset config changed: {', '.join(changed)}"
    for split, files in now["raw_files"].items():
        if built["raw_files"].get(split) != files:
            return f"raw {split} file(s) changed since the build: {', '.join(f['path'] for f in files)}"
    for split in set(built["raw_files"]) - set(now["raw_files"]):
        logging.warning(f"Raw {split} file(s) of {params['dataset_id']} are gone; using the build made from them")
    return None


def _unreadable_build_file(data_dir: str, split_paths: List[str]) -> Optional[str]:
    """A cheap integrity check of a build: feature_map.json parses, every parquet footer reads."""
    try:
        with open(os.path.join(data_dir, "feature_map.json")) as fd:
            json.load(fd)
    except (OSError, ValueError) as err:
        return f"feature_map.json is unreadable ({err})"
    for path in split_paths:
        try:
            pq.read_metadata(path)
        except (pa.ArrowException, OSError) as err:
            return f"{os.path.basename(path)} is unreadable ({err})"
    return None


def rebuild_hint(data_dir: str) -> str:
    return f"delete {data_dir} or set `rebuild_dataset: true` in the dataset config to rebuild it"


def is_built(params: dict) -> bool:
    """A complete build that matches the config and the raw files is there."""
    return stale_reason(params) is None


def _encoded_table(processor: ZooFeatureProcessor, frame: pl.DataFrame) -> pa.Table:
    batch = processor.transform({name: frame[name].to_numpy() for name in frame.columns})
    arrays, names = [], []
    for name, values in batch.items():
        values = np.asarray(values)
        if values.ndim == 2:  # sequence features: (rows, max_len) ids
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1]))
        else:
            arrays.append(pa.array(values))
        names.append(name)
    return pa.table(arrays, names=names)


def _write_split(processor: ZooFeatureProcessor, ddf: pl.LazyFrame, out_path: str) -> int:
    """Encode ``ddf`` with the fitted processor into ``out_path``, BUILD_CHUNK_ROWS rows at a
    time (polars' streaming batches, one parquet row group each): the peak memory is a
    chunk's, not the split's. Returns the row count."""
    rows = 0
    writer: Optional[pq.ParquetWriter] = None
    try:
        for frame in ddf.collect_batches(chunk_size=BUILD_CHUNK_ROWS, maintain_order=True):
            table = _encoded_table(processor, frame)
            if writer is None:
                writer = pq.ParquetWriter(out_path, table.schema)
            writer.write_table(table)
            rows += frame.height
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise DataError(f"{out_path}: the split has no rows after preprocessing")
    return rows


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphaned_work_folders(data_root: str, dataset_id: str) -> List[str]:
    """Delete ``.building-<id>-<pid>`` / ``.replaced-<id>-<pid>`` folders left by builds that
    died. Called with ``dataset_id``'s build lock held, so that id's folders are orphans
    whatever their pid; another id's are removed when their process is gone."""
    removed = []
    for name in sorted(os.listdir(data_root)) if os.path.isdir(data_root) else []:
        match = _WORK_FOLDER.match(name)
        if match and (match.group(2) == dataset_id or not pid_alive(int(match.group(3)))):
            path = os.path.join(data_root, name)
            logging.warning(f"Removing {path}, left by a build that did not finish")
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def build_lock(data_root: str, dataset_id: str) -> Iterator[None]:
    """Hold ``<data_root>/.<dataset_id>.lock`` exclusively (fcntl.flock): one build or
    build check of a dataset id at a time, across processes on this machine (and on
    file systems where flock works across machines)."""
    os.makedirs(data_root, exist_ok=True)
    path = os.path.join(data_root, f".{dataset_id}.lock")
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.info(f"Waiting for another process's build of {dataset_id} ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_dataset(params: dict) -> Dict[str, Optional[str]]:
    """Build ``<data_root>/<dataset_id>/`` (feature_map.json, vocab, processor pickle,
    {train,valid,test}.parquet, build_record.json) from the raw files named in
    ``params``, unless a build matching them is already there (``rebuild_dataset:
    true`` rebuilds regardless). Returns the processed split paths.

    Under the dataset id's build lock: leftovers of dead builds are removed, every
    raw split is validated (columns, labels, finite numerics), then the build happens
    in a temporary sibling folder renamed into place at the end, so an interrupted
    build leaves nothing that ``is_built`` accepts and a concurrent run waits and
    reuses the finished build instead of replacing it. Splits are encoded
    BUILD_CHUNK_ROWS rows at a time.
    """
    paths = processed_paths(params)
    final_dir = os.path.join(params["data_root"], params["dataset_id"])
    with build_lock(params["data_root"], params["dataset_id"]):
        remove_orphaned_work_folders(params["data_root"], params["dataset_id"])
        reason = "rebuild_dataset is true" if params.get("rebuild_dataset") is True else stale_reason(params)
        if reason is None:
            logging.info(f"Processed dataset found: {final_dir}")
            return paths
        if os.path.isdir(final_dir):
            logging.warning(f"Rebuilding {final_dir}: {reason}")
        _build(params, final_dir)
    logging.info(f"Processed dataset written to {final_dir}")
    return paths


def _build(params: dict, final_dir: str) -> None:
    data_format = params.get("data_format", "csv")
    for split in SPLITS:
        raw = params.get(f"{split}_data")
        if split == "train" and not raw:
            raise DataError(f"dataset {params['dataset_id']!r} has no train_data in its config")
        if raw:
            validate_raw_split(raw, params, data_format)

    record = build_record(params)
    tmp_root = os.path.join(params["data_root"], f".building-{params['dataset_id']}-{os.getpid()}")
    old_dir = os.path.join(params["data_root"], f".replaced-{params['dataset_id']}-{os.getpid()}")
    try:
        processor = ZooFeatureProcessor(feature_cols=params["feature_cols"], label_col=params["label_col"],
                                        dataset_id=params["dataset_id"], data_root=tmp_root,
                                        group_id=params.get("group_id"))
        processor.train_source = params["train_data"]
        read_kwargs = {"data_format": data_format, "sep": params.get("sep", ",")}
        frames = {split: processor.preprocess(processor.read_data(params[f"{split}_data"], **read_kwargs))
                  for split in SPLITS if params.get(f"{split}_data")}
        meta_cols = [c["name"] for c in processor.feature_cols
                     if c["type"] == "meta" and c.get("active", True) is not False]
        meta_ddf = pl.concat([f.select(meta_cols) for f in frames.values()]) if meta_cols else None
        processor.fit(frames["train"], meta_ddf=meta_ddf, rebuild_dataset=True,
                      min_categr_count=params.get("min_categr_count", 1),
                      num_buckets=params.get("num_buckets", 10))
        for split, ddf in frames.items():
            rows = _write_split(processor, ddf, os.path.join(processor.data_dir, f"{split}.parquet"))
            logging.info(f"Encoded {split}: {rows} rows")
        with open(os.path.join(processor.data_dir, BUILD_RECORD), "w") as fd:
            json.dump(record, fd, indent=2)
        if os.path.isdir(final_dir):
            os.replace(final_dir, old_dir)
        os.replace(processor.data_dir, final_dir)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
        shutil.rmtree(old_dir, ignore_errors=True)
