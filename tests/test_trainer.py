"""The Trainer (fuxictr_ext.training): FuxiCTR's loop and decisions, restoring the best
weights, the callback protocol, and no private attribute of FuxiCTR's BaseModel touched.
(The resume state of data-parallel runs: tests/test_resume.py; DDP: tests/test_distributed.py.)"""

import copy
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fuxictr.pytorch.models import BaseModel

from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs
from fuxictr_ext.training import Callback, DivergenceCheck, Trainer, TrainingConfig, TrainingDiverged
from model_zoo.DNN import DNN

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def feature_map():
    return make_feature_map(num_categorical=4, num_numeric=2, vocab_size=20)


def _dnn(feature_map, tmp_path, seed=0, **kwargs):
    torch.manual_seed(seed)
    return DNN(feature_map, hidden_units=[16], net_dropout=0.2, **unit_model_kwargs(tmp_path), **kwargs)


def _data(feature_map, batches=4):
    train = [random_batch(feature_map, 32, seed=i) for i in range(batches)]
    valid = [random_batch(feature_map, 64, seed=100 + i) for i in range(2)]
    return train, valid


# -------------------------------------------------------------- FuxiCTR's loop
@pytest.mark.parametrize("settings", [
    {"learning_rate": 0.05, "early_stop_patience": 2},
    {"learning_rate": 0.05, "early_stop_patience": 3, "eval_steps": 3, "monitor": "logloss", "monitor_mode": "min"},
    {"learning_rate": 0.01, "save_best_only": False, "reduce_lr_on_plateau": False},
])
def test_fit_equals_fuxictrs_own_fit(feature_map, tmp_path, settings):
    """Same seeds, same data: FuxiCTR's BaseModel.fit and the Trainer end with the same
    weights and learning rate (same steps, evaluations, decisions and restored checkpoint)."""
    train, valid = _data(feature_map)
    reference = _dnn(feature_map, tmp_path / "fuxictr", **settings)
    torch.manual_seed(1)
    BaseModel.fit(reference, train, epochs=6, validation_data=valid)
    ours = _dnn(feature_map, tmp_path / "ours", **settings)
    torch.manual_seed(1)
    ours.fit(train, epochs=6, validation_data=valid)
    for name, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    assert [g["lr"] for g in ours.optimizer.param_groups] == [g["lr"] for g in reference.optimizer.param_groups]


def _decisions(monitor_mode, values, patience=2, reduce_lr=True, tmp_path=None, feature_map=None):
    model = _dnn(feature_map, tmp_path, learning_rate=1e-3)
    trainer = Trainer(model, TrainingConfig(monitor="AUC", monitor_mode=monitor_mode, early_stop_patience=patience,
                                            reduce_lr_on_plateau=reduce_lr, verbose=0))
    steps = []
    for value in values:
        trainer.checkpoint_and_earlystop({"AUC": value})
        steps.append((trainer.state.best_metric, trainer.state.stopping_steps, trainer.state.stop,
                      round(model.optimizer.param_groups[0]["lr"], 12)))
    return steps


def test_early_stopping_decisions(feature_map, tmp_path):
    steps = _decisions("max", [0.60, 0.70, 0.69, 0.7000005, 0.71, 0.70, 0.70], tmp_path=tmp_path,
                       feature_map=feature_map)
    assert steps == [(0.60, 0, False, 1e-3), (0.70, 0, False, 1e-3),
                     (0.70, 1, False, 1e-4),                    # worse: one step, lr / 10
                     (0.70, 2, True, 1e-5),                     # better by less than min_delta 1e-6: no gain
                     (0.71, 0, True, 1e-5),                     # a gain resets the count (stop stays set)
                     (0.71, 1, True, 1e-6), (0.71, 2, True, 1e-6)]  # lr floor 1e-6
    low = _decisions("min", [0.5, 0.4, 0.45], patience=1, reduce_lr=False, tmp_path=tmp_path, feature_map=feature_map)
    assert low == [(0.5, 0, False, 1e-3), (0.4, 0, False, 1e-3), (0.4, 1, True, 1e-3)]


class WeightsAtValidation(Callback):
    def __init__(self):
        self.weights, self.best = [], []

    def on_epoch_end(self, trainer, epoch):
        self.weights.append(copy.deepcopy(trainer.model.state_dict()))
        self.best.append(trainer.state.stopping_steps == 0)


def test_fit_restores_the_best_weights_not_the_last(feature_map, tmp_path):
    model = _dnn(feature_map, tmp_path, learning_rate=0.05)
    train, _ = _data(feature_map)
    valid = [dict(batch, clk=1 - batch["clk"]) for batch in train]   # gets worse as training fits train
    seen = WeightsAtValidation()
    trainer = Trainer(model, TrainingConfig(epochs=6, early_stop_patience=10, reduce_lr_on_plateau=False,
                                            verbose=0), [seen])
    torch.manual_seed(3)
    trainer.fit(train, valid)
    best_epoch = max(i for i, best in enumerate(seen.best) if best)
    assert best_epoch < len(seen.weights) - 1, "the test needs a run whose last epoch is not its best"
    for name, value in seen.weights[best_epoch].items():
        assert torch.equal(model.state_dict()[name], value), name
    assert trainer.evaluate(valid, ["AUC"])["AUC"] == pytest.approx(trainer.state.best_metric, abs=1e-12)
    assert Path(trainer.checkpoint).is_file() and not list(Path(trainer.checkpoint).parent.glob(".tmp-*"))


