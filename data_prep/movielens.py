"""MovieLens-100K and -1M as CTR data: label, user and movie features, a seeded split.

    python -m data_prep.prepare movielens_100k                   # fetches the RecBole wheel through pip
    python -m data_prep.prepare movielens_100k --src ml-100k.zip  # or the folder with u.data, u.user, u.item
    python -m data_prep.prepare movielens_1m --src ml-1m.zip      # ratings.dat, users.dat, movies.dat

Sources (``--src``; :func:`read_source` finds which one a folder or archive holds):

* GroupLens MovieLens-100K (``ml-100k.zip`` or its folder): ``u.data`` (user, item,
  rating, timestamp; tab-separated), ``u.user`` (user|age|gender|occupation|zip),
  ``u.item`` (item|title|release date|video date|url|19 genre flags), Latin-1.
* RecBole's atomic files of the same data (``ml-100k.inter``, ``.user``, ``.item``;
  tab-separated with ``name:type`` headers), as shipped in the RecBole wheel under
  ``recbole/dataset_example/ml-100k/`` (the wheel itself is a valid ``--src``).
* GroupLens MovieLens-1M (``ml-1m.zip`` or its folder): ``ratings.dat``,
  ``users.dat``, ``movies.dat`` (``::``-separated, Latin-1).

Without ``--src``, ``movielens_100k`` runs ``pip download recbole==1.2.1 --no-deps`` into
a cache folder (:func:`fetch_recbole_wheel`) and reads the three RecBole files from the
wheel. The repository never holds the data (the MovieLens terms forbid redistributing it).

Every row of the output (:func:`ctr_frame`) is one rating: ``label`` = 1 for rating >= 4,
the user's ``user_id``, ``age`` (decade of the age in 100K, the release's age group in 1M),
``gender``, ``occupation``, ``zip`` (first three characters: the US region), the movie's
``item_id``, ``release_decade`` and ``genres`` (``^``-joined, a sequence field), the
rating's ``hour`` and ``weekday`` (UTC), and ``rating`` / ``timestamp`` (not features: the
raw rating and the time the split by time sorts on). The two 100K formats give the same
rows. :func:`split_rows` cuts 8:1:1, seeded at random or by time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import polars as pl

from data_prep.prepare import (ARCHIVE_SUFFIXES, _extract, _feature_cols, _label_col, _nearest_existing_folder,
                               remove_orphaned_tmp_files, replacing_targets, tmp_path)
from fuxictr_ext.data import SPLITS, DataError

RECBOLE_VERSION = "1.2.1"
RECBOLE_FOLDER = "recbole/dataset_example/ml-100k"
POSITIVE_RATING = 4
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_KINDS = ("random", "time")
GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western")
COLUMNS = ("label", "user_id", "age", "gender", "occupation", "zip", "item_id", "release_decade", "genres",
           "hour", "weekday", "rating", "timestamp")


@dataclass(frozen=True)
class Layout:
    """One on-disk form of a MovieLens release: its three files (ratings, users, items)
    and the reader that turns them into the three tables of :func:`ctr_frame`.

    Args:
        name: what the files are, for messages.
        size: ``"100k"`` or ``"1m"``: which dataset id takes it.
        files: (ratings, users, items) file names.
        reader: ``reader(folder) -> (ratings, users, items)`` polars frames.
    """

    name: str
    size: str
    files: Tuple[str, str, str]
    reader: Callable[[str], Tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]]


def _lines(path: str, encoding: str) -> List[str]:
    """The file's lines without line ends; a file that is absent or empty is a DataError."""
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: the file is empty")
    with open(path, "rb") as handle:
        text = handle.read().decode(encoding)
    if not text.endswith("\n"):
        raise DataError(f"{path}: the last line has no line end; the file looks cut off - copy it again")
    return text.rstrip("\n").split("\n")


def _table(path: str, separator: str, names: Tuple[str, ...], encoding: str = "latin-1",
           header: bool = False, min_fields: Optional[int] = None) -> pl.DataFrame:
    """Split every line of ``path`` on ``separator`` into ``names`` (strings); a line with
    another number of fields is a DataError naming the file and line (``min_fields``: at
    least that many, the rest ignored)."""
    lines = _lines(path, encoding)
    start = 1 if header else 0
    rows = [line.rstrip("\r").split(separator) for line in lines[start:]]
    need = min_fields or len(names)
    for number, fields in enumerate(rows, start=start + 1):
        if len(fields) < need or (min_fields is None and len(fields) != need):
            raise DataError(f"{path}: line {number} has {len(fields)} fields, expected {need} "
                            f"({separator!r}-separated); the file is damaged or not this release's")
    if not rows:
        raise DataError(f"{path}: no data rows")
    return pl.DataFrame([[fields[i] for fields in rows] for i in range(len(names))], schema=list(names),
                        orient="col")


