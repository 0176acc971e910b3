"""Preparers for the BARS / FuxiCTR releases: check a local download, write FuxiCTR inputs.

    python -m data_prep.prepare <dataset_id> --src <folder of the downloaded release> [--config ./config/]

The dataset id's entry in ``<config>/dataset_config.yaml`` says where the raw
files go (``train_data`` / ``valid_data`` / ``test_data``), in which format
(``data_format``: parquet or csv) and with which column dtypes. Every release
CSV is checked before anything is written (present, not empty, the release's
columns, a numeric label in its first rows, every line complete), then streamed through polars -
never loaded whole - into a temporary file beside its target, cast to the
config's dtypes (a value that does not convert stops the run), and checked
again (no empty label, labels in [0, 1]). The targets are replaced only when
every file is complete, so a failed run leaves the previous files as they were
and no partial file behind. Paths are relative to the working directory, as
for ``run_expid.py``: run it from the repository root.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import h5py
import polars as pl
import yaml

from fuxictr_ext.data import SPLITS, DataError
from fuxictr_ext.data.build import pid_alive

POLARS_DTYPES = {"str": pl.String, "float": pl.Float64, "int": pl.Int64}
LABEL_CHECK_ROWS = 1000


@dataclass(frozen=True)
class Release:
    """One public release: its CSV files per split, their header and label column.

    Args:
        name: the release's name (``Criteo_x1``, ...).
        files: split -> CSV file name inside the downloaded folder.
        columns: the CSV header the release ships.
        label: the label column.
    """

    name: str
    files: Dict[str, str]
    columns: Tuple[str, ...]
    label: str


_THREE_SPLITS = {"train": "train.csv", "valid": "valid.csv", "test": "test.csv"}
_TWO_SPLITS = {"train": "train.csv", "test": "test.csv"}

RELEASES = {
    "criteo_x1": Release(
        "Criteo_x1", _THREE_SPLITS,
        ("label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))), "label"),
    "avazu_x4": Release(
        "Avazu_x4", _THREE_SPLITS,
        ("id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
         "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
         "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"), "click"),
    "kuaivideo_x1": Release(
        "KuaiVideo_x1", _TWO_SPLITS,
        ("timestamp", "user_id", "item_id", "is_click", "is_like", "is_follow", "pos_items", "neg_items"),
        "is_click"),
    "taobaoad_x1": Release(
        "TaobaoAd_x1", _TWO_SPLITS,
        ("clk", "btag_his", "cate_his", "brand_his", "userid", "cms_segid", "cms_group_id", "final_gender_code",
         "age_level", "pvalue_level", "shopping_level", "occupation", "new_user_class_level", "adgroup_id",
         "cate_id", "campaign_id", "customer", "brand", "price", "pid", "btag"), "clk"),
}


@dataclass
class Job:
    """One file to write: a release CSV (or pretrained-embedding file) -> a config path."""

    source: str
    target: str
    casts: Optional[Dict[str, pl.DataType]] = None  # None: copy the file as it is

    @property
    def tmp(self) -> str:
        folder, name = os.path.split(os.path.abspath(self.target))
        return os.path.join(folder, f".{name}.tmp-{os.getpid()}")


def load_dataset_params(config_dir: str, dataset_id: str) -> dict:
    """The dataset id's entry of ``<config_dir>/dataset_config.yaml`` (or ``dataset_config/*.yaml``)."""
    single = os.path.join(config_dir, "dataset_config.yaml")
    folder = os.path.join(config_dir, "dataset_config")
    files = [single] if os.path.isfile(single) else sorted(
        os.path.join(folder, f) for f in (os.listdir(folder) if os.path.isdir(folder) else []) if f.endswith(".yaml"))
    if not files:
        raise ValueError(f"--config {config_dir}: no dataset_config.yaml or dataset_config/*.yaml there")
    known: List[str] = []
    for path in files:
        with open(path) as fd:
            entries = yaml.safe_load(fd) or {}
        if dataset_id in entries:
            return {"dataset_id": dataset_id, **entries[dataset_id]}
        known.extend(entries)
    raise ValueError(f"dataset_id={dataset_id!r} is not in {', '.join(files)}; known ids: {', '.join(known)}")


