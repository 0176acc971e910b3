"""Building FuxiCTR datasets atomically and loading them fast.

Two pieces FuxiCTR users can take separately:

* :func:`build_dataset` - the same work as ``fuxictr.preprocess.build_dataset``
  (FuxiCTR's own ``FeatureProcessor`` fits the vocabularies and encodes the
  columns) done in-process without Ray, into a temporary folder that is renamed
  into place only when every file is written. An interrupted build leaves no
  folder that a later run would trust. It also reads CSV with polars 2.x, where
  fuxictr 2.3.10's ``scan_csv(dtypes=...)`` raises.
* :class:`TensorDataLoader` - loads a processed parquet split into memory once
  and yields FuxiCTR batches (``dict[str, Tensor]`` of shape (B,) or
  (B, max_len)) by tensor indexing. Pass it through FuxiCTR's hook:
  ``RankDataLoader(feature_map, ..., data_loader=TensorDataLoader)``.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
from typing import Dict, List, Optional, Tuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from fuxictr.datasets import avazu, criteo

SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and the problem."""


class ZooFeatureProcessor(avazu.CustomizedFeatureProcessor, criteo.CustomizedFeatureProcessor):
    """FuxiCTR's FeatureProcessor with a reader that works with polars 1.x and 2.x.

    It carries the release-specific ``preprocess`` functions that fuxictr ships
    (Avazu's convert_hour / convert_weekday / convert_weekend, Criteo's
    convert_to_bucket), so the BARS dataset configs work as written.
    """

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
        rows += n
    return rows


def processed_paths(params: dict) -> Dict[str, Optional[str]]:
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    return {split: (os.path.join(data_dir, f"{split}.parquet") if params.get(f"{split}_data") else None)
            for split in SPLITS}


def is_built(params: dict) -> bool:
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    wanted = [p for p in processed_paths(params).values() if p]
    return os.path.isfile(os.path.join(data_dir, "feature_map.json")) and all(map(os.path.isfile, wanted))


def _write_split(processor: ZooFeatureProcessor, ddf: pl.LazyFrame, out_path: str) -> int:
    frame = ddf.collect()
    batch = {name: frame[name].to_numpy() for name in frame.columns}
    batch = processor.transform(batch)
    arrays, names = [], []
    for name, values in batch.items():
        values = np.asarray(values)
        if values.ndim == 2:  # sequence features: (rows, max_len) ids
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1]))
        else:
            arrays.append(pa.array(values))
        names.append(name)
    pq.write_table(pa.table(arrays, names=names), out_path)
    return frame.height


def build_dataset(params: dict) -> Dict[str, Optional[str]]:
    """Build ``<data_root>/<dataset_id>/`` (feature_map.json, vocab, processor pickle,
    {train,valid,test}.parquet) from the raw files named in ``params``, unless a
    complete build is already there. Returns the processed split paths.

    Every raw split is validated first. The build happens in a temporary sibling
    folder renamed into place at the end, so an interrupted build leaves nothing
    that ``is_built`` accepts.
    """
    paths = processed_paths(params)
    if is_built(params):
        logging.info(f"Processed dataset found: {os.path.dirname(paths['train'])}")
        return paths
    data_format = params.get("data_format", "csv")
    for split in SPLITS:
        raw = params.get(f"{split}_data")
        if split == "train" and not raw:
            raise DataError(f"dataset {params['dataset_id']!r} has no train_data in its config")
        if raw:
            validate_raw_split(raw, params, data_format)

    final_dir = os.path.join(params["data_root"], params["dataset_id"])
    tmp_root = os.path.join(params["data_root"], f".building-{params['dataset_id']}-{os.getpid()}")
    shutil.rmtree(tmp_root, ignore_errors=True)
    try:
        processor = ZooFeatureProcessor(feature_cols=params["feature_cols"], label_col=params["label_col"],
                                        dataset_id=params["dataset_id"], data_root=tmp_root,
                                        group_id=params.get("group_id"))
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
        if os.path.isdir(final_dir):
            logging.warning(f"Replacing incomplete processed dataset folder {final_dir}")
            shutil.rmtree(final_dir)
        os.replace(processor.data_dir, final_dir)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    logging.info(f"Processed dataset written to {final_dir}")
    return paths
