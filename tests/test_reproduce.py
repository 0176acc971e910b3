"""reproduce: a table end to end at tiny scale, resume after a kill, failed cells, aggregation."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from fuxictr_ext.results import reproduce as repro
from fuxictr_ext import results
from fuxictr_ext.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(in_workspace):
    """The tiny test workspace with the papers' numbers and the tiny scale beside its configs."""
    target = in_workspace / "config" / "paper_results"
    if not target.exists():
        shutil.copytree(REPO / "config" / "paper_results", target)
    return in_workspace


def _unit_paper(workspace, name, cells):
    """A paper file of our own: table t1 on criteo_x1, DNN_criteo cells (DNN at tiny scale trains in seconds)."""
    paper = {"paper": "Unit", "seeds": 2, "tables": {"t1": {"caption": "unit table"}}, "cells": cells}
    (workspace / "config" / "paper_results" / f"{name}.yaml").write_text(yaml.safe_dump(paper, sort_keys=False))


def _dnn_cell(run_id, overrides, value=0.7, row=None):
    return {"table": "t1", "row": row or run_id, "column": "AUC", "dataset": "criteo_x1", "metric": "AUC",
            "value": value, "expid": "DNN_criteo", "run_id": run_id, "overrides": overrides}


def _report_rows(path):
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in Path(path).read_text().splitlines() if line.startswith("| ") and not line.startswith("| row")}


def test_a_tiny_table_end_to_end(workspace, capsys):
    """MLCC Table 6 at tiny scale, one seed: three runs through the runner, a record each,
    and a report whose numbers are the records' and whose differences are ours - paper."""
    code = repro.main(["mlcc:table6", "--scale", "tiny", "--seeds", "1", "--out", "out"])
    assert code == 0
    records = results.read_records(workspace / "mlcc_table6_criteo_x1_tiny.jsonl")
    by_id = {r["expid"]: r for r in records}
    assert set(by_id) == {"DNN_criteo_mlcc_E16_tiny", "MLCC_criteo_inner_product_H64_tiny", "MLCC_criteo_plc_H16_tiny"}
    assert all(r["status"] == "ok" and r["dataset_id"] == "demo_tiny" and r["seed"] == 2019 for r in records)
    assert by_id["MLCC_criteo_inner_product_H64_tiny"]["config"]["num_heads"] == 64      # the table's structure kept
    assert by_id["MLCC_criteo_inner_product_H64_tiny"]["config"]["dnn_hidden_units"] == [64, 32]  # tiny widths
    assert by_id["DNN_criteo_mlcc_E16_tiny"]["config"]["embedding_dim"] == 16            # the cell's override wins
    rows = Path("out/mlcc_table6_criteo_x1_tiny.md").read_text().splitlines()
    plc_auc = [r for r in rows if r.startswith("| MLCC (PLC, H = 16) | AUC |")][0].split("|")
    ours = by_id["MLCC_criteo_plc_H16_tiny"]["test"]["AUC"]
    assert plc_auc[4].strip() == f"{ours:.6f}" and plc_auc[5].strip() == "1/1" and plc_auc[6].strip() == "0.829"
    assert plc_auc[7].strip() == f"{ours - 0.829:+.6f}"
    params = [r for r in rows if r.startswith("| DNN | #Params (M) |")][0].split("|")
    assert params[4].strip() == f"{by_id['DNN_criteo_mlcc_E16_tiny']['params']['total'] / 1e6:.2f}"
    assert "Tiny scale" in "\n".join(rows)
    assert "3 run(s), 0 already recorded, 0 failed" in capsys.readouterr().out