def _feature_cols(params: dict) -> List[dict]:
    """Feature columns with name lists expanded to one dict per column."""
    out = []
    for col in params.get("feature_cols", []):
        for name in (col["name"] if isinstance(col["name"], list) else [col["name"]]):
            out.append({**col, "name": name})
    return out


def _label_col(params: dict) -> dict:
    label = params.get("label_col")
    if not isinstance(label, dict):
        raise ValueError(f"dataset {params['dataset_id']}: label_col must be one {{name, dtype}} mapping")
    return label


def _polars_dtype(dataset_id: str, col: dict) -> pl.DataType:
    dtype = col.get("dtype")
    if dtype not in POLARS_DTYPES:
        raise ValueError(f"dataset {dataset_id}: column {col['name']!r} has dtype={dtype!r}; "
                         f"use one of {sorted(POLARS_DTYPES)}")
    return POLARS_DTYPES[dtype]


def plan_jobs(params: dict, release: Release, src: str) -> List[Job]:
    """Match the config to the release; the files to write and the casts of their columns.

    A config column with a ``preprocess`` that the release lacks is derived by
    FuxiCTR at build time (``convert_weekday``, ``copy_from(user_id)``, ...); every
    other config column must be in the release. A split the release does not ship
    (KuaiVideo_x1 and TaobaoAd_x1 have no validation file) must point at the test
    file, as in BARS.
    """
    dataset_id = params["dataset_id"]
    label = _label_col(params)
    if label["name"] != release.label:
        raise ValueError(f"dataset {dataset_id}: label_col {label['name']!r} is not {release.name}'s "
                         f"label {release.label!r}")
    casts: Dict[str, pl.DataType] = {}
    for col in _feature_cols(params):
        if col["name"] in release.columns:
            casts[col["name"]] = _polars_dtype(dataset_id, col)
        elif not col.get("preprocess"):
            raise ValueError(f"dataset {dataset_id}: column {col['name']!r} is neither in {release.name} "
                             f"({', '.join(release.columns)}) nor derived by a `preprocess`")
    casts[release.label] = _polars_dtype(dataset_id, {**label, "dtype": label.get("dtype", "float")})
    casts = {c: casts[c] for c in release.columns if c in casts}

    data_format = params.get("data_format", "csv")
    if data_format not in ("csv", "parquet"):
        raise ValueError(f"dataset {dataset_id}: data_format={data_format!r}; use parquet or csv")
    sources: Dict[str, str] = {}
    for split in SPLITS:
        target = params.get(f"{split}_data")
        if not target:
            continue
        if not target.endswith(f".{data_format}"):
            raise ValueError(f"dataset {dataset_id}: {split}_data={target!r} must name a .{data_format} file")
        release_split = split if split in release.files else "test"
        if split not in release.files and target != params.get("test_data"):
            raise ValueError(f"dataset {dataset_id}: {release.name} has no {split} file; set {split}_data to "
                             f"test_data ({params.get('test_data')!r}) as BARS does")
        source = os.path.join(src, release.files[release_split])
        if sources.setdefault(target, source) != source:
            raise ValueError(f"dataset {dataset_id}: {target} would be written from both "
                             f"{sources[target]} and {source}")
    jobs = [Job(source, target, casts) for target, source in sources.items()]
    pretrained = {col["pretrained_emb"]: col for col in _feature_cols(params) if col.get("pretrained_emb")}
    jobs.extend(Job(os.path.join(src, os.path.basename(path)), path) for path in pretrained)
    return jobs


