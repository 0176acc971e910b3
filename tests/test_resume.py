"""The per-epoch resume state of distributed training: a restarted job goes on bit-exactly,
a resume file of another job or another config is never loaded, and the other ranks
wait for rank 0's dataset build however long it takes."""

import copy
import datetime
import logging
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fuxictr_ext import distributed as zoo_dist
from fuxictr_ext import runner
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs
from fuxictr_ext.training import Callback, ResumeState, Trainer, TrainingConfig
from model_zoo.DNN import DNN

from test_data import _frame, _params, _write_splits


class GlobalRngLoader:
    """Training batches in an order drawn from torch's global RNG (as torch's DataLoader
    with shuffle=True does), so a resumed run must restore that RNG too."""

    def __init__(self, batches):
        self.batches = batches
        self.epoch = 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for index in torch.randperm(len(self.batches)).tolist():
            yield self.batches[index]


class EpochWeights(Callback):
    """Callback keeping a copy of the weights at every epoch end."""

    def __init__(self):
        self.by_epoch = {}

    def on_epoch_end(self, trainer, epoch):
        self.by_epoch[epoch] = copy.deepcopy(trainer.model.state_dict())


@pytest.fixture
def world_of_one(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    yield zoo_dist.DistContext(rank=0, world_size=1, local_rank=0, backend="gloo", gpu=-1)
    dist.destroy_process_group()


def _trainer(tmp_path, context, init_seed, fingerprint="run-a", epochs=3):
    torch.manual_seed(init_seed)
    model = DNN(make_feature_map(), hidden_units=[32, 32], net_dropout=0.5, **unit_model_kwargs(tmp_path))
    config = TrainingConfig(epochs=epochs, early_stop_patience=10, verbose=0, config_fingerprint=fingerprint)
    return Trainer(model, config, [EpochWeights()], context)


def _data():
    train = [random_batch(make_feature_map(), batch_size=32, seed=i) for i in range(6)]
    valid = [random_batch(make_feature_map(), batch_size=64, seed=100)]
    return GlobalRngLoader(train), valid


def _interrupted_after_epoch_one(tmp_path, context, monkeypatch, **trainer_kwargs):
    trainer = _trainer(tmp_path, context, init_seed=1, **trainer_kwargs)
    resume = trainer.callbacks[-1]
    assert isinstance(resume, ResumeState)
    original = resume.on_epoch_end

    def save_then_die(trainer, epoch):
        original(trainer, epoch)
        raise KeyboardInterrupt("worker killed")

    monkeypatch.setattr(resume, "on_epoch_end", save_then_die)
    train, valid = _data()
    torch.manual_seed(7)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(train, valid)
    assert os.path.isfile(trainer.resume_path)


def test_restarted_job_resumes_bit_exactly(tmp_path, world_of_one, monkeypatch):
    straight = _trainer(tmp_path / "straight", world_of_one, init_seed=1)
    train, valid = _data()
    torch.manual_seed(7)
    straight.fit(train, valid)

    _interrupted_after_epoch_one(tmp_path / "restarted", world_of_one, monkeypatch)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    resumed = _trainer(tmp_path / "restarted", world_of_one, init_seed=99)  # other init: must not matter
    train, valid = _data()
    torch.manual_seed(12345)  # the restarted process's RNG is wherever it is
    resumed.fit(train, valid)

    assert set(resumed.callbacks[1].by_epoch) == {1, 2}
    for epoch in (1, 2):
        for name, value in straight.callbacks[1].by_epoch[epoch].items():
            assert torch.equal(resumed.callbacks[1].by_epoch[epoch][name], value), (epoch, name)


def test_resume_file_of_another_job_is_not_loaded(tmp_path, world_of_one, monkeypatch, caplog):
    monkeypatch.setattr(zoo_dist, "job_id", lambda: "an-earlier-killed-job", raising=False)
    _interrupted_after_epoch_one(tmp_path, world_of_one, monkeypatch)
    monkeypatch.undo()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    trainer = _trainer(tmp_path, world_of_one, init_seed=2, epochs=1)
    train, valid = _data()
    with caplog.at_level(logging.WARNING):
        trainer.fit(train, valid)
    assert "written by another job (an-earlier-killed-job" in caplog.text
    assert "Restart 1: resuming" not in caplog.text
    assert set(trainer.callbacks[1].by_epoch) == {0}


def test_resume_file_of_another_config_is_not_loaded(tmp_path, world_of_one, monkeypatch, caplog):
    _interrupted_after_epoch_one(tmp_path, world_of_one, monkeypatch, fingerprint="other-architecture")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    trainer = _trainer(tmp_path, world_of_one, init_seed=2, fingerprint="run-a", epochs=1)
    train, valid = _data()
    with caplog.at_level(logging.WARNING):
        trainer.fit(train, valid)
    assert "written under another config" in caplog.text and "Restart 1: resuming" not in caplog.text


def test_first_attempt_ignores_a_left_over_resume_file(tmp_path, world_of_one, monkeypatch, caplog):
    _interrupted_after_epoch_one(tmp_path, world_of_one, monkeypatch)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    trainer = _trainer(tmp_path, world_of_one, init_seed=2, epochs=1)
    train, valid = _data()
    with caplog.at_level(logging.WARNING):
        trainer.fit(train, valid)
    assert "first attempt of this job" in caplog.text and "Restart 1: resuming" not in caplog.text


COLLECTIVE_TIMEOUT_S = 4


def _slow_build_worker(rank, init_file, cases):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    context = zoo_dist.DistContext(rank=rank, world_size=2, local_rank=rank, backend="gloo", gpu=-1)
    real_build = runner.build_dataset
    for params, build_seconds in cases:
        def slow_build(build_params, wait=build_seconds):
            time.sleep(wait)
            return real_build(build_params)

        runner.build_dataset = slow_build
        try:
            feature_map, _ = runner.prepare_data(dict(params), context)
            outcome = f"ok: {len(feature_map.features)} features"
        except Exception as err:
            outcome = f"{type(err).__name__}: {err}"
        with open(os.path.join(params["data_root"], f"rank{rank}.out"), "w") as fd:
            fd.write(outcome)
    dist.destroy_process_group()


def test_other_ranks_wait_for_rank_zeros_build_and_share_its_error(tmp_path):
    """Case 1: a build longer than the process group's collective timeout; every rank gets
    the feature map. Case 2: rank 0's build fails on bad labels; every rank raises its error."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    for root in (good, bad):
        root.mkdir()
        _write_splits(root)
    frame = _frame(200).astype({"label": float})
    frame.loc[:2, "label"] = 2
    frame.to_csv(bad / "train.csv", index=False)
    cases = [(_params(good), 2 * COLLECTIVE_TIMEOUT_S), (_params(bad), 0)]
    for params, _ in cases:
        os.makedirs(params["data_root"])
    mp.spawn(_slow_build_worker, args=(str(tmp_path / "init"), cases), nprocs=2, join=True)
    outcomes = [[open(os.path.join(params["data_root"], f"rank{r}.out")).read() for r in range(2)]
                for params, _ in cases]
    assert outcomes[0] == ["ok: 5 features"] * 2
    for outcome in outcomes[1]:
        assert outcome.startswith("DataError: ") and "train.csv: label column 'label'" in outcome, outcome
