"""Spectrum metrics, spectrum callbacks and the overlay plot command."""

import csv
import json
import math
import os
import random
import stat
import sys

import numpy as np
import pytest
import torch
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from torch.utils.data import DataLoader

from fuxictr_ext.spectrum import callbacks as spectrum_callbacks
from fuxictr_ext.base import ZooModel
from fuxictr_ext.spectrum.callbacks import build_spectrum_callbacks
from fuxictr_ext.spectrum import (METRICS, entropy_effective_rank, information_abundance, singular_values,
                                  spectrum_metrics, stable_rank, summarize)
from fuxictr_ext.spectrum.plot import main as plot_main
from fuxictr_ext.spectrum.plot import require_matplotlib, select_records
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs
from fuxictr_ext.training import Trainer, TrainingConfig
from model_zoo.DNN import DNN

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- reference
def reference_metrics(X: np.ndarray) -> dict:
    """IA, stable rank, erank of every sample, one numpy SVD per sample."""
    out = {name: [] for name in METRICS}
    for matrix in X.reshape(-1, *X.shape[-2:]):
        sigma = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
        p = sigma / sigma.sum()
        out["IA"].append(sigma.sum() / sigma.max())
        out["stable_rank"].append((sigma ** 2).sum() / sigma.max() ** 2)
        out["erank"].append(math.exp(-sum(q * math.log(q) for q in p if q > 0)))
    return {name: np.array(values) for name, values in out.items()}


