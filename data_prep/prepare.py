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

``--src`` is the release folder, or the archive as downloaded (``.zip`` as BARS
ships it, ``.tar.gz`` / ``.tgz`` / ``.tar``), extracted into a temporary folder
beside the targets and removed afterwards. The raw Criteo display-advertising file
(``train.txt``: tab-separated, no header, label + 13 integer + 26 hashed categorical
columns) is not Criteo_x1, whose release is already encoded by BARS: ``criteo_x1``
refuses it with a message naming ``criteo_raw``, the preparer of that format
(:func:`prepare_raw_criteo`). A failed run also removes the folders it created.

``movielens_100k`` and ``movielens_1m`` are made from the GroupLens MovieLens archives
or the RecBole files (``movielens_100k`` fetches the RecBole wheel when ``--src`` is
not given) by :mod:`data_prep.movielens`, with the same checks-first, all-or-nothing writing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
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
        return tmp_path(self.target)


def tmp_path(target: str) -> str:
    """The hidden temporary file beside ``target`` that becomes ``target`` when complete."""
    folder, name = os.path.split(os.path.abspath(target))
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def replacing_targets(targets: Sequence[str]) -> Iterator[None]:
    """Write each target's :func:`tmp_path` inside the block; on success they replace the
    targets together. On an error no target changes, and the temporary files and the
    folders this call created are removed (no empty target folder is left behind)."""
    created: List[str] = []
    for folder in {os.path.dirname(os.path.abspath(t)) for t in targets}:
        missing = []
        while not os.path.isdir(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for path in reversed(missing):
            os.mkdir(path)
            created.append(path)
    done = False
    try:
        yield
        for target in targets:
            os.replace(tmp_path(target), target)
        done = True
    finally:
        for target in targets:
            if os.path.exists(tmp_path(target)):
                os.remove(tmp_path(target))
        if not done:
            for path in reversed(created):
                if os.path.isdir(path) and not os.listdir(path):
                    os.rmdir(path)


ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


def _nearest_existing_folder(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    return folder


def _extract(archive: str, dest: str) -> None:
    """Unpack a zip or tar archive into ``dest``; members that would land outside it,
    and links, are refused."""
    root = os.path.realpath(dest)

    def inside(name: str) -> bool:
        return os.path.realpath(os.path.join(root, name)).startswith(root + os.sep)

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            bad = [n for n in zf.namelist() if not inside(n)]
            if bad:
                raise DataError(f"--src {archive}: member {bad[0]!r} would be written outside the extraction folder")
            zf.extractall(root)
        return
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            bad = [m.name for m in members if not (m.isfile() or m.isdir()) or not inside(m.name)]
            if bad:
                raise DataError(f"--src {archive}: member {bad[0]!r} is a link or would be written outside "
                                "the extraction folder")
            tf.extractall(root, members=members)
    except tarfile.TarError as err:
        raise DataError(f"--src {archive}: not a readable zip or tar archive: {err}") from err


def _release_root(folder: str, wanted: str) -> str:
    """The folder inside an extracted archive that holds ``wanted``; without one, the
    folder below any chain of single sub-folders (a release packed in its own folder)."""
    holders = sorted(d for d, _, files in os.walk(folder) if wanted in files)
    if len(holders) > 1:
        raise DataError(f"the archive holds {wanted} in several folders: {', '.join(holders)}")
    if holders:
        return holders[0]
    while True:
        entries = [e for e in os.listdir(folder) if not e.startswith(".") and e != "__MACOSX"]
        if len(entries) != 1 or not os.path.isdir(os.path.join(folder, entries[0])):
            return folder
        folder = os.path.join(folder, entries[0])


@contextlib.contextmanager
def source_folder(src: str, wanted: str, scratch_near: str) -> Iterator[str]:
    """``--src`` as a folder: a folder as it is, or an archive (:data:`ARCHIVE_SUFFIXES`)
    extracted into a temporary folder next to ``scratch_near`` and removed afterwards.
    ``wanted`` is a file of the release, used to find its folder inside the archive."""
    if os.path.isdir(src):
        yield src
        return
    if not os.path.isfile(src):
        raise DataError(f"--src {src}: not a folder or a file (no such path)")
    if not src.lower().endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"--src {src}: a file, but not a release archive ({', '.join(ARCHIVE_SUFFIXES)}); "
                        "pass the archive or the folder of the release")
    scratch = tempfile.mkdtemp(prefix=".extract-", dir=_nearest_existing_folder(scratch_near))
    try:
        logging.info(f"Extracting {src} into {scratch}")
        _extract(src, scratch)
        yield _release_root(scratch, wanted)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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


RAW_CRITEO_ID = "criteo_raw"
RAW_CRITEO_FILE = "train.txt"
RAW_CRITEO_COLUMNS = ("label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27)))
RAW_CRITEO_SPLIT = (0.8, 0.1, 0.1)
RAW_CRITEO_SPLIT_SEED = 2026
ARROW_DTYPES = {"str": pa.string(), "float": pa.float64(), "int": pa.int64()}


def looks_like_raw_criteo(path: str) -> bool:
    """The first line has the raw Criteo layout: 40 tab-separated fields, a 0/1 label first."""
    with open(path, "rb") as fd:
        fields = fd.readline(1 << 16).rstrip(b"\r\n").split(b"\t")
    return len(fields) == len(RAW_CRITEO_COLUMNS) and fields[0] in (b"0", b"1")


def refuse_raw_criteo(src: str, release: Release) -> None:
    """DataError when ``src`` holds the raw Criteo file instead of the BARS Criteo_x1 release."""
    for name in (*release.files.values(), RAW_CRITEO_FILE):
        path = os.path.join(src, name)
        if os.path.isfile(path) and looks_like_raw_criteo(path):
            raise DataError(
                f"{path}: this is the raw Criteo display-advertising format (tab-separated, no header, label + "
                f"13 integer + 26 hashed categorical columns, blanks for missing values). criteo_x1 expects the "
                f"BARS-encoded Criteo_x1 release (train.csv / valid.csv / test.csv with the header "
                f"{','.join(release.columns[:3])},...,C26). For the raw file use: "
                f"python -m data_prep.prepare {RAW_CRITEO_ID} --src {path}")


def _arrow_writer(path: str, schema: pa.Schema, data_format: str):
    return pq.ParquetWriter(path, schema) if data_format == "parquet" else pa_csv.CSVWriter(path, schema)


def prepare_raw_criteo(params: dict, src: str, seed: int = RAW_CRITEO_SPLIT_SEED) -> Dict[str, int]:
    """Write the raw Criteo file ``src`` (``train.txt`` of the Kaggle display-advertising
    release) into the config's train/valid/test files.

    Rows go to train / valid / test with probabilities :data:`RAW_CRITEO_SPLIT` (8:1:1,
    the split of Criteo_x4 and AutoInt) from ``numpy.random.default_rng(seed)`` in file
    order: the same split for the same file and seed, but not the BARS Criteo_x4 files.
    The file is read in blocks (never whole); integer columns must parse as integers,
    labels must be 0 or 1; blanks become nulls, which the config's ``fill_na`` fills.
    The columns are cast to the config's dtypes; the features are whatever the config
    says (the ``criteo_raw`` entry: FuxiCTR's ``convert_to_bucket`` on I1-I13).

    Returns:
        target path -> rows written.
    """
    dataset_id = params["dataset_id"]
    if not looks_like_raw_criteo(src):
        raise DataError(f"{src}: not the raw Criteo format (40 tab-separated fields, a 0/1 label first, "
                        f"no header); a BARS Criteo_x1 CSV is prepared with dataset id criteo_x1")
    label = _label_col(params)
    if label["name"] != RAW_CRITEO_COLUMNS[0]:
        raise ValueError(f"dataset {dataset_id}: label_col {label['name']!r}; the raw Criteo preparer names "
                         f"the label column {RAW_CRITEO_COLUMNS[0]!r}")
    _polars_dtype(dataset_id, {**label, "dtype": label.get("dtype", "float")})
    types = {label["name"]: label.get("dtype", "float")}
    for col in _feature_cols(params):
        if col["name"] not in RAW_CRITEO_COLUMNS:
            raise ValueError(f"dataset {dataset_id}: column {col['name']!r} is not a raw Criteo column "
                             f"({', '.join(RAW_CRITEO_COLUMNS)})")
        _polars_dtype(dataset_id, col)
        types[col["name"]] = col["dtype"]
    schema = pa.schema([(name, ARROW_DTYPES[types[name]]) for name in RAW_CRITEO_COLUMNS if name in types])
    data_format = params.get("data_format", "csv")
    targets = [params.get(f"{split}_data") for split in SPLITS]
    if not all(targets) or len(set(targets)) != len(SPLITS):
        raise ValueError(f"dataset {dataset_id}: the raw Criteo preparer writes three different files; "
                         f"set train_data, valid_data and test_data")
    for target in targets:
        if not target.endswith(f".{data_format}"):
            raise ValueError(f"dataset {dataset_id}: {target!r} must name a .{data_format} file")

    read_types = {name: (pa.string() if name.startswith("C") else pa.int64())
                  for name in RAW_CRITEO_COLUMNS}
    reader_options = dict(
        read_options=pa_csv.ReadOptions(column_names=list(RAW_CRITEO_COLUMNS), block_size=1 << 24),
        parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pa_csv.ConvertOptions(column_types=read_types, include_columns=schema.names,
                                              strings_can_be_null=True))
    rng = np.random.default_rng(seed)
    bounds = np.cumsum(RAW_CRITEO_SPLIT)[:-1]
    rows = dict.fromkeys(targets, 0)
    seen = 0
    with replacing_targets(targets):
        writers = [_arrow_writer(tmp_path(t), schema, data_format) for t in targets]
        try:
            for batch in pa_csv.open_csv(src, **reader_options):
                labels = batch.column(label["name"]).to_numpy(zero_copy_only=False)
                bad = np.flatnonzero(~np.isin(labels, (0, 1)))
                if bad.size:
                    raise DataError(f"{src}: label on line {seen + bad[0] + 1} is "
                                    f"{batch.column(label['name'])[int(bad[0])]}, not 0 or 1")
                table = pa.Table.from_batches([batch]).cast(schema)
                split = np.searchsorted(bounds, rng.random(batch.num_rows), side="right")
                for index, (target, writer) in enumerate(zip(targets, writers)):
                    part = table.filter(pa.array(split == index))
                    writer.write_table(part)
                    rows[target] += part.num_rows
                seen += batch.num_rows
        except pa.ArrowInvalid as err:
            raise DataError(f"{src}: not readable as raw Criteo rows near line {seen + 1} "
                            f"(40 tab-separated fields, integers in I1-I13): {err}") from err
        finally:
            for writer in writers:
                writer.close()
    logging.info(f"Raw Criteo {src}: {seen} rows -> " + ", ".join(f"{t}: {n}" for t, n in rows.items()))
    return rows


MOVIELENS_IDS = ("movielens_100k", "movielens_1m")
RELEASE_IDS = [*sorted(RELEASES), RAW_CRITEO_ID, *MOVIELENS_IDS]


def prepare(dataset_id: str, src: Optional[str], config_dir: str = "./config/", release: Optional[str] = None,
            split_seed: int = RAW_CRITEO_SPLIT_SEED, split: str = "random", cache_dir: Optional[str] = None) -> dict:
    """Check the release in ``src`` and write the raw files of ``dataset_id``'s config.

    Args:
        dataset_id: an id of the dataset config.
        src: folder of the downloaded release (its CSV files as the release names them),
            or the release archive (.zip, .tar.gz, .tgz, .tar); for ``criteo_raw`` also
            the raw ``train.txt`` itself; for MovieLens (:mod:`data_prep.movielens`) the
            GroupLens archive or folder, the RecBole files or wheel, or None to fetch
            the RecBole wheel (MovieLens-100K).
        config_dir: folder holding dataset_config.yaml.
        release: which release ``src`` holds (a key of RELEASES, ``criteo_raw``,
            ``movielens_100k`` or ``movielens_1m``); defaults to ``dataset_id``.
        split_seed: seed of the raw Criteo and MovieLens random train/valid/test splits.
        split: MovieLens only: ``random`` (8:1:1 seeded) or ``time`` (8:1:1 by timestamp).
        cache_dir: MovieLens only: folder of the fetched RecBole wheel.

    Returns:
        target path -> rows written (None for copied pretrained-embedding files).
    """
    release_id = release or dataset_id
    if release_id not in RELEASES and release_id not in (RAW_CRITEO_ID, *MOVIELENS_IDS):
        raise ValueError(f"no preparer for {release_id!r}; releases: {', '.join(RELEASE_IDS)} "
                         f"(pass --release for another dataset id built from one of them)")
    params = load_dataset_params(config_dir, dataset_id)
    if release_id in MOVIELENS_IDS:
        from data_prep.movielens import DATASET_SIZES, prepare_movielens

        written = prepare_movielens(params, DATASET_SIZES[release_id], src, split, split_seed, cache_dir)
        _warn_processed(params, dataset_id)
        return written
    if src is None:
        raise ValueError(f"--src is required for {release_id} (the downloaded release: its folder or archive)")
    scratch_near = params.get("train_data") or params.get("data_root", "./data/")
    wanted = RAW_CRITEO_FILE if release_id == RAW_CRITEO_ID else RELEASES[release_id].files["train"]
    if release_id == RAW_CRITEO_ID and os.path.isfile(src) and not src.lower().endswith(ARCHIVE_SUFFIXES):
        written = prepare_raw_criteo(params, src, split_seed)
    else:
        with source_folder(src, wanted, scratch_near) as folder:
            if release_id == RAW_CRITEO_ID:
                written = prepare_raw_criteo(params, os.path.join(folder, RAW_CRITEO_FILE), split_seed)
            else:
                written = _prepare_release(params, RELEASES[release_id], folder)
    _warn_processed(params, dataset_id)
    return written


def _warn_processed(params: dict, dataset_id: str) -> None:
    processed = os.path.join(params.get("data_root", "./data/"), dataset_id)
    if os.path.isdir(processed):
        logging.warning(f"{processed} was built from earlier raw files; the next run rebuilds it")


def _prepare_release(params: dict, spec: Release, src: str) -> Dict[str, Optional[int]]:
    """The BARS release in the folder ``src`` -> the config's raw files (checked first)."""
    if spec.name == "Criteo_x1":
        refuse_raw_criteo(src, spec)
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
    with replacing_targets([job.target for job in jobs]):
        for job in jobs:
            logging.info(f"Writing {job.target} from {job.source}")
            if job.casts is None:
                shutil.copyfile(job.source, job.tmp)
                written[job.target] = None
            else:
                written[job.target] = _write_converted(job, spec.label, data_format)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset_id", help=f"dataset config id ({', '.join(RELEASE_IDS)})")
    parser.add_argument("--src", default=None,
                        help="the downloaded release: its folder or archive (.zip, .tar.gz, .tgz, .tar); "
                             f"for {RAW_CRITEO_ID} also the raw train.txt; for MovieLens also the RecBole files "
                             "or wheel, and optional for movielens_100k (without it the RecBole wheel is "
                             "fetched with pip)")
    parser.add_argument("--config", default="./config/", help="folder holding dataset_config.yaml")
    parser.add_argument("--split-seed", type=int, default=RAW_CRITEO_SPLIT_SEED,
                        help=f"seed of the {RAW_CRITEO_ID} and MovieLens random train/valid/test splits")
    parser.add_argument("--split", choices=["random", "time"], default="random",
                        help="MovieLens: 8:1:1 at random (seeded) or by time (oldest ratings train)")
    parser.add_argument("--cache-dir", default=None,
                        help="MovieLens: folder of the fetched RecBole wheel (default $FUXICTR_ZOO_CACHE, "
                             "else ~/.cache/fuxictr-zoo)")
    parser.add_argument("--release", choices=RELEASE_IDS, default=None,
                        help="the release in --src when the dataset id is not a release id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        written = prepare(args.dataset_id, args.src, args.config, args.release, args.split_seed, args.split,
                          args.cache_dir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"dataset_id": args.dataset_id, "written": written}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
