"""benchmarks/real_data.py: the plan's fingerprints are the runner's, runs with a record of the
same config are skipped (resuming), a changed config or --rerun runs again, failures are
recorded and reported, and the report is made from the records alone."""

import pytest

from benchmarks import real_data
from fuxictr_ext import results
from fuxictr_ext.runner import setup_run


@pytest.fixture
def fake_runs(monkeypatch):
    """run_experiment replaced by a recorder: returns a record like the runner's, AUC from a table."""
    calls = []
    auc = {"DNN_ml100k": 0.79, "DCNv2_ml100k": 0.78}

    def fake_run_experiment(config_dir, expid, gpu, overrides):
        calls.append((expid, overrides["seed"]))
        if expid == "WuKong_ME_ml100k":
            raise RuntimeError("diverged")
        run = real_data.plan(config_dir, [name for name, e in real_data.MODELS.items() if e == expid],
                             [overrides["seed"]])[0]
        value = auc[expid] + (overrides["seed"] - 2019) * 0.001
        return {"record": {"record": 1, "status": "ok", "expid": expid, "dataset_id": "movielens_100k",
                           "seed": overrides["seed"], "config_fingerprint": run.fingerprint, "epochs": 4,
                           "test": {"AUC": value, "logloss": 0.55}, "valid": {"AUC": value, "logloss": 0.55},
                           "params": {"total": 1000}, "train_seconds": 8.0}}

    monkeypatch.setattr(real_data, "run_experiment", fake_run_experiment)
    return calls


def test_planned_fingerprint_is_the_runners():
    run = real_data.plan("./config", ["RoBlock"], [2021])[0]
    params = setup_run("./config", run.expid, -1, {"seed": 2021})[0]
    assert run.fingerprint == params["config_fingerprint"]
    assert real_data.plan("./config", ["RoBlock"], [2020])[0].fingerprint != run.fingerprint


def test_runs_once_then_resumes_and_reports(tmp_path, fake_runs):
    record = str(tmp_path / "real_data.jsonl")
    runs = real_data.plan("./config", ["DNN", "DCNv2"], [2019, 2020])
    first = real_data.run_pending("./config", runs, record, [])
    assert (first["ran"], first["skipped"]) == (4, 0)
    assert fake_runs == [("DNN_ml100k", 2019), ("DCNv2_ml100k", 2019), ("DNN_ml100k", 2020), ("DCNv2_ml100k", 2020)]
    again = real_data.run_pending("./config", runs, record, [])
    assert (again["ran"], again["skipped"]) == (0, 4) and len(fake_runs) == 4
    forced = real_data.run_pending("./config", runs, record, ["DCNv2"])
    assert forced["ran"] == 2 and fake_runs[-2:] == [("DCNv2_ml100k", 2019), ("DCNv2_ml100k", 2020)]

    rows = real_data.model_rows(runs, results.read_records(record))
    dnn = next(row for row in rows if row["name"] == "DNN")
    assert dnn["auc"].values == pytest.approx([0.79, 0.791]) and dnn["epochs"] == [4, 4]
    assert dnn["seconds_per_epoch"] == 2.0
    text = real_data.report_markdown(rows, None, None, record)
    assert text.index("| DNN |") < text.index("| DCNv2 |")
    assert "0.7905 +- 0.0007 (0.7900 - 0.7910)" in text


def test_a_changed_config_runs_again(tmp_path, fake_runs):
    record = str(tmp_path / "real_data.jsonl")
    runs = real_data.plan("./config", ["DNN"], [2019])
    real_data.run_pending("./config", runs, record, [])
    changed = [real_data.PlannedRun(run.name, run.expid, run.seed, "another") for run in runs]
    assert real_data.model_rows(changed, results.read_records(record))[0]["missing"] == [2019]
    assert real_data.run_pending("./config", changed, record, [])["skipped"] == 0


def test_failures_are_recorded_and_reported(tmp_path, fake_runs):
    record = str(tmp_path / "real_data.jsonl")
    runs = real_data.plan("./config", ["WuKong ME", "DNN"], [2019])
    counts = real_data.run_pending("./config", runs, record, [])
    assert (counts["ran"], counts["failed"]) == (1, 1)
    failed = [r for r in results.read_records(record) if r["status"] == "failed"]
    assert failed[0]["expid"] == "WuKong_ME_ml100k" and "diverged" in failed[0]["error"]
    text = real_data.report_markdown(real_data.model_rows(runs, results.read_records(record)), None,
                                     dict(counts, wall_s=1.0), record)
    assert "WuKong ME, seed 2019: RuntimeError: diverged" in text
    assert "| WuKong ME | `WuKong_ME_ml100k` | 0/1 |" in text
