"""benchmarks/roblock_scaling.py: the cells it plans, the report it writes from records, and
``--jobs`` (points trained at once, ``benchmarks.fixtures.run_within_budget``)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import fixtures
from benchmarks import roblock_scaling as scaling
from fuxictr_ext.results import read_records

REPO = Path(__file__).resolve().parents[1]


def test_most_informative_cells_first_and_sizes_per_model():
    points = scaling.sweep_points(list(scaling.MODELS), [1, 2, 3, 5], [1, 2, 4], [2019, 2020], 4)
    assert len(points) == 4 * 3 * 3 * 2
    assert [(p.dim, p.channels) for p in points[:18:6]] == [(1, 1), (2, 1), (3, 1)]
    first = points[:6]
    assert [(p.family, p.overrides["seed"]) for p in first] == [
        (m, s) for s in (2019, 2020) for m in scaling.MODELS]
    by_family = {p.family: p.overrides for p in points if (p.dim, p.channels) == (3, 4)}
    assert by_family["RoBlock"]["scale_factor"] == 4 and by_family["RoBlock"]["num_blocks"] == 3
    assert not {"hsic_normalization", "added_block_init"} & set(by_family["RoBlock"])   # the base id's keys
    assert all(("spectrum_callbacks" in p.overrides) == (p.dim == scaling.IA_DEPTH) for p in points)
    assert by_family["WuKong ME"]["num_embeddings"] == 4 and by_family["WuKong ME"]["num_layers"] == 3
    assert by_family["DHEN ME"]["num_embeddings"] == 4 and by_family["DHEN ME"]["num_layers"] == 3
    assert all(p.overrides["embedding_dim"] == scaling.K for p in points)
    assert len({p.expid for p in points}) == len(points)
    assert not {p.expid for p in points} & {p.expid for p in scaling.sweep_points(
        list(scaling.MODELS), [1, 2, 3, 5], [1, 2, 4], [2019, 2020], 1)}       # another epoch limit: new points


def test_report_has_mean_spread_and_names_the_cells_not_run(tmp_path):
    points = scaling.sweep_points(["RoBlock", "DHEN ME"], [1, 2], [1], [2019, 2020], 1)
    records = [{"expid": p.expid, "status": "ok", "test": {"AUC": auc, "logloss": 0.5},
                "params": {"dense": 1000}, "train_seconds": 10.0}
               for p, auc in zip(points[:3], (0.80, 0.70, 0.84))]
    records.append({"expid": points[3].expid, "status": "failed"})
    done = scaling.finished(records)
    text = scaling.markdown(points, done, str(tmp_path), "Dataset note.")
    assert text.startswith("Dataset note.")
    assert "| 1 | 1 | 0.8200 | 0.0400 (2) | 0.7000 | 0.0000 (1) | 2/1 |" in text
    assert "| 2 | 1 | - | - | - | - | 0/0 |" in text
    assert points[3].expid in text.split("Not run")[1] and points[0].expid not in text.split("Not run")[1]
    records = scaling.run_records(points, done, str(tmp_path))
    assert [r["status"] for r in records] == ["ok"] * 3 + ["not run"] * 5
    assert records[0]["test_AUC"] == 0.80 and records[0]["seed"] == 2019 and "test_AUC" not in records[3]
    scaling.plot(points, done, str(tmp_path), str(tmp_path / "plot.png"))
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_movielens_setting_starts_from_the_ml100k_ids_with_their_own_settings():
    setting = scaling.SETTINGS["movielens_100k"]
    points = scaling.sweep_points(list(scaling.MODELS), [1, 2], [2], [2019], 30, setting=setting)
    assert {p.family: p.base_expid for p in points} == {
        "RoBlock": "RoBlock_ml100k_2x", "WuKong ME": "WuKong_ME_ml100k", "DHEN ME": "DHEN_ME_ml100k"}
    assert all(p.overrides["embedding_dim"] == 16 and "batch_size" not in p.overrides for p in points)
    assert all(p.expid.startswith("scaling_ml100k_") for p in points)
    discriminating = scaling.sweep_points(list(scaling.MODELS), [1, 2], [2], [2019], 30)
    assert not {p.expid for p in points} & {p.expid for p in discriminating}


def test_movielens_without_prepared_data_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(scaling, "read_split", lambda entry: None)
    code = scaling.main(["--dataset", "movielens_100k", "--depths", "1", "--widths", "2", "--seeds", "2019",
                         "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "data_prep.prepare movielens_100k" in capsys.readouterr().err
    assert not (tmp_path / "out" / "roblock_scaling.md").exists()


def test_jobs_run_points_in_processes_of_their_own_with_the_results_of_one_after_another(tmp_path):
    """``--jobs 2``: the points train two at a time in spawned processes; every record lands in
    the one results file, with the test AUC the same points get one after another (``--jobs 1``)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    aucs = {}
    for jobs in (1, 2):
        work = tmp_path / f"jobs{jobs}"
        done = subprocess.run([sys.executable, "-m", "benchmarks.roblock_scaling", "--tiny", "--models", "WuKong ME",
                               "DHEN ME", "--jobs", str(jobs), "--work-dir", str(work), "--out", str(work / "out")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        records = read_records(work / "benchmark_config.jsonl")
        aucs[jobs] = {r["expid"]: r["test"]["AUC"] for r in records if r["status"] == "ok"}
    assert len(aucs[2]) == 2 and aucs[2] == aucs[1]


def test_jobs_below_one_is_an_error():
    with pytest.raises(ValueError, match="--jobs"):
        fixtures.run_within_budget("config", [], None, "test", lambda *_: None, jobs=0)