def test_resume_after_a_killed_run_skips_what_finished(workspace, monkeypatch):
    _unit_paper(workspace, "unit_resume", [_dnn_cell("DNN_a", {"hidden_units": [16]}),
                                           _dnn_cell("DNN_b", {"hidden_units": [8]})])
    real = repro.run_experiment
    calls = []

    def killed_on_third(config_dir, expid, gpu):
        calls.append((Path(config_dir).parent.name, expid))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")          # not an Exception: nothing catches it, as with a kill
        return real(config_dir, expid, gpu)

    monkeypatch.setattr(repro, "run_experiment", killed_on_third)
    with pytest.raises(KeyboardInterrupt):
        repro.reproduce("unit_resume:t1", scale="tiny", config_dir="config", out_dir="out")
    record = workspace / "unit_resume_t1_criteo_x1_tiny.jsonl"
    assert [(r["expid"], r["seed"]) for r in results.read_records(record)] == [("DNN_a_tiny", 2019), ("DNN_b_tiny", 2019)]

    calls.clear()
    monkeypatch.setattr(repro, "run_experiment", lambda c, e, g: calls.append((Path(c).parent.name, e)) or real(c, e, g))
    outcome = repro.reproduce("unit_resume:t1", scale="tiny", config_dir="config", out_dir="out")
    assert calls == [("seed_2020", "DNN_a_tiny"), ("seed_2020", "DNN_b_tiny")]
    assert (outcome["ran"], outcome["skipped"], outcome["failed"]) == (2, 2, 0)
    rows = _report_rows(outcome["report"])
    for run in ("DNN_a", "DNN_b"):
        aucs = [r["test"]["AUC"] for r in results.read_records(record) if r["expid"] == f"{run}_tiny"]
        assert rows[run][3] == results.summarize(aucs).text() and rows[run][4] == "2/2"


def test_a_failed_cell_is_reported_and_the_others_run(workspace, capsys):
    _unit_paper(workspace, "unit_fail", [_dnn_cell("DNN_ok", {"hidden_units": [16]}),
                                         _dnn_cell("DNN_broken", {"num_embeddings": 0})])
    assert repro.main(["unit_fail:t1", "--scale", "tiny", "--seeds", "1", "--out", "out"]) == 1
    assert "1 run(s), 0 already recorded, 1 failed" in capsys.readouterr().out
    rows = _report_rows("out/unit_fail_t1_criteo_x1_tiny.md")
    assert rows["DNN_ok"][4] == "1/1"
    assert rows["DNN_broken"][3] == "-" and rows["DNN_broken"][4] == "0/1"
    assert "FAILED seed 2019: ConfigError: num_embeddings=0 must be a whole number >= 1" in rows["DNN_broken"][7]
    failed = [r for r in results.read_records("unit_fail_t1_criteo_x1_tiny.jsonl") if r["status"] == "failed"]
    assert [(r["expid"], r["seed"]) for r in failed] == [("DNN_broken_tiny", 2019)]


def _paper(cells, seeds=3):
    return {"paper": "P", "seeds": seeds, "path": "p.yaml", "tables": {"t": {}}, "cells": cells}


def test_report_aggregates_as_by_hand_and_says_what_is_missing():
    cells = [{"table": "t", "row": "A", "column": "c", "dataset": "d", "metric": "AUC", "value": 0.812, "expid": "A"},
             {"table": "t", "row": "B", "column": "c", "dataset": "d", "metric": "AUC", "value": 0.8, "expid": "B"},
             {"table": "t", "row": "C", "column": "c", "dataset": "d", "metric": "AUC", "value": 0.8, "expid": None,
              "note": "no config"}]
    records = [{"expid": "A", "seed": s, "status": "ok", "test": {"AUC": v}} for s, v in ((1, 0.80), (2, 0.81), (3, 0.83))]
    records += [{"expid": "B", "seed": 1, "status": "ok", "test": {"AUC": 0.79}},
                {"expid": "B", "seed": 2, "status": "failed", "error": "RuntimeError: out of memory"}]
    text, rows = repro.table_report(_paper(cells), "t", "d", cells, [1, 2, 3], records, "full", "cmd")
    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
             for line in text.splitlines() if line.startswith("| ") and not line.startswith("| row")}
    # A: mean 0.813333, sample std sqrt(4.6667e-4 / 2) = 0.015275, difference 0.813333 - 0.812 = +0.001333
    assert table["A"][3:7] == ["0.813333 +- 0.015275", "3/3", "0.812", "+0.001333"]
    # B: one finished seed of three, said so; its mean is that one value
    assert table["B"][3:5] == ["0.790000", "1/3"]
    assert "FAILED seed 2: RuntimeError: out of memory" in table["B"][7] and "missing seed 3" in table["B"][7]
    assert table["C"][3] == "-" and "not run: no config" in table["C"][7]