@pytest.mark.parametrize("method", ["svd", "gram", "auto"])
@pytest.mark.parametrize("shape", [(6, 7, 3), (5, 3, 7), (4, 6, 6), (1, 1, 4), (3, 5, 1), (2, 3, 4, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_metrics_match_numpy_loop(shape, dtype, method):
    X = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    expected = reference_metrics(X.double().numpy())
    tol = 1e-4 if dtype == torch.float32 and method != "gram" else 1e-7
    for name, fn in METRICS.items():
        values = fn(X, method=method)
        assert values.shape == shape[:-2]
        np.testing.assert_allclose(values.double().numpy().reshape(-1), expected[name], rtol=tol)
    together = spectrum_metrics(X, list(METRICS), method=method)
    for name in METRICS:
        torch.testing.assert_close(together[name], METRICS[name](X, method=method))


def test_gram_method_is_accurate_on_rank_deficient_and_scaled_matrices():
    gen = torch.Generator().manual_seed(10)
    low_rank = torch.randn(8, 39, 2, generator=gen, dtype=torch.float64) @ torch.randn(
        8, 2, 16, generator=gen, dtype=torch.float64)                      # (B, n, d) rank 2
    collapsed = torch.randn(1, 2000, 10, generator=gen, dtype=torch.float64) * torch.logspace(0, -6, 10)
    for X in (low_rank, 1e-20 * low_rank, 1e15 * low_rank, collapsed):
        for name, fn in METRICS.items():
            torch.testing.assert_close(fn(X, method="gram"), fn(X, method="svd"), rtol=1e-6, atol=0)


@pytest.mark.parametrize("n", [1, 4, 9])
def test_identity_has_full_rank(n):
    eye = torch.eye(n)
    for fn in METRICS.values():
        value = fn(eye)
        assert value.shape == ()
        assert value.item() == pytest.approx(n, rel=1e-6)


@pytest.mark.parametrize("method", ["svd", "gram"])
def test_rank_one_matrix_has_rank_one(method):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(5, 8, 1, generator=gen) @ torch.randn(5, 1, 6, generator=gen)    # (B, n, d) rank 1
    for fn in METRICS.values():
        torch.testing.assert_close(fn(X, method=method).float(), torch.ones(5), rtol=1e-4, atol=1e-4)


def test_known_values_of_diag_3_4():
    X = torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert stable_rank(X).item() == pytest.approx(25 / 16)
    assert information_abundance(X).item() == pytest.approx(7 / 4)
    p = np.array([3 / 7, 4 / 7])
    assert entropy_effective_rank(X).item() == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_metrics_are_scale_invariant_and_bounded():
    X = torch.randn(16, 10, 4, generator=torch.Generator().manual_seed(2))
    for fn in METRICS.values():
        values = fn(X)
        torch.testing.assert_close(fn(1e3 * X), values, rtol=1e-4, atol=1e-4)
        assert bool(((values >= 1 - 1e-5) & (values <= 4 + 1e-5)).all())


@pytest.mark.parametrize("method", ["svd", "gram"])
def test_stack_batch_measures_one_stacked_matrix(method):
    X = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    stacked = X.reshape(20, 3)
    for fn in METRICS.values():
        value = fn(X, stack_batch=True, method=method)
        assert value.shape == (1,)
        torch.testing.assert_close(value[0], fn(stacked, method="svd"))


@pytest.mark.parametrize("method", ["svd", "gram"])
def test_zero_matrices_are_defined_as_zero_and_leave_others_alone(method):
    X = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(4))
    X[1] = 0
    expected = reference_metrics(X[[0, 2]].numpy())
    for name, fn in METRICS.items():
        values = fn(X, method=method)
        assert values[1].item() == 0
        np.testing.assert_allclose(values[[0, 2]].numpy(), expected[name], rtol=1e-4)
        assert fn(torch.zeros(4, 5), method=method).item() == 0
        assert fn(torch.zeros(2, 4, 5), stack_batch=True, method=method).item() == 0


@pytest.mark.parametrize("method", ["svd", "gram"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_sample_gives_nan_only_for_itself(bad, method):
    X = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(5))
    clean = {name: fn(X, method=method) for name, fn in METRICS.items()}
    X[2, 0, 1] = bad
    for name, fn in METRICS.items():
        values = fn(X, method=method)
        assert torch.isnan(values[2])
        torch.testing.assert_close(values[[0, 1, 3]], clean[name][[0, 1, 3]])
    assert torch.isnan(singular_values(X, method=method)[2]).all()


def test_half_precision_and_integer_input_are_upcast():
    X = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(stable_rank(X.half()), stable_rank(X.half().float()))
    assert stable_rank(X.half()).dtype == torch.float32
    assert information_abundance(torch.eye(3, dtype=torch.int64)).item() == pytest.approx(3)


@pytest.mark.parametrize("shape", [(5,), (), (3, 0, 4), (3, 4, 0)])
def test_non_matrix_input_raises(shape):
    with pytest.raises(ValueError, match="spectrum metrics need"):
        stable_rank(torch.zeros(shape))


def test_unknown_metric_or_method_raises():
    with pytest.raises(ValueError, match="unknown spectrum metric"):
        spectrum_metrics(torch.randn(2, 3, 3), ["IA", "rank"])
    with pytest.raises(ValueError, match="method must be one of"):
        stable_rank(torch.randn(2, 3, 3), method="eig")


def test_summarize_counts_and_drops_non_finite_values():
    summary = summarize(torch.tensor([1.0, 2.0, 3.0, float("nan"), float("inf")]), bins=2)
    assert summary.mean == pytest.approx(2.0)
    assert summary.std == pytest.approx(np.std([1.0, 2.0, 3.0]))
    assert (summary.n_samples, summary.n_nonfinite) == (3, 2)
    assert summary.hist_counts == [1, 2]
    assert summary.hist_edges == pytest.approx([1.0, 2.0, 3.0])


def test_summarize_all_nan_reports_no_mean():
    summary = summarize(np.array([np.nan, np.nan]), bins=4)
    assert summary.mean is None and summary.std is None
    assert (summary.n_samples, summary.n_nonfinite) == (0, 2)
    assert sum(summary.hist_counts) == 0


@pytest.mark.parametrize("bins", [0, -1, 2.5, True])
def test_summarize_rejects_bad_bins(bins):
    with pytest.raises(ValueError, match="bins"):
        summarize([1.0], bins=bins)


# ---------------------------------------------------------------------------- callbacks
class TappedNet(ZooModel):
    """Embedding + one hidden layer, tapping a 3-D, a 2-D and a (B, 1, H) stage."""

    def __init__(self, feature_map, model_id="TappedNet", gpu=-1, embedding_dim=4, hidden_units=(8,),
                 net_dropout=0.0, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.hidden = MLP_Block(feature_map.num_fields * embedding_dim, hidden_units=list(hidden_units),
                                dropout_rates=net_dropout)
        self.output = MLP_Block(hidden_units[-1], output_dim=1, output_activation=self.output_activation)
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.tap("embedding", self.embedding_layer(X))          # (B, F, D)
        flat = self.tap("flat", feature_emb.flatten(start_dim=1))              # (B, F*D)
        hidden = self.tap("hidden", self.hidden(flat).unsqueeze(1))            # (B, 1, H)
        return {"y_pred": self.output(hidden.squeeze(1))}                      # (B, 1)


@pytest.fixture(scope="module")
def feature_map():
    return make_feature_map(num_categorical=5, num_numeric=2, vocab_size=20)


def rows_of(feature_map, num_rows, seed):
    batch = random_batch(feature_map, num_rows, seed=seed)
    return [{key: value[i] for key, value in batch.items()} for i in range(num_rows)]


def shuffled_loader(feature_map, num_rows, seed, batch_size=16):
    """A torch DataLoader that reshuffles (and so draws from the global torch RNG) each pass."""
    return DataLoader(rows_of(feature_map, num_rows, seed), batch_size=batch_size, shuffle=True)


def build_model(feature_map, tmp_path, model_class=DNN, **kwargs):
    torch.manual_seed(2019)
    np.random.seed(2019)
    random.seed(2019)
    return model_class(feature_map, model_id="dnn", embedding_dim=4, hidden_units=[8],
                       net_dropout=0.2, **unit_model_kwargs(tmp_path), **kwargs)


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_callback_writes_csv_json_png(feature_map, tmp_path):
    model = build_model(feature_map, tmp_path / "ckpt")
    train = [random_batch(feature_map, 16, seed=i) for i in range(3)]
    valid = [random_batch(feature_map, 16, seed=100 + i) for i in range(3)]
    specs = [{"metric": ["IA", "stable_rank"], "layers": "auto", "every": "epoch", "split": "valid",
              "max_batches": 2}]
    callbacks = build_spectrum_callbacks(specs, {"train": train, "valid": valid}, tmp_path, "run_a")
    Trainer(model, TrainingConfig(epochs=2, verbose=0), callbacks).fit(train, valid)

    rows = read_csv(tmp_path / "run_a.spectrum.csv")
    assert list(rows[0]) == list(spectrum_callbacks.CSV_COLUMNS)
    assert [(r["epoch"], r["stage"], r["metric"]) for r in rows] == [
        (epoch, "embedding", metric) for epoch in ("1", "2", "end") for metric in ("IA", "stable_rank")]
    assert {(r["run"], r["split"], r["stage_index"], r["n_samples"], r["n_nonfinite"], r["stack_batch"])
            for r in rows} == {("run_a", "valid", "0", "32", "0", "False")}
    for r in rows:
        assert 1.0 <= float(r["mean"]) <= 4.0        # D = 4

    data = json.loads((tmp_path / "run_a.spectrum.json").read_text())
    assert data["run"] == "run_a" and len(data["records"]) == 6
    first = data["records"][0]
    assert sum(first["hist_counts"]) == 32 and len(first["hist_edges"]) == 21
    assert len(first["values"]) == 32
    assert np.mean(first["values"]) == pytest.approx(first["mean"], rel=1e-5)
    assert (tmp_path / "run_a.spectrum.png").read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob(".tmp-*"))
    umask = os.umask(0)
    os.umask(umask)
    for suffix in ("csv", "json", "png"):
        assert stat.S_IMODE((tmp_path / f"run_a.spectrum.{suffix}").stat().st_mode) == 0o666 & ~umask


def test_callback_matches_direct_metrics(feature_map, tmp_path):
    model = build_model(feature_map, tmp_path, model_class=TappedNet)
    valid = [random_batch(feature_map, 8, seed=7), random_batch(feature_map, 8, seed=8)]
    (callback,) = build_spectrum_callbacks([{"metric": "erank", "plot": False}], {"valid": valid},
                                           tmp_path, "direct")
    callback.record(model, 1)
    model.eval()
    with torch.no_grad():
        expected = torch.cat([entropy_effective_rank(model.embedding_layer(model.get_inputs(b)))
                              for b in valid])
    record = callback.log.records[0]
    assert record["mean"] == pytest.approx(expected.double().mean().item(), rel=1e-6)
    assert record["n_samples"] == 16
    assert not (tmp_path / "direct.spectrum.png").exists()


def fit_and_state(feature_map, tmp_path, specs, epochs=2):
    model = build_model(feature_map, tmp_path / "ckpt")
    train = shuffled_loader(feature_map, 64, seed=1)
    valid = shuffled_loader(feature_map, 32, seed=2)
    loaders = {"train": train, "valid": valid, "test": valid}
    callbacks = build_spectrum_callbacks(specs, loaders, tmp_path, "same")
    Trainer(model, TrainingConfig(epochs=epochs, verbose=0), callbacks).fit(train, valid)
    return {k: v.clone() for k, v in model.state_dict().items()}, callbacks


SPECS_ON_TRAIN_AND_VALID = [
    {"metric": ["IA", "stable_rank", "erank"], "split": "valid", "max_batches": 2, "plot": False},
    {"metric": "IA", "split": "train", "stack_batch": True, "plot": False}]


@pytest.fixture(scope="module")
def trained_without_callbacks(feature_map, tmp_path_factory):
    return fit_and_state(feature_map, tmp_path_factory.mktemp("without"), None)[0]


def test_callbacks_do_not_change_training(feature_map, tmp_path, trained_without_callbacks):
    without = trained_without_callbacks
    with_callbacks, callbacks = fit_and_state(feature_map, tmp_path / "with", SPECS_ON_TRAIN_AND_VALID)
    assert len(callbacks[0].log.records) == 3 * (3 + 1)      # (2 epochs + end) * (3 + 1 metric)
    assert without.keys() == with_callbacks.keys()
    for key in without:
        assert torch.equal(without[key], with_callbacks[key]), key


def test_parameter_check_detects_rng_consumption(feature_map, tmp_path, monkeypatch, trained_without_callbacks):
    """Without the RNG guard, iterating shuffled loaders shifts later dropout/shuffles."""
    monkeypatch.setattr(spectrum_callbacks, "_preserved_state", lambda model: torch.no_grad())
    without = trained_without_callbacks
    with_callbacks, _ = fit_and_state(feature_map, tmp_path / "with", SPECS_ON_TRAIN_AND_VALID)
    assert any(not torch.equal(without[k], with_callbacks[k]) for k in without)


def test_record_restores_modes_and_random_states(feature_map, tmp_path):
    model = build_model(feature_map, tmp_path)
    model.train()
    model.mlp.eval()
    (callback,) = build_spectrum_callbacks([{"metric": "IA", "plot": False}],
                                           {"valid": shuffled_loader(feature_map, 32, seed=3)}, tmp_path, "r")
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    callback.on_epoch_end(Trainer(model), 0)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    assert model.training and model.embedding_layer.training and not model.mlp.training


def test_every_n_epochs_selected_layers_and_stacked_2d_stage(feature_map, tmp_path):
    model = build_model(feature_map, tmp_path / "ckpt", model_class=TappedNet)
    train = [random_batch(feature_map, 8, seed=i) for i in range(2)]
    valid = [random_batch(feature_map, 8, seed=50 + i) for i in range(3)]
    specs = [{"metric": ["stable_rank"], "layers": ["hidden", "flat"], "every": 2, "max_batches": None,
              "max_values": 5}]
    callbacks = build_spectrum_callbacks(specs, {"valid": valid}, tmp_path, "sel")
    Trainer(model, TrainingConfig(epochs=3, verbose=0), callbacks).fit(train, valid)
    records = callbacks[0].log.records
    assert [(r["epoch"], r["stage"], r["stage_index"]) for r in records] == [
        (2, "flat", 1), (2, "hidden", 2), ("end", "flat", 1), ("end", "hidden", 2)]
    flat, hidden = records[0], records[1]
    assert flat["stack_batch"] and flat["n_samples"] == 3        # one (B, F*D) matrix per batch
    assert not hidden["stack_batch"] and hidden["n_samples"] == 24
    assert hidden["mean"] == pytest.approx(1.0)                    # (1, H) matrices have rank 1
    assert len(hidden["values"]) == 5


def test_unknown_layer_names_the_available_stages(feature_map, tmp_path):
    model = build_model(feature_map, tmp_path)
    (callback,) = build_spectrum_callbacks([{"layers": ["block_0"], "plot": False}],
                                           {"valid": [random_batch(feature_map, 4)]}, tmp_path, "x")
    with pytest.raises(ValueError, match=r"\['block_0'\].*its stages: \['embedding'\]"):
        callback.on_fit_end(Trainer(model))


def test_non_finite_stage_values_are_counted_not_averaged(feature_map, tmp_path):
    model = build_model(feature_map, tmp_path)
    batch = random_batch(feature_map, 8, seed=9)
    batch["I1"][3] = float("nan")
    (callback,) = build_spectrum_callbacks([{"metric": ["IA"], "plot": False}], {"valid": [batch]},
                                           tmp_path, "nan")
    callback.on_fit_end(Trainer(model))
    record = callback.log.records[0]
    assert (record["n_samples"], record["n_nonfinite"]) == (7, 1)
    assert math.isfinite(record["mean"]) and len(record["values"]) == 7
    json.loads((tmp_path / "nan.spectrum.json").read_text())


def test_no_specs_give_no_callbacks(tmp_path):
    assert build_spectrum_callbacks(None, {}, tmp_path, "x") == []
    assert build_spectrum_callbacks([], {}, tmp_path, "x") == []


@pytest.mark.parametrize("specs, message", [
    ({"metric": "IA"}, "must be a list"),
    (["IA"], r"spectrum_callbacks\[0\] must be a mapping"),
    ([{"metrics": ["IA"]}], r"unknown key\(s\) \['metrics'\]"),
    ([{"metric": ["IA", "srank"]}], r"metric: unknown \['srank'\]"),
    ([{"metric": []}], "metric must be"),
    ([{"split": "validation"}], "split: unknown 'validation'"),
    ([{"split": "test"}], "split 'test' has no data loader"),
    ([{"every": 0}], "every"),
    ([{"every": "step"}], "every"),
    ([{"every": True}], "every"),
    ([{"max_batches": 0}], "max_batches"),
    ([{"bins": 2.5}], "bins"),
    ([{"max_values": -1}], "max_values"),
    ([{"layers": []}], "layers"),
    ([{"layers": [3]}], "layers"),
    ([{"stack_batch": "yes"}], "stack_batch"),
    ([{"metric": "IA"}, {"metric": ["erank", "IA"]}], r"\[0\] and \[1\] both measure IA"),
])
def test_bad_specs_raise_early(specs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        build_spectrum_callbacks(specs, {"train": [], "valid": [], "test": None}, tmp_path, "bad")


def test_missing_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"fuxictr-zoo\[plots\]"):
        require_matplotlib()
    with pytest.raises(ImportError, match="plot: false"):
        build_spectrum_callbacks([{"metric": "IA"}], {"valid": []}, tmp_path, "x")
    assert len(build_spectrum_callbacks([{"metric": "IA", "plot": False}], {"valid": []}, tmp_path, "x")) == 1


# ---------------------------------------------------------------------------- overlay command
@pytest.fixture(scope="module")
def two_runs(feature_map, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    paths = []
    for run, model_class in (("dnn", DNN), ("tapped", TappedNet)):
        model = build_model(feature_map, folder / "ckpt", model_class=model_class)
        train = [random_batch(feature_map, 16, seed=i) for i in range(2)]
        valid = [random_batch(feature_map, 16, seed=30 + i) for i in range(2)]
        specs = [{"metric": ["IA", "erank"], "plot": run == "dnn"}]
        callbacks = build_spectrum_callbacks(specs, {"valid": valid}, folder, run)
        Trainer(model, TrainingConfig(epochs=2, verbose=0), callbacks).fit(train, valid)
        paths.append(folder / f"{run}.spectrum.json")
    return folder, [str(p) for p in paths]


@pytest.mark.parametrize("extra", [[], ["--epoch", "1"], ["--epoch", "end", "--labels", "A", "B"],
                                   ["--hist", "embedding"], ["--hist", "embedding", "--bins", "5"]])
def test_plot_command_overlays_runs(two_runs, extra, capsys):
    folder, paths = two_runs
    out = folder / f"overlay{len(extra)}.png"
    assert plot_main(paths + ["--metric", "IA", "--out", str(out)] + extra) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--metric", "stable_rank"], "no records of metric 'stable_rank'"),
    (["--metric", "IA", "--epoch", "7"], "no records of epoch 7"),
    (["--metric", "IA", "--hist", "flat"], "dnn: no stage 'flat'"),
    (["--metric", "IA", "--split", "test"], "no records of split 'test'"),
    (["--metric", "IA", "--labels", "only_one"], "--labels has 1 names for 2 logs"),
])
def test_plot_command_errors_name_the_problem(two_runs, extra, message, capsys):
    folder, paths = two_runs
    assert plot_main(paths + ["--out", str(folder / "bad.png")] + extra) == 2
    assert message in capsys.readouterr().err


def test_select_records_last_prefers_train_end(two_runs):
    _, paths = two_runs
    records = json.loads(open(paths[1]).read())["records"]
    last = select_records(records, "erank")
    assert {r["epoch"] for r in last} == {"end"}
    assert [r["stage"] for r in last] == ["embedding", "hidden"]
    assert [r["stage"] for r in select_records(records, "erank", stack_batch=True)] == ["flat"]
    assert {r["epoch"] for r in select_records(records, "erank", epoch=2)} == {2}