def _check_header(path: str, expected: str) -> None:
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline().rstrip("\r\n")
    if first != expected:
        raise DataError(f"{path}: header {first!r}, expected {expected!r} (RecBole's ml-100k atomic file)")


def _year_from_date(column: str) -> pl.Expr:
    """``01-Jan-1995`` -> ``1995``; anything else -> empty."""
    return pl.col(column).str.extract(r"(\d{4})\s*$", 1).fill_null("")


def read_grouplens_100k(folder: str) -> Tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """GroupLens ``u.data``, ``u.user``, ``u.item`` -> (ratings, users, items)."""
    ratings = _table(os.path.join(folder, "u.data"), "\t", ("user_id", "item_id", "rating", "timestamp"))
    users = _table(os.path.join(folder, "u.user"), "|", ("user_id", "age", "gender", "occupation", "zip"))
    items_path = os.path.join(folder, "u.item")
    items = _table(items_path, "|", ("item_id", "title", "release_date", "video_date", "url", *GENRES_100K))
    flags = items.select(GENRES_100K)
    if not flags.select(pl.all().is_in(["0", "1"]).all()).row(0) == (True,) * len(GENRES_100K):
        raise DataError(f"{items_path}: genre flags (the last 19 fields) must be 0 or 1")
    genres = items.select(pl.concat_list([pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in GENRES_100K])
                          .list.drop_nulls().list.join("^").alias("genres"))["genres"]
    items = items.select("item_id", _year_from_date("release_date").alias("release_year")).with_columns(genres)
    return ratings, users.with_columns(_age_decade(users["age"], os.path.join(folder, "u.user"))), items


def read_recbole_100k(folder: str) -> Tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """RecBole ``ml-100k.inter``, ``.user``, ``.item`` -> (ratings, users, items)."""
    paths = [os.path.join(folder, f"ml-100k.{kind}") for kind in ("inter", "user", "item")]
    _check_header(paths[0], "user_id:token\titem_id:token\trating:float\ttimestamp:float")
    _check_header(paths[1], "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token")
    _check_header(paths[2], "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq")
    ratings = _table(paths[0], "\t", ("user_id", "item_id", "rating", "timestamp"), "utf-8", header=True)
    users = _table(paths[1], "\t", ("user_id", "age", "gender", "occupation", "zip"), "utf-8", header=True)
    items = _table(paths[2], "\t", ("item_id", "title", "release_year", "genres"), "utf-8", header=True)
    items = items.select("item_id",
                         pl.col("release_year").str.extract(r"^(\d{4})$", 1).fill_null("").alias("release_year"),
                         pl.col("genres").str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
                         .list.join("^").alias("genres"))
    ratings = ratings.with_columns(pl.col("rating").str.replace(r"\.0$", ""),
                                   pl.col("timestamp").str.replace(r"\.0$", ""))
    return ratings, users.with_columns(_age_decade(users["age"], paths[1])), items


def read_grouplens_1m(folder: str) -> Tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """GroupLens ``ratings.dat``, ``users.dat``, ``movies.dat`` -> (ratings, users, items).
    Ages are the release's groups (1, 18, 25, 35, 45, 50, 56), occupations its codes 0-20."""
    ratings = _table(os.path.join(folder, "ratings.dat"), "::", ("user_id", "item_id", "rating", "timestamp"))
    users = _table(os.path.join(folder, "users.dat"), "::", ("user_id", "gender", "age", "occupation", "zip"))
    items = _table(os.path.join(folder, "movies.dat"), "::", ("item_id", "title", "genres"))
    items = items.select("item_id", pl.col("title").str.extract(r"\((\d{4})\)\s*$", 1).fill_null("")
                         .alias("release_year"), pl.col("genres").str.replace_all("|", "^", literal=True))
    return ratings, users, items


