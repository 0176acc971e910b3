"""MovieLens preparer (data_prep/movielens.py): the three source formats, the label and
fields, the split's determinism, errors on wrong or partial sources, and one end-to-end
run on MovieLens-100K fetched from the package registry in the RecBole wheel."""

import json
import os
import re
import shutil
import zipfile
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest
import yaml

from data_prep import movielens
from data_prep.prepare import main as prepare_main

GENRES = movielens.GENRES_100K
OCCUPATIONS = ["technician", "writer", "student", "other", "educator"]


def make_slice(seed=0, users=30, items=40, ratings=400):
    """A small MovieLens-like data set as plain tables (users, items, ratings)."""
    rng = np.random.default_rng(seed)
    user_rows = [(str(u), int(rng.integers(7, 74)), "MF"[u % 2], OCCUPATIONS[u % 5],
                  f"{int(rng.integers(10000, 99999))}" if u % 7 else "T8H1N") for u in range(1, users + 1)]
    item_rows = []
    for i in range(1, items + 1):
        year = int(rng.integers(1930, 1999))
        flags = [0] * len(GENRES)
        for g in rng.choice(np.arange(1, len(GENRES)), size=int(rng.integers(1, 4)), replace=False):
            flags[int(g)] = 1
        item_rows.append((str(i), f"Movie {i} ({year})", year if i != 7 else None, flags))
    pairs = rng.choice(users * items, size=ratings, replace=False)
    rating_rows = [(str(p // items + 1), str(p % items + 1), int(rng.integers(1, 6)),
                    int(874724710 + rng.integers(0, 20_000_000))) for p in pairs]
    return user_rows, item_rows, rating_rows


def write_grouplens(folder, data):
    users, items, ratings = data
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "u.data"), "w") as fd:
        fd.writelines(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings)
    with open(os.path.join(folder, "u.user"), "w") as fd:
        fd.writelines(f"{u}|{a}|{g}|{o}|{z}\n" for u, a, g, o, z in users)
    with open(os.path.join(folder, "u.item"), "wb") as fd:
        for i, title, year, flags in items:
            date = f"01-Jan-{year}" if year else ""
            fd.write(f"{i}|{title}|{date}||http://x/{i}|{'|'.join(map(str, flags))}\n".encode("latin-1"))
    return folder


def write_recbole(folder, data):
    users, items, ratings = data
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "ml-100k.inter"), "w") as fd:
        fd.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        fd.writelines(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings)
    with open(os.path.join(folder, "ml-100k.user"), "w") as fd:
        fd.write("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n")
        fd.writelines(f"{u}\t{a}\t{g}\t{o}\t{z}\n" for u, a, g, o, z in users)
    with open(os.path.join(folder, "ml-100k.item"), "w") as fd:
        fd.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for i, title, year, flags in items:
            names = " ".join(g for g, f in zip(GENRES, flags) if f)
            fd.write(f"{i}\t{title.rsplit(' (', 1)[0]}\t{year if year else 'unkonwn'}\t{names}\n")
    return folder


def write_1m_zip(path, data):
    users, items, ratings = data
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ratings))
        zf.writestr("ml-1m/users.dat", "".join(f"{u}::{g}::{18 if a < 25 else 25}::{len(o)}::{z}\n"
                                               for u, a, g, o, z in users))
        zf.writestr("ml-1m/movies.dat", "".join(
            f"{i}::{title}::{'|'.join(g for g, f in zip(GENRES, flags) if f)}\n" for i, title, _, flags in items))
    return path


def config_dir(tmp_path, data_format="parquet"):
    """A config folder whose movielens ids write under ``tmp_path/data`` (the repository's entries)."""
    with open(os.path.join(os.path.dirname(__file__), "..", "config", "dataset_config.yaml")) as fd:
        datasets = yaml.safe_load(fd)
    folder = tmp_path / "config"
    folder.mkdir(exist_ok=True)
    entries = {}
    for dataset_id in ("movielens_100k", "movielens_1m"):
        entry = dict(datasets[dataset_id], data_root=str(tmp_path / "data") + "/", data_format=data_format)
        for split in ("train", "valid", "test"):
            entry[f"{split}_data"] = str(tmp_path / "data" / "raw" / dataset_id / f"{split}.{data_format}")
        entries[dataset_id] = entry
    (folder / "dataset_config.yaml").write_text(yaml.safe_dump(entries, sort_keys=False))
    return str(folder)


def read_splits(tmp_path, dataset_id="movielens_100k"):
    return {s: pl.read_parquet(tmp_path / "data" / "raw" / dataset_id / f"{s}.parquet")
            for s in ("train", "valid", "test")}


def raw_files(tmp_path):
    root = tmp_path / "data"
    return sorted(str(p.relative_to(tmp_path)) for p in root.rglob("*")) if root.exists() else []