def check_release_csv(path: str, columns: Tuple[str, ...], label: str) -> None:
    """Present, not empty, the release's columns, a numeric label on its first rows; else DataError."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found (expected in the downloaded release folder)")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        head = pl.read_csv(path, n_rows=LABEL_CHECK_ROWS, infer_schema=False)
    except pl.exceptions.PolarsError as err:
        raise DataError(f"{path}: cannot be read as CSV: {err}") from err
    missing = [c for c in columns if c not in head.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the release's columns are {list(columns)}, "
                        f"the file has {head.columns}")
    if head.height == 0:
        raise DataError(f"{path}: the file has a header but no rows")
    values = head[label]
    bad = values.is_not_null() & values.cast(pl.Float64, strict=False).is_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise DataError(f"{path}: label column {label!r} is not numeric ({values[row]!r} on data row {row + 1})")
    check_complete_rows(path, len(head.columns))


def check_complete_rows(path: str, n_columns: int) -> None:
    """Every line has the header's number of fields; else DataError with the first short or
    long line's number. polars would pad a line cut off mid-way (an interrupted download
    or copy) with nulls. One streamed pass over the lines; lines with a quote character
    are not counted (a quoted field may hold the separator)."""
    lines = pl.scan_csv(path, has_header=False, separator="\x1f", quote_char=None, schema={"line": pl.String})
    fields = pl.col("line").str.count_matches(",", literal=True) + 1
    bad = (lines.with_row_index("line_number", offset=1)
           .filter(pl.col("line").is_not_null() & ~pl.col("line").str.contains('"', literal=True)
                   & (fields != n_columns))
           .select("line_number", fields.alias("fields")))
    stats = bad.select(pl.len().alias("count"), pl.col("line_number").first(), pl.col("fields").first()).collect()
    count, line_number, found = stats.row(0)
    if count:
        raise DataError(f"{path}: line {line_number} has {found} fields, the header has {n_columns} "
                        f"({count} such line(s)); the file looks cut off or damaged - download or copy it again")


def remove_orphaned_tmp_files(targets: List[str]) -> List[str]:
    """Delete ``.<name>.tmp-<pid>`` files beside ``targets`` left by preparers that died."""
    removed = []
    for folder in sorted({os.path.dirname(os.path.abspath(t)) for t in targets}):
        names = {os.path.basename(t) for t in targets if os.path.dirname(os.path.abspath(t)) == folder}
        for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            match = re.match(r"^\.(.+)\.tmp-(\d+)$", entry)
            if match and match.group(1) in names and not pid_alive(int(match.group(2))):
                logging.warning(f"Removing {os.path.join(folder, entry)}, left by a preparer that did not finish")
                os.remove(os.path.join(folder, entry))
                removed.append(os.path.join(folder, entry))
    return removed


def check_pretrained(path: str, dim: Optional[int]) -> None:
    """An h5 file with datasets ``key`` (N,) and ``value`` (N, dim), FuxiCTR's pretrained format."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found (expected in the downloaded release folder)")
    try:
        with h5py.File(path, "r") as hf:
            if "key" not in hf or "value" not in hf:
                raise DataError(f"{path}: needs datasets 'key' and 'value'; it has {sorted(hf.keys())}")
            keys, values = hf["key"].shape, hf["value"].shape
    except OSError as err:
        raise DataError(f"{path}: cannot be read as HDF5: {err}") from err
    if len(values) != 2 or keys[:1] != values[:1] or values[0] == 0:
        raise DataError(f"{path}: 'key' {keys} and 'value' {values} must hold one embedding row per key")
    if dim is not None and values[1] != dim:
        raise DataError(f"{path}: embeddings are {values[1]}-d, the config expects {dim}")