def _age_decade(ages: pl.Series, path: str) -> pl.Series:
    """Ages in years -> their decade (``"20"`` for 20-29)."""
    years = ages.cast(pl.Int64, strict=False)
    if years.null_count():
        row = int(years.is_null().arg_true()[0])
        raise DataError(f"{path}: age {ages[row]!r} on data row {row + 1} is not a whole number of years")
    return (years // 10 * 10).cast(pl.String).alias("age")


LAYOUTS = (
    Layout("GroupLens MovieLens-100K", "100k", ("u.data", "u.user", "u.item"), read_grouplens_100k),
    Layout("RecBole ml-100k atomic files", "100k", ("ml-100k.inter", "ml-100k.user", "ml-100k.item"),
           read_recbole_100k),
    Layout("GroupLens MovieLens-1M", "1m", ("ratings.dat", "users.dat", "movies.dat"), read_grouplens_1m),
)


def find_layout(folder: str, size: str) -> Tuple[Layout, str]:
    """The layout whose files lie in ``folder`` or one folder below it, for the dataset
    size ``size``; DataError naming what is missing or which dataset id takes it."""
    found: List[Tuple[Layout, str, List[str]]] = []
    for layout in LAYOUTS:
        holders = sorted({root for root, _, files in os.walk(folder) for name in layout.files if name in files})
        for root in holders:
            found.append((layout, root, [name for name in layout.files
                                         if not os.path.isfile(os.path.join(root, name))]))
    complete = [(layout, root) for layout, root, missing in found if not missing]
    for layout, root in complete:
        if layout.size == size:
            return layout, root
    if complete:
        layout, root = complete[0]
        raise DataError(f"{root}: holds {layout.name} ({', '.join(layout.files)}); "
                        f"prepare it with dataset id movielens_{layout.size}")
    partial = [(layout, root, missing) for layout, root, missing in found if layout.size == size] or found
    if partial:
        layout, root, missing = partial[0]
        raise DataError(f"{root}: {layout.name} is incomplete: {', '.join(missing)} missing "
                        f"(the release has {', '.join(layout.files)})")
    expected = "; ".join(f"{layout.name}: {', '.join(layout.files)}" for layout in LAYOUTS if layout.size == size)
    raise DataError(f"{folder}: no MovieLens-{size.upper()} files there (expected {expected})")


def ctr_frame(ratings: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame, where: str) -> pl.DataFrame:
    """The three tables -> one row per rating with :data:`COLUMNS`, in a canonical order
    (timestamp, user, item), so every form of the same data gives the same frame."""
    typed = ratings.with_columns(pl.col("rating").cast(pl.Int64, strict=False).alias("rating_value"),
                                 pl.col("timestamp").cast(pl.Int64, strict=False).alias("time_value"))
    for column, value in (("rating", "rating_value"), ("timestamp", "time_value")):
        bad = typed[value].is_null()
        if bad.any():
            row = int(bad.arg_true()[0])
            raise DataError(f"{where}: {column} {ratings[column][row]!r} on rating {row + 1} is not an integer")
    out_of_range = ~typed["rating_value"].is_between(1, 5)
    if out_of_range.any():
        row = int(out_of_range.arg_true()[0])
        raise DataError(f"{where}: rating {ratings['rating'][row]!r} on rating {row + 1} is not in 1..5")
    for table, key, what in ((users, "user_id", "users"), (items, "item_id", "movies")):
        duplicated = table[key].is_duplicated()
        if duplicated.any():
            raise DataError(f"{where}: {key} {table[key].filter(duplicated)[0]!r} appears twice in the {what} file")
        unknown = ~ratings[key].is_in(table[key].implode())
        if unknown.any():
            raise DataError(f"{where}: {unknown.sum()} rating(s) name a {key} missing from the {what} file "
                            f"(first: {ratings[key].filter(unknown)[0]!r}); the files are not one release")
    when = pl.from_epoch(pl.col("time_value"), time_unit="s")
    frame = (typed.join(users, on="user_id", how="left").join(items, on="item_id", how="left")
             .with_columns((pl.col("rating_value") >= POSITIVE_RATING).cast(pl.Float64).alias("label"),
                           pl.col("zip").str.slice(0, 3),
                           pl.when(pl.col("release_year") == "").then(pl.lit(""))
                           .otherwise(pl.col("release_year").str.slice(0, 3) + "0").alias("release_decade"),
                           when.dt.hour().cast(pl.String).alias("hour"),
                           (when.dt.weekday() - 1).cast(pl.String).alias("weekday"),
                           pl.col("rating_value").alias("rating"), pl.col("time_value").alias("timestamp")))
    frame = frame.select(COLUMNS)
    return frame.sort(["timestamp", "user_id", "item_id"], maintain_order=True)


def split_rows(frame: pl.DataFrame, kind: str, seed: int) -> Dict[str, pl.DataFrame]:
    """8:1:1 (:data:`SPLIT_FRACTIONS`) into train / valid / test.

    ``random``: a permutation from ``numpy.random.default_rng(seed)`` of the canonical row
    order (same data and seed, same split). ``time``: the earliest 80% of ratings train,
    the next 10% validate, the latest 10% test (the seed is not used).
    """
    if kind not in SPLIT_KINDS:
        raise ValueError(f"--split {kind!r}: use one of {', '.join(SPLIT_KINDS)}")
    rows = frame.height
    order = np.random.default_rng(seed).permutation(rows) if kind == "random" else np.arange(rows)
    train_end = int(round(rows * SPLIT_FRACTIONS[0]))
    valid_end = train_end + int(round(rows * SPLIT_FRACTIONS[1]))
    parts = {"train": order[:train_end], "valid": order[train_end:valid_end], "test": order[valid_end:]}
    return {name: frame[np.sort(index) if kind == "random" else index] for name, index in parts.items()}


def recbole_cache_dir() -> str:
    """``$FUXICTR_ZOO_CACHE`` or ``$XDG_CACHE_HOME/fuxictr-zoo`` (``~/.cache/fuxictr-zoo``)."""
    if os.environ.get("FUXICTR_ZOO_CACHE"):
        return os.environ["FUXICTR_ZOO_CACHE"]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fuxictr-zoo")


def recbole_wheel_name(version: str = RECBOLE_VERSION) -> str:
    return f"recbole-{version}-py3-none-any.whl"


def fetch_recbole_wheel(cache_dir: Optional[str] = None, version: str = RECBOLE_VERSION) -> str:
    """The RecBole wheel in ``cache_dir`` (:func:`recbole_cache_dir`), downloaded with
    ``pip download recbole==<version> --no-deps`` when absent; DataError when pip fails."""
    cache_dir = cache_dir or recbole_cache_dir()
    wheel = os.path.join(cache_dir, recbole_wheel_name(version))
    if zipfile.is_zipfile(wheel):
        logging.info(f"Using the RecBole {version} wheel cached at {wheel}")
        return wheel
    os.makedirs(cache_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".download-", dir=cache_dir)
    command = [sys.executable, "-m", "pip", "download", f"recbole=={version}", "--no-deps",
               "--only-binary=:all:", "--disable-pip-version-check", "-d", scratch]
    logging.info(f"No --src: fetching MovieLens-100K from the package registry, in the RecBole {version} wheel "
                 f"(MIT code; it ships recbole/dataset_example/ml-100k): {' '.join(command[2:])} -> {cache_dir}")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        fetched = os.path.join(scratch, recbole_wheel_name(version))
        if done.returncode != 0 or not zipfile.is_zipfile(fetched):
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise DataError(f"pip download recbole=={version} failed (exit {done.returncode}): {' | '.join(tail)}. "
                            "Without network access pass --src: the GroupLens ml-100k.zip, its folder, the "
                            "RecBole ml-100k files or the wheel")
        os.replace(fetched, wheel)
    except subprocess.TimeoutExpired as err:
        raise DataError(f"pip download recbole=={version} did not finish in {err.timeout:.0f} s; pass --src") from err
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logging.info(f"Saved {wheel} ({os.path.getsize(wheel) / 1e6:.1f} MB)")
    return wheel


def _extract_members(archive: str, dest: str) -> None:
    """Unpack ``archive`` into ``dest``; for the RecBole wheel only its ml-100k folder."""
    if archive.lower().endswith(".whl"):
        try:
            with zipfile.ZipFile(archive) as zf:
                members = [n for n in zf.namelist() if n.startswith(RECBOLE_FOLDER + "/")
                           and n.rsplit("/", 1)[-1] in LAYOUTS[1].files]
                if not members:
                    raise DataError(f"--src {archive}: a wheel without {RECBOLE_FOLDER}/ "
                                    f"({', '.join(LAYOUTS[1].files)}); use recbole {RECBOLE_VERSION}")
                for name in members:
                    with zf.open(name) as src, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
                        shutil.copyfileobj(src, out)
        except zipfile.BadZipFile as err:
            raise DataError(f"--src {archive}: not a readable wheel (zip): {err}") from err
        return
    _extract(archive, dest)


@contextlib.contextmanager
def source_folder(src: str, scratch_near: str) -> Iterator[str]:
    """``--src`` as a folder: a folder as it is; an archive (``.zip``, ``.tar.gz``, ``.tgz``,
    ``.tar``, the RecBole ``.whl``) extracted into a temporary folder beside
    ``scratch_near`` and removed afterwards."""
    if os.path.isdir(src):
        yield src
        return
    if not os.path.isfile(src):
        raise DataError(f"--src {src}: not a folder or a file (no such path)")
    if not src.lower().endswith((*ARCHIVE_SUFFIXES, ".whl")):
        raise DataError(f"--src {src}: a file, but not an archive ({', '.join(ARCHIVE_SUFFIXES)}, .whl); "
                        "pass ml-100k.zip / ml-1m.zip, the RecBole wheel or the folder of the files")
    scratch = tempfile.mkdtemp(prefix=".extract-", dir=_nearest_existing_folder(scratch_near))
    try:
        logging.info(f"Extracting {src} into {scratch}")
        _extract_members(src, scratch)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def read_source(src: str, size: str, scratch_near: str) -> Tuple[pl.DataFrame, str]:
    """The CTR frame (:func:`ctr_frame`) of the MovieLens-``size`` data in ``src`` and a
    description of where it came from."""
    with source_folder(src, scratch_near) as folder:
        layout, root = find_layout(folder, size)
        logging.info(f"Reading {layout.name} from {src}")
        ratings, users, items = layout.reader(root)
        frame = ctr_frame(ratings, users, items, f"--src {src} ({layout.name})")
    return frame, layout.name


DATASET_SIZES = {"movielens_100k": "100k", "movielens_1m": "1m"}
SPLIT_FILE = "split.json"


def prepare_movielens(params: dict, size: str, src: Optional[str] = None, split: str = "random",
                      seed: int = 2026, cache_dir: Optional[str] = None) -> Dict[str, int]:
    """Write the config's train / valid / test files (and ``split.json`` beside the train
    file: source, split, seed, rows and positive rate per split) from MovieLens-``size``.

    Args:
        params: the dataset id's config entry (:func:`data_prep.prepare.load_dataset_params`).
        size: ``"100k"`` or ``"1m"``.
        src: ``--src`` (see the module docstring); None fetches the RecBole wheel (100K only).
        split: ``random`` (seeded) or ``time`` (:func:`split_rows`).
        seed: the random split's seed.
        cache_dir: where the fetched wheel is kept (:func:`recbole_cache_dir` when None).

    Returns:
        target path -> rows written.
    """
    dataset_id = params["dataset_id"]
    if split not in SPLIT_KINDS:
        raise ValueError(f"--split {split!r}: use one of {', '.join(SPLIT_KINDS)}")
    label = _label_col(params)
    if label["name"] != "label":
        raise ValueError(f"dataset {dataset_id}: label_col {label['name']!r}; the MovieLens preparer writes 'label'")
    unknown = [col["name"] for col in _feature_cols(params)
               if col["name"] not in COLUMNS and not col.get("preprocess")]
    if unknown:
        raise ValueError(f"dataset {dataset_id}: column(s) {unknown} are not written by the MovieLens preparer "
                         f"({', '.join(COLUMNS)})")
    data_format = params.get("data_format", "csv")
    targets = [params.get(f"{name}_data") for name in SPLITS]
    if not all(targets) or len(set(targets)) != len(SPLITS):
        raise ValueError(f"dataset {dataset_id}: the MovieLens preparer writes three different files; "
                         "set train_data, valid_data and test_data")
    for target in targets:
        if data_format not in ("csv", "parquet") or not target.endswith(f".{data_format}"):
            raise ValueError(f"dataset {dataset_id}: {target!r} must name a .{data_format} file "
                             "(data_format parquet or csv)")
    if src is None:
        if size != "100k":
            raise ValueError(f"dataset {dataset_id}: MovieLens-{size.upper()} is not on the package registry; "
                             "pass --src with the GroupLens archive (ml-1m.zip) or its folder")
        src = fetch_recbole_wheel(cache_dir)
    frame, source = read_source(src, size, targets[0])
    parts = split_rows(frame, split, seed)
    summary = {"dataset_id": dataset_id, "source": source, "src": os.path.abspath(src), "split": split,
               "seed": seed if split == "random" else None, "label": f"rating >= {POSITIVE_RATING}",
               "rows": {name: part.height for name, part in parts.items()},
               "positive_rate": {name: round(float(part["label"].mean()), 6) for name, part in parts.items()}}
    meta = os.path.join(os.path.dirname(targets[0]), SPLIT_FILE)
    remove_orphaned_tmp_files([*targets, meta])
    with replacing_targets([*targets, meta]):
        for name, target in zip(SPLITS, targets):
            logging.info(f"Writing {target}: {parts[name].height} rows, positive rate "
                         f"{summary['positive_rate'][name]:.4f}")
            if data_format == "parquet":
                parts[name].write_parquet(tmp_path(target))
            else:
                parts[name].write_csv(tmp_path(target))
        with open(tmp_path(meta), "w") as handle:
            json.dump(summary, handle, indent=2)
    return {target: parts[name].height for name, target in zip(SPLITS, targets)}
