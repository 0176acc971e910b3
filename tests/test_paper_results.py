"""The papers' numbers as data: every cell is well-formed, every experiment id and override
exists, and the transcription agrees with the papers' own repeated numbers."""

import glob
from pathlib import Path

import pytest
import yaml

from fuxictr_ext import get_model_class
from fuxictr_ext.config import unknown_model_keys
from fuxictr_ext.config import load_params

REPO = Path(__file__).resolve().parents[1]
PAPERS = {Path(p).stem: yaml.safe_load(open(p)) for p in sorted(glob.glob(str(REPO / "config/paper_results/*.yaml")))
          if Path(p).name != "tiny.yaml"}
TINY = yaml.safe_load(open(REPO / "config/paper_results/tiny.yaml"))


def _cells(paper, table=None):
    return [c for c in PAPERS[paper]["cells"] if table is None or c["table"] == table]


def _value(paper, table, row, column, dataset=None):
    found = [c for c in _cells(paper, table) if c["row"] == row and c["column"] == column
             and (dataset is None or c["dataset"] == dataset)]
    assert len(found) == 1, (paper, table, row, column, dataset, found)
    return found[0]


@pytest.mark.parametrize("paper", sorted(PAPERS))
def test_cells_are_complete_and_unique(paper):
    seen = set()
    for cell in _cells(paper):
        assert {"table", "row", "column", "dataset", "metric", "value"} <= set(cell), cell
        assert isinstance(cell["value"], (int, float)), cell
        key = (cell["table"], cell["row"], cell["column"], cell["dataset"], cell["metric"])
        assert key not in seen, f"cell given twice: {key}"
        seen.add(key)
        assert cell["table"] in PAPERS[paper]["tables"], f"{cell['table']} has no entry under tables:"


def test_the_briefs_tables_are_covered():
    tables = {(paper, c["table"]) for paper in PAPERS for c in _cells(paper)}
    wanted = {("roblock", f"table{i}") for i in (1, 2, 3, 5, 6, 7, 8, 9)} | \
             {("rankelastor", "table3"), ("rankelastor", "benchmarks")} | \
             {("mlcc", f"table{i}") for i in (3, 5, 6, 7, 8)} | {("rank_aware", "table3"), ("rank_aware", "figure2")}
    assert wanted <= tables


@pytest.mark.parametrize("paper", sorted(PAPERS))
def test_every_experiment_exists_and_its_overrides_are_read(paper):
    """Each cell's expid is a config id; each override and each tiny width is a key the
    model or the runner reads (a typo would otherwise change nothing, silently)."""
    configs = {}
    run_ids = {}
    for cell in _cells(paper):
        if not cell.get("expid"):
            assert cell.get("note"), f"a cell without an experiment must say why: {cell}"
            continue
        if cell["expid"] not in configs:
            configs[cell["expid"]] = load_params(str(REPO / "config"), cell["expid"])[1]
        model = configs[cell["expid"]]["model"]
        model_cls = get_model_class(model)
        assert unknown_model_keys(model_cls, cell.get("overrides") or {}) == [], cell
        assert configs[cell["expid"]]["dataset_id"] == cell["dataset"], cell
        if cell.get("overrides"):
            assert cell.get("run_id"), f"a cell with overrides needs its own run_id: {cell}"
        run_id = cell.get("run_id") or cell["expid"]
        run = (cell["expid"], repr(sorted((cell.get("overrides") or {}).items())))
        assert run_ids.setdefault(run_id, run) == run, f"run id {run_id} names two configs"
        assert model in TINY["models"], f"config/paper_results/tiny.yaml has no widths for {model}"
        assert unknown_model_keys(model_cls, TINY["models"][model]) == [], model
        assert unknown_model_keys(model_cls, TINY["experiments"].get(cell["expid"], {})) == [], cell["expid"]


def test_tiny_experiment_settings_name_config_ids():
    for expid, settings in TINY["experiments"].items():
        model_params = load_params(str(REPO / "config"), expid)[1]
        assert unknown_model_keys(get_model_class(model_params["model"]), settings) == [], expid


def test_roblock_table3_is_tables_7_and_8_at_2_and_5_layers():
    for dataset, table in (("Criteo", "table7"), ("Avazu", "table8")):
        for model in ("DHEN", "Wukong", "RoBlock"):
            for depth in (2, 5):
                for scale in ("2x", "5x", "10x"):
                    short = _value("roblock", "table3", f"{model}, {depth} layers", f"{dataset} {scale}")
                    full = _value("roblock", table, f"{model}, {depth} layers", scale)
                    assert short["value"] == full["value"] and short["expid"] == full["expid"]


def test_roblock_table9_hetero_is_the_5_layer_roblock():
    for dataset, table in (("criteo_x1", "table7"), ("avazu_x4", "table8")):
        for scale in ("2x", "3x", "5x", "10x"):
            hetero = _value("roblock", "table9", "RoBlock Hetero", scale, dataset)
            full = _value("roblock", table, "RoBlock, 5 layers", scale)
            assert (hetero["value"], hetero["std"], hetero["expid"]) == (full["value"], full["std"], full["expid"])


def test_roblock_tables_1_2_round_to_tables_5_6():
    """Tables 5-6 print Tables 1-2's means to 5 decimals; the base cell is printed once
    (in the SE or the ME row), so it is compared by column."""
    for short, full in (("table1", "table5"), ("table2", "table6")):
        means = {(c["series"], c["column"]): c["value"] for c in _cells("roblock", short)}
        base = {c["series"].split()[0]: c["value"] for c in _cells("roblock", short) if c["column"] == "base"}
        for cell in _cells("roblock", full):
            if cell["column"] == "base":
                mean = base[cell["series"].split()[0]]
            else:
                mean = means[(cell["series"], cell["column"])]
            assert abs(round(mean, 5) - cell["value"]) < 1.1e-5, (full, cell["row"], cell["column"], mean, cell["value"])


def test_rankelastor_benchmark_rows_round_the_tables():
    for column, table, row, table_column in (("Criteo (test) AUC", "table2", "RankElastor", "Criteo AUC"),
                                             ("Avazu (test) AUC", "table2", "RankElastor", "Avazu AUC"),
                                             ("KuaiVideo AUC", "table4", "RankElastor", "AUC (K)"),
                                             ("TaobaoAd gAUC", "table4", "RankElastor", "gAUC (T)")):
        summary = _value("rankelastor", "benchmarks", "RankElastor", column)["value"]
        assert round(_value("rankelastor", table, row, table_column)["value"], 4) == summary


def test_mlcc_table7_h16_is_table6_plc_and_table8_dnn_64_is_table6_dnn():
    assert _value("mlcc", "table7", "H = 16", "AUC")["value"] == _value("mlcc", "table6", "MLCC (PLC, H = 16)", "AUC")["value"]
    assert _value("mlcc", "table8", "E x S = 16", "DNN (S = 1) AUC")["value"] == _value("mlcc", "table6", "DNN", "AUC")["value"]


def test_default_seed_counts_are_the_papers():
    assert PAPERS["roblock"]["seeds"] == 20 and PAPERS["rankelastor"]["seeds"] == 10
    assert PAPERS["mlcc"]["seeds"] is None and PAPERS["rank_aware"]["seeds"] is None
    assert "no number" in PAPERS["mlcc"]["seeds_note"]