def _write_converted(job: Job, label: str, data_format: str) -> int:
    """Stream ``job.source`` into ``job.tmp`` with the casts; returns the row count."""
    frame = pl.scan_csv(job.source, infer_schema=False).select(
        [pl.col(name).cast(dtype, strict=True) for name, dtype in job.casts.items()])
    try:
        if data_format == "parquet":
            frame.sink_parquet(job.tmp)
            written = pl.scan_parquet(job.tmp)
        else:
            frame.sink_csv(job.tmp)
            written = pl.scan_csv(job.tmp, schema_overrides={label: pl.Float64})
        stats = written.select(pl.len().alias("rows"), pl.col(label).null_count().alias("empty"),
                               pl.col(label).min().alias("low"), pl.col(label).max().alias("high")).collect()
    except pl.exceptions.PolarsError as err:
        what = f"label column {label!r} is not numeric" if repr(label) in str(err) or f"`{label}`" in str(err) \
            else "a value does not convert to the config's dtype"
        raise DataError(f"{job.source}: {what}: {err}") from err
    rows, empty, low, high = stats.row(0)
    if empty:
        raise DataError(f"{job.source}: label column {label!r} is empty on {empty} row(s)")
    if low < 0 or high > 1:
        raise DataError(f"{job.source}: label column {label!r} has values in [{low}, {high}], outside [0, 1]")
    return rows


def prepare(dataset_id: str, src: str, config_dir: str = "./config/", release: Optional[str] = None) -> dict:
    """Check the release in ``src`` and write the raw files of ``dataset_id``'s config.

    Args:
        dataset_id: an id of the dataset config.
        src: folder of the downloaded release (its CSV files as the release names them).
        config_dir: folder holding dataset_config.yaml.
        release: which release ``src`` holds (a key of RELEASES); defaults to ``dataset_id``.

    Returns:
        target path -> rows written (None for copied pretrained-embedding files).
    """
    release_id = release or dataset_id
    if release_id not in RELEASES:
        raise ValueError(f"no preparer for {release_id!r}; releases: {', '.join(sorted(RELEASES))} "
                         f"(pass --release for another dataset id built from one of them)")
    spec = RELEASES[release_id]
    if not os.path.isdir(src):
        raise DataError(f"--src {src}: not a folder")
    params = load_dataset_params(config_dir, dataset_id)
    jobs = plan_jobs(params, spec, src)
    dims = {col["pretrained_emb"]: col.get("pretrain_dim", col.get("embedding_dim"))
            for col in _feature_cols(params) if col.get("pretrained_emb")}
    for job in jobs:
        if job.casts is None:
            check_pretrained(job.source, dims[job.target])
        else:
            check_release_csv(job.source, spec.columns, spec.label)

    data_format = params.get("data_format", "csv")
    remove_orphaned_tmp_files([job.target for job in jobs])
    written: Dict[str, Optional[int]] = {}
    try:
        for job in jobs:
            os.makedirs(os.path.dirname(os.path.abspath(job.target)), exist_ok=True)
            logging.info(f"Writing {job.target} from {job.source}")
            if job.casts is None:
                shutil.copyfile(job.source, job.tmp)
                written[job.target] = None
            else:
                written[job.target] = _write_converted(job, spec.label, data_format)
        for job in jobs:
            os.replace(job.tmp, job.target)
    finally:
        for job in jobs:
            if os.path.exists(job.tmp):
                os.remove(job.tmp)
    processed = os.path.join(params.get("data_root", "./data/"), dataset_id)
    if os.path.isdir(processed):
        logging.warning(f"{processed} was built from earlier raw files; the next run rebuilds it")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset_id", help=f"dataset config id ({', '.join(sorted(RELEASES))})")
    parser.add_argument("--src", required=True, help="folder of the downloaded release")
    parser.add_argument("--config", default="./config/", help="folder holding dataset_config.yaml")
    parser.add_argument("--release", choices=sorted(RELEASES), default=None,
                        help="the release in --src when the dataset id is not a release id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        written = prepare(args.dataset_id, args.src, args.config, args.release)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"dataset_id": args.dataset_id, "written": written}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