def test_grouplens_and_recbole_give_the_same_rows(tmp_path):
    data = make_slice()
    config = config_dir(tmp_path)
    assert prepare_main(["movielens_100k", "--src", write_grouplens(str(tmp_path / "gl"), data),
                         "--config", config]) == 0
    from_grouplens = read_splits(tmp_path)
    assert prepare_main(["movielens_100k", "--src", write_recbole(str(tmp_path / "rb"), data),
                         "--config", config]) == 0
    from_recbole = read_splits(tmp_path)
    for split in from_grouplens:
        assert from_grouplens[split].equals(from_recbole[split]), split
    assert [from_grouplens[s].height for s in ("train", "valid", "test")] == [320, 40, 40]


def test_label_and_fields(tmp_path):
    data = make_slice()
    users, items, ratings = data
    assert prepare_main(["movielens_100k", "--src", write_grouplens(str(tmp_path / "gl"), data),
                         "--config", config_dir(tmp_path)]) == 0
    rows = pl.concat(list(read_splits(tmp_path).values()))
    assert rows.columns == list(movielens.COLUMNS)
    assert rows.height == len(ratings)
    by_user = {u: (a, g, o, z) for u, a, g, o, z in users}
    by_item = {i: (year, flags) for i, _, year, flags in items}
    for row in rows.iter_rows(named=True):
        assert row["label"] == float(row["rating"] >= 4)
        age, gender, occupation, zipcode = by_user[row["user_id"]]
        assert (row["age"], row["gender"], row["occupation"], row["zip"]) == \
            (str(age // 10 * 10), gender, occupation, zipcode[:3])
        year, flags = by_item[row["item_id"]]
        assert row["release_decade"] == (f"{year // 10 * 10}" if year else "")
        assert row["genres"] == "^".join(g for g, f in zip(GENRES, flags) if f)
        when = datetime.fromtimestamp(row["timestamp"], tz=timezone.utc)
        assert (row["hour"], row["weekday"]) == (str(when.hour), str(when.weekday()))
    assert rows.filter(pl.col("item_id") == "7")["release_decade"].unique().to_list() in ([""], [])


def test_split_is_seeded_and_complete(tmp_path):
    data = make_slice(ratings=500)
    src = write_grouplens(str(tmp_path / "gl"), data)
    config = config_dir(tmp_path)
    splits = []
    for seed in (7, 7, 8):
        assert prepare_main(["movielens_100k", "--src", src, "--config", config, "--split-seed", str(seed)]) == 0
        splits.append(read_splits(tmp_path))
    assert all(splits[0][s].equals(splits[1][s]) for s in splits[0])
    assert not splits[0]["test"].equals(splits[2]["test"])
    keys = pl.concat(list(splits[0].values())).select("user_id", "item_id")
    assert keys.height == 500 and keys.unique().height == 500
    assert [splits[0][s].height for s in ("train", "valid", "test")] == [400, 50, 50]


def test_time_split_orders_by_timestamp(tmp_path):
    src = write_recbole(str(tmp_path / "rb"), make_slice())
    assert prepare_main(["movielens_100k", "--src", src, "--config", config_dir(tmp_path), "--split", "time"]) == 0
    parts = read_splits(tmp_path)
    assert parts["train"]["timestamp"].max() <= parts["valid"]["timestamp"].min()
    assert parts["valid"]["timestamp"].max() <= parts["test"]["timestamp"].min()
    summary = json.loads((tmp_path / "data" / "raw" / "movielens_100k" / "split.json").read_text())
    assert summary["split"] == "time" and summary["rows"] == {"train": 320, "valid": 40, "test": 40}


def test_movielens_1m_zip(tmp_path):
    data = make_slice()
    archive = write_1m_zip(str(tmp_path / "ml-1m.zip"), data)
    assert prepare_main(["movielens_1m", "--src", archive, "--config", config_dir(tmp_path)]) == 0
    rows = pl.concat(list(read_splits(tmp_path, "movielens_1m").values()))
    assert rows.height == len(data[2])
    assert set(rows["age"].unique()) <= {"18", "25"}
    assert not [p for p in os.listdir(tmp_path / "data" / "raw") if p.startswith(".extract")]


def _error(capsys, argv):
    assert prepare_main(argv) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    (lambda d: os.remove(os.path.join(d, "u.item")), r"incomplete: u\.item missing"),
    (lambda d: open(os.path.join(d, "u.data"), "a").write("5\t6\t4"), r"u\.data: the last line has no line end"),
    (lambda d: open(os.path.join(d, "u.data"), "a").write("5\t6\t4\n"), r"u\.data: line 401 has 3 fields"),
    (lambda d: open(os.path.join(d, "u.data"), "a").write("99\t6\t4\t874724710\n"),
     r"name a user_id missing from the users file"),
    (lambda d: open(os.path.join(d, "u.data"), "a").write("5\t6\tfour\t874724710\n"), r"rating 'four'.* not an integer"),
    (lambda d: open(os.path.join(d, "u.data"), "a").write("5\t6\t9\t874724710\n"), r"rating '9'.* not in 1\.\.5"),
    (lambda d: open(os.path.join(d, "u.user"), "w").close(), r"u\.user: the file is empty"),
    (lambda d: [os.remove(os.path.join(d, f)) for f in ("u.data", "u.user", "u.item")],
     r"no MovieLens-100K files there"),
])
def test_bad_source_fails_and_keeps_earlier_files(tmp_path, capsys, damage, message):
    config = config_dir(tmp_path)
    good = write_grouplens(str(tmp_path / "good"), make_slice())
    assert prepare_main(["movielens_100k", "--src", good, "--config", config]) == 0
    before = {s: f.to_dicts() for s, f in read_splits(tmp_path).items()}
    files = raw_files(tmp_path)
    bad = write_grouplens(str(tmp_path / "bad"), make_slice(seed=1))
    damage(bad)
    capsys.readouterr()
    assert re.search(message, _error(capsys, ["movielens_100k", "--src", bad, "--config", config]))
    assert raw_files(tmp_path) == files
    assert {s: f.to_dicts() for s, f in read_splits(tmp_path).items()} == before