def test_a_later_success_replaces_an_earlier_failure():
    cells = [{"table": "t", "row": "A", "column": "c", "dataset": "d", "metric": "AUC", "value": 0.8, "expid": "A"}]
    records = [{"expid": "A", "seed": 1, "status": "failed", "error": "boom"},
               {"expid": "A", "seed": 1, "status": "ok", "test": {"AUC": 0.7}}]
    text, _ = repro.table_report(_paper(cells, 1), "t", "d", cells, [1], records, "full", "cmd")
    assert "FAILED" not in text and "| 0.700000 | 1/1 |" in text


def test_seed_count_defaults_to_the_paper_and_is_required_without_one(workspace):
    with pytest.raises(ConfigError, match="gives no number of seeds"):
        repro.reproduce("mlcc:table6", scale="tiny", config_dir="config", report_only=True)
    outcome = repro.reproduce("roblock:table1", scale="tiny", config_dir="config", out_dir="out", report_only=True)
    text = Path(outcome["report"]).read_text()
    assert "(20; the paper: 20" in text and "| 0/20 |" in text and "missing seed 2038" in text


def test_bad_table_ids_name_what_exists(workspace, capsys):
    assert repro.main(["roblock:table4", "--report-only"]) == 2
    assert "no table 'table4'" in capsys.readouterr().err
    assert repro.main(["nopaper:table1"]) == 2
    err = capsys.readouterr().err
    assert "no paper 'nopaper'" in err and "roblock" in err
    assert repro.main(["roblock:table3", "--report-only"]) == 2
    assert "choose one with --dataset" in capsys.readouterr().err


def test_list_shows_every_table(workspace, capsys):
    assert repro.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "| roblock:table3 | avazu_x4, criteo_x1 | 36 | 36 |" in out and "| mlcc:table8 |" in out


def test_plot_against_cost_pairs_each_auc_with_its_rows_flops(tmp_path):
    cells = [{"table": "t", "row": f"H = {h}", "column": col, "dataset": "d", "metric": metric, "value": value,
              "expid": f"M{h}", "series": "MLCC", "heads": h}
             for h, auc, gflops in ((1, 0.82, 40.0), (4, 0.83, 44.0))
             for col, metric, value in (("AUC", "AUC", auc), ("GFLOPs", "GFLOPs", gflops))]
    records = [{"expid": f"M{h}", "seed": 1, "status": "ok", "test": {"AUC": 0.6 + h / 100}, "flops_per_sample": f}
               for h, f in ((1, 2.0e5), (4, 8.0e5))]
    _, rows = repro.table_report(_paper(cells, 1), "t", "d", cells, [1], records, "full", "cmd")
    assert [r["flops"] for r in rows if r["cell"]["metric"] == "AUC"] == [2.0e5, 8.0e5]
    spec = {"x": "heads", "x_ours": "flops_per_sample", "x_paper": "GFLOPs", "line": ["series"]}
    assert repro.plot_table(rows, spec, "t", str(tmp_path / "t.png"))
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not repro.plot_table(rows, dict(spec, metric="gAUC"), "t", str(tmp_path / "none.png"))
    assert not (tmp_path / "none.png").exists()