# ------------------------------------------------------------------ callbacks
class Recorder(Callback):
    def __init__(self, name, events):
        self.name, self.events = name, events

    def on_fit_start(self, trainer, train_loader):
        self.events.append((self.name, "fit_start"))

    def on_train_batch_end(self, trainer, loss):
        self.events.append((self.name, "batch", trainer.state.epoch, trainer.state.batch))

    def on_validation_predictions(self, trainer, y_pred):
        self.events.append((self.name, "validation", y_pred.shape))

    def on_epoch_end(self, trainer, epoch):
        self.events.append((self.name, "epoch_end", epoch))

    def on_fit_end(self, trainer):
        self.events.append((self.name, "fit_end"))


class OnlyEpochs:
    """A callback with one hook, not derived from Callback: the others are not called."""

    def __init__(self, events):
        self.events = events

    def on_epoch_end(self, trainer, epoch):
        self.events.append(("only", "epoch_end", epoch))


def test_callbacks_are_called_in_order_at_each_hook(feature_map, tmp_path):
    events = []
    train, valid = _data(feature_map, batches=2)
    trainer = Trainer(_dnn(feature_map, tmp_path), TrainingConfig(epochs=2, verbose=0),
                      [Recorder("a", events), OnlyEpochs(events), Recorder("b", events)])
    assert isinstance(trainer.callbacks[0], DivergenceCheck)
    trainer.fit(train, valid)
    expected = [("a", "fit_start"), ("b", "fit_start")]
    for epoch in range(2):
        for batch in range(2):
            expected += [("a", "batch", epoch, batch), ("b", "batch", epoch, batch)]
        expected += [("a", "validation", (128,)), ("b", "validation", (128,)),
                     ("a", "epoch_end", epoch), ("only", "epoch_end", epoch), ("b", "epoch_end", epoch)]
    expected += [("a", "fit_end"), ("b", "fit_end")]
    assert events == expected


class Constant(DNN):
    def forward(self, inputs):
        out = super().forward(inputs)
        return {"y_pred": out["y_pred"] * 0 + 0.5}


def test_constant_predictions_stop_training_naming_learning_rate(feature_map, tmp_path):
    torch.manual_seed(0)
    model = Constant(feature_map, hidden_units=[8], learning_rate=0.5, **unit_model_kwargs(tmp_path))
    train, valid = _data(feature_map, batches=3)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, batch 3: the model predicts 0.5 for all 128 "
                                               r"validation rows. Lower learning_rate \(it is 0.5\)"):
        model.fit(train, validation_data=valid)


class InfiniteAuxLossOnSecondStep(DNN):
    def forward(self, inputs):
        out = super().forward(inputs)
        self.steps = getattr(self, "steps", 0) + self.training
        return {**out, "aux_losses": {"probe": torch.tensor(float("inf") if self.steps == 2 else 0.0)}}


def test_non_finite_loss_stops_training(feature_map, tmp_path):
    torch.manual_seed(0)
    model = InfiniteAuxLossOnSecondStep(feature_map, hidden_units=[8], **unit_model_kwargs(tmp_path))
    train, valid = _data(feature_map, batches=3)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, batch 2: the training loss is inf"):
        Trainer(model, TrainingConfig(verbose=0)).fit(train, valid)


# -------------------------------------------- FuxiCTR's BaseModel left alone
def _basemodel_private_names():
    """Every ``self._name`` FuxiCTR's BaseModel reads or writes, less nn.Module's own."""
    import inspect
    source = inspect.getsource(BaseModel)
    names = set(re.findall(r"self\.(_[A-Za-z]\w*)", source))
    return sorted(names - set(vars(torch.nn.Module())) - {"__class__"})


def test_no_private_attribute_of_fuxictrs_basemodel_is_used_in_the_project():
    names = _basemodel_private_names()
    assert {"_best_metric", "_stopping_steps", "_epoch_index", "_monitor", "_eval_steps"} <= set(names)
    pattern = re.compile(r"""(\.|["'])(%s)\b""" % "|".join(map(re.escape, names)))
    files = [REPO / "run_expid.py", *sorted((REPO / "fuxictr_ext").rglob("*.py")),
             *sorted((REPO / "model_zoo").rglob("*.py"))]
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in files for number, line in enumerate(path.read_text().splitlines(), 1)
             if pattern.search(line)]
    assert not found, "private attributes of FuxiCTR's BaseModel used:\n" + "\n".join(found)


def test_fit_and_evaluate_leave_basemodels_attributes_as_constructed(feature_map, tmp_path):
    """FuxiCTR's fit would set _best_metric, _stopping_steps, ... and rebind _eval_steps."""
    model = _dnn(feature_map, tmp_path, eval_steps=None)
    before = dict(vars(model))
    train, valid = _data(feature_map, batches=2)
    model.fit(train, epochs=2, validation_data=valid)
    model.evaluate(valid)
    assert sorted(vars(model)) == sorted(before)
    for name in _basemodel_private_names():
        if name in before:
            assert vars(model)[name] is before[name], name


def test_stock_fit_uses_the_models_fuxictr_settings(feature_map, tmp_path):
    model = _dnn(feature_map, tmp_path, monitor={"AUC": 1, "logloss": -1}, early_stop_patience=5, eval_steps=2)
    assert model.training_config == TrainingConfig(monitor={"AUC": 1, "logloss": -1}, early_stop_patience=5,
                                                   eval_steps=2, learning_rate=1e-3, verbose=0)
    events = []

    class Count(Callback):
        def on_validation_predictions(self, trainer, y_pred):
            events.append(trainer.state.total_steps)

    trainer = Trainer(model, dataclasses.replace(model.training_config, epochs=2), [Count()])
    trainer.fit(*_data(feature_map, batches=3))
    assert events == [2, 4, 6]
    assert np.isfinite(trainer.state.best_metric)