def test_errors_write_nothing(tmp_path, capsys):
    config = config_dir(tmp_path)
    data = make_slice()
    one_m = write_1m_zip(str(tmp_path / "ml-1m.zip"), data)
    assert "prepare it with dataset id movielens_1m" in _error(capsys, ["movielens_100k", "--src", one_m,
                                                                        "--config", config])
    recbole = write_recbole(str(tmp_path / "rb"), data)
    assert "prepare it with dataset id movielens_100k" in _error(capsys, ["movielens_1m", "--src", recbole,
                                                                          "--config", config])
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert "not an archive" in _error(capsys, ["movielens_100k", "--src", str(text), "--config", config])
    assert "no such path" in _error(capsys, ["movielens_100k", "--src", str(tmp_path / "nope"), "--config", config])
    assert "not on the package registry" in _error(capsys, ["movielens_1m", "--config", config])
    os.remove(os.path.join(recbole, "ml-100k.user"))
    assert "incomplete: ml-100k.user missing" in _error(capsys, ["movielens_100k", "--src", recbole,
                                                                 "--config", config])
    with open(os.path.join(recbole, "ml-100k.user"), "w") as fd:
        fd.write("user_id\tage\n1\t20\n")
    assert "header 'user_id\\tage'" in _error(capsys, ["movielens_100k", "--src", recbole, "--config", config])
    assert raw_files(tmp_path) == []


NETWORK_FAILURE = re.compile(r"No matching distribution|Could not find a version|NewConnectionError|Max retries|"
                             r"Temporary failure in name resolution|Network is unreachable|timed out|ProxyError|"
                             r"did not finish", re.I)


def test_recbole_wheel_end_to_end(tmp_path, monkeypatch):
    """Fetch MovieLens-100K in the RecBole wheel through pip, prepare it, train one tiny run."""
    from fuxictr_ext.data import DataError
    from fuxictr_ext.runner import run_experiment

    cache = str(tmp_path / "cache")
    try:
        movielens.fetch_recbole_wheel(cache)
    except DataError as err:
        if NETWORK_FAILURE.search(str(err)):
            pytest.skip(f"the package registry cannot be reached, so the RecBole wheel cannot be fetched: {err}")
        raise
    config = config_dir(tmp_path)
    assert prepare_main(["movielens_100k", "--config", config, "--cache-dir", cache]) == 0
    parts = read_splits(tmp_path)
    assert [parts[s].height for s in ("train", "valid", "test")] == [80000, 10000, 10000]
    rows = pl.concat(list(parts.values()))
    assert rows["user_id"].n_unique() == 943 and rows["item_id"].n_unique() == 1682
    assert 0.55 < rows["label"].mean() < 0.56
    model_dir = tmp_path / "config" / "model_config"
    model_dir.mkdir()
    shutil.copy(os.path.join(os.path.dirname(__file__), "..", "config", "model_config", "DNN.yaml"), model_dir)
    monkeypatch.chdir(tmp_path)
    result = run_experiment(config, "DNN_ml100k", -1, {"epochs": 1, "hidden_units": [32], "embedding_dim": 4,
                                                       "model_root": str(tmp_path / "checkpoints") + "/"})
    assert result["test"]["AUC"] > 0.65
