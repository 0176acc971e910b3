"""ZooModel: FuxiCTR's BaseModel plus what every model of this zoo shares.

A ZooModel is a ``fuxictr.pytorch.models.BaseModel`` (so FuxiCTR scripts, the
tuner and ``RankDataLoader`` work unchanged) with four additions:

* **stage taps** - ``self.tap("block_0_in", x)`` inside ``forward`` names an
  intermediate tensor; it costs nothing unless a spectrum callback records.
* **auxiliary losses** - ``forward`` may return ``{"aux_losses": {"hsic": t}}``
  next to ``y_pred``; they are added to the task loss and every part is logged
  separately at each evaluation.
* **epoch callbacks** - objects in ``self.callbacks`` get ``on_epoch_end`` and
  ``on_train_end`` (spectrum monitoring uses this).
* **atomic checkpoints** - weights are written to a temporary file and renamed.
* **data parallelism** - after ``enable_distributed`` (run_expid does it under
  torchrun) the training forward runs through DistributedDataParallel, evaluation
  gathers every rank's predictions, rank 0 takes and broadcasts checkpoint and
  early-stop decisions, and a per-epoch resume state lets a restarted job go on
  from its last finished epoch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import get_initializer
from torch import nn

from . import distributed as zoo_dist
from .atomic import torch_save_atomic


class TrainingDiverged(ValueError):
    """Training that left the range where its results mean anything (non-finite loss or
    predictions, or one prediction for every validation row); names learning_rate."""


class ZooModel(BaseModel):
    """Base class of every model in the zoo.

    Subclasses build their layers in ``__init__``, end it with
    ``self.finalize_model()`` (compile, initialise, move to device, as FuxiCTR
    models do) and return ``{"y_pred": (B, 1)}`` from ``forward``.

    Args:
        feature_map: the FuxiCTR FeatureMap of the dataset.
        model_id: experiment id; names the checkpoint file.
        gpu: device index, -1 for CPU.
        learning_rate: optimizer learning rate.
        optimizer: optimizer name understood by fuxictr's ``get_optimizer``.
        loss: loss name understood by fuxictr's ``get_loss``.
        config_fingerprint: the run's settings hash (the runner passes
            ``fuxictr_ext.config.config_fingerprint(params)``); a resume state is loaded
            only under the same one. Without it: the class name and parameter shapes.
        embedding_initializer: FuxiCTR's initializer string (e.g.
            ``"partial(nn.init.normal_, std=1e-4)"``, FeatureEmbedding's default) for
            every embedding table of the model: each ``FeatureEmbeddingDict`` gets it
            before ``reset_parameters`` runs its ``init_weights`` (padding rows stay
            zero, shared and pretrained tables as FuxiCTR treats them). ``None``
            leaves every table with the initializer its model built it with.
        **kwargs: everything else goes to BaseModel (verbose, model_root,
            metrics, monitor, embedding_regularizer, net_regularizer, ...).
    """

    def __init__(self, feature_map, model_id: str = "ZooModel", gpu: int = -1,
                 learning_rate: float = 1e-3, optimizer: str = "adam",
                 loss: str = "binary_crossentropy", config_fingerprint: Optional[str] = None,
                 embedding_initializer: Optional[str] = None, **kwargs):
        kwargs.setdefault("verbose", 1)
        kwargs.setdefault("model_root", "./checkpoints/")
        kwargs.setdefault("metrics", ["logloss", "AUC"])
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        self._optimizer_name = optimizer
        self._loss_name = loss
        self._learning_rate = learning_rate
        self._embedding_initializer = embedding_initializer
        self.callbacks: List = []
        self._stage_sink: Optional[Dict[str, torch.Tensor]] = None
        self._loss_sums: Dict[str, float] = {}
        self._loss_count = 0
        self._dist: Optional[zoo_dist.DistContext] = None
        self._job_id: Optional[str] = None
        self._config_fingerprint = config_fingerprint
        self._validating = False

    def finalize_model(self) -> None:
        """Compile the optimizer and loss, initialise weights (embedding tables with the
        ``embedding_initializer`` key when it is set), move to the device."""
        self.compile(self._optimizer_name, self._loss_name, self._learning_rate)
        if self._embedding_initializer is not None:
            try:
                initializer = get_initializer(self._embedding_initializer)
            except ValueError as error:
                raise ValueError(f"embedding_initializer={self._embedding_initializer!r} is not a FuxiCTR "
                                 "initializer (e.g. \"partial(nn.init.normal_, std=1e-4)\")") from error
            for module in self.modules():
                if isinstance(module, FeatureEmbeddingDict):
                    module.embedding_initializer = initializer
        self.reset_parameters()
        self.model_to_device()

    # ------------------------------------------------------------------ stages
    def tap(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Return ``x``; while stages are recorded, keep a detached copy under ``name``."""
        if self._stage_sink is not None:
            self._stage_sink[name] = x.detach()
        return x

    @contextlib.contextmanager
    def record_stages(self) -> Iterator[Dict[str, torch.Tensor]]:
        """Context in which every ``tap`` call is recorded into the yielded dict."""
        sink: Dict[str, torch.Tensor] = {}
        self._stage_sink = sink
        try:
            yield sink
        finally:
            self._stage_sink = None

    @torch.no_grad()
    def collect_stages(self, batch_data: dict) -> Dict[str, torch.Tensor]:
        """Run one eval-mode forward and return the named stage tensors, in tap order."""
        was_training = self.training
        self.eval()
        try:
            with self.record_stages() as sink:
                self.forward(batch_data)
        finally:
            self.train(was_training)
        return sink

    # ------------------------------------------------------------------ losses
    def compute_loss(self, return_dict, y_true):
        task_loss = self.add_loss(return_dict, y_true)
        parts = {"task": task_loss}
        parts.update(return_dict.get("aux_losses", {}))
        reg = self.regularization_loss()
        loss = sum(parts.values()) + reg
        if self.training:
            for name, value in parts.items():
                self._loss_sums[name] = self._loss_sums.get(name, 0.0) + float(value.detach())
            self._loss_count += 1
        return loss

    def eval_step(self):
        if self._loss_count and len(self._loss_sums) > 1:
            logging.info("Train loss parts: " + " - ".join(
                f"{k}: {v / self._loss_count:.6f}" for k, v in self._loss_sums.items()))
        self._loss_sums, self._loss_count = {}, 0
        self._validating = True
        try:
            super().eval_step()
        finally:
            self._validating = False

    def evaluate_metrics(self, y_true, y_pred, metrics, group_id=None):
        if self._validating:
            self._check_predictions(np.asarray(y_pred))
        return super().evaluate_metrics(y_true, y_pred, metrics, group_id)

    def _diverged(self, what: str) -> TrainingDiverged:
        epoch, batch = getattr(self, "_epoch_index", 0) + 1, getattr(self, "_batch_index", 0) + 1
        return TrainingDiverged(f"training diverged at epoch {epoch}, batch {batch}: "
                                f"{what}. Lower learning_rate (it is {self._learning_rate}); no results are written")

    def _check_predictions(self, y_pred: np.ndarray) -> None:
        """Validation predictions during training: finite and not one value for every row
        (a saturated sigmoid, after which AUC is 0.5 and nothing is learnt)."""
        if not np.isfinite(y_pred).all():
            raise self._diverged(f"{int((~np.isfinite(y_pred)).sum())} validation predictions are not finite")
        if y_pred.size > 1 and y_pred.min() == y_pred.max():
            raise self._diverged(f"the model predicts {y_pred[0]:.6g} for all {y_pred.size} validation rows")

    # ---------------------------------------------------------------- training
    def train_step(self, batch_data):
        self.optimizer.zero_grad()
        forward = self.__dict__.get("_ddp", self)
        return_dict = forward(batch_data)
        loss = self.compute_loss(return_dict, self.get_labels(batch_data))
        if not torch.isfinite(loss):
            raise self._diverged(f"the training loss is {float(loss)}")
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), self._max_gradient_norm)
        self.optimizer.step()
        return loss

    def train_epoch(self, data_generator):
        super().train_epoch(data_generator)
        for callback in self.callbacks:
            callback.on_epoch_end(self, self._epoch_index)

    def fit(self, data_generator, epochs=1, validation_data=None, max_gradient_norm=10., **kwargs):
        """FuxiCTR's training loop (same state, same logging), plus callbacks and,
        when distributed, a per-epoch resume state that a restarted job continues from."""
        self.valid_gen = validation_data
        self._max_gradient_norm = max_gradient_norm
        self._best_metric = np.inf if self._monitor_mode == "min" else -np.inf
        self._stopping_steps = 0
        self._stop_training = False
        self._steps_per_epoch = len(data_generator)
        self._total_steps = 0
        self._batch_index = 0
        self._eval_steps = self._eval_steps or self._steps_per_epoch
        start_epoch = self._load_resume_state(data_generator)
        self.trained_epochs = start_epoch
        logging.info(f"Start training: {self._steps_per_epoch} batches/epoch")
        for epoch in range(start_epoch, epochs):
            self._epoch_index = epoch
            logging.info(f"************ Epoch={epoch + 1} start ************")
            self.train_epoch(data_generator)
            self.trained_epochs = epoch + 1
            if self._stop_training:
                break
            logging.info(f"************ Epoch={epoch + 1} end ************")
            self._save_resume_state(epoch + 1)
        logging.info("Training finished.")
        logging.info(f"Load best model: {self.checkpoint}")
        self.load_weights(self.checkpoint)
        self._remove_resume_state()
        for callback in self.callbacks:
            callback.on_train_end(self)

    # ------------------------------------------------------------ distribution
    def enable_distributed(self, context: "zoo_dist.DistContext") -> None:
        """Train data-parallel in ``context``'s process group (see fuxictr_ext.distributed)."""
        from torch.nn.parallel import DistributedDataParallel
        self._dist = context
        self._job_id = zoo_dist.broadcast_object(zoo_dist.job_id())
        ddp = DistributedDataParallel(self, device_ids=[context.gpu] if context.gpu >= 0 else None)
        self.__dict__["_ddp"] = ddp  # not a sub-module: state_dict keys stay those of the plain model

    @property
    def resume_path(self) -> str:
        return self.checkpoint + ".resume"

    def _rng_state(self) -> dict:
        state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _fingerprint(self) -> str:
        if self._config_fingerprint:
            return self._config_fingerprint
        shapes = [(name, tuple(value.shape)) for name, value in self.state_dict().items()]
        return f"{self.__class__.__name__}:{shapes}"

    def _save_resume_state(self, next_epoch: int) -> None:
        """After an epoch (every rank takes part: rank 0 gathers the RNG states and writes)."""
        if self._dist is None:
            return
        rng_states = zoo_dist.gather_objects(self._rng_state())
        if not self._dist.is_main:
            return
        state = {"job_id": self._job_id, "config_fingerprint": self._fingerprint(),
                 "world_size": self._dist.world_size, "next_epoch": next_epoch, "model": self.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "best_metric": float(self._best_metric),
                 "stopping_steps": self._stopping_steps, "total_steps": self._total_steps, "rng": rng_states}
        torch_save_atomic(state, self.resume_path)

    def _foreign_resume_state(self, state: dict) -> Optional[str]:
        """Why a resume state is not this job's to continue (None: it is)."""
        if state.get("job_id") != self._job_id:
            return f"written by another job ({state.get('job_id')}, this one is {self._job_id})"
        if state.get("config_fingerprint") != self._fingerprint():
            return "written under another config (its settings fingerprint differs from this run's)"
        if state.get("world_size") != self._dist.world_size:
            return f"written by {state.get('world_size')} processes, this run has {self._dist.world_size}"
        return None

    def _load_resume_state(self, data_generator) -> int:
        """The epoch to start at: 0, or after a torchrun restart the one after this job's last
        finished epoch, with weights, optimizer, early-stop and RNG state as they were."""
        if self._dist is None or not os.path.isfile(self.resume_path):
            return 0
        state = torch.load(self.resume_path, map_location="cpu", weights_only=False)
        reason = self._foreign_resume_state(state)
        if reason is not None or zoo_dist.restart_count() == 0:
            logging.warning(f"Not resuming from {self.resume_path}: "
                            f"{reason or 'this is the first attempt of this job'}; starting at epoch 1")
            return 0
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._best_metric = state["best_metric"]
        self._stopping_steps = state["stopping_steps"]
        self._total_steps = state["total_steps"]
        self._set_rng_state(state["rng"][self._dist.rank])
        if hasattr(data_generator, "epoch"):
            data_generator.epoch = state["next_epoch"]
        logging.warning(f"Restart {zoo_dist.restart_count()}: resuming from {self.resume_path} "
                        f"at epoch {state['next_epoch'] + 1}")
        return state["next_epoch"]

    def _remove_resume_state(self) -> None:
        if self._dist is not None and self._dist.is_main and os.path.isfile(self.resume_path):
            os.unlink(self.resume_path)

    def checkpoint_and_earlystop(self, logs, min_delta=1e-6):
        if self._dist is None:
            return super().checkpoint_and_earlystop(logs, min_delta)
        if self._dist.is_main:
            super().checkpoint_and_earlystop(logs, min_delta)
        decision = zoo_dist.broadcast_object({
            "stop": self._stop_training, "best": self._best_metric, "steps": self._stopping_steps,
            "lr": [group["lr"] for group in self.optimizer.param_groups]})
        self._stop_training, self._best_metric = decision["stop"], decision["best"]
        self._stopping_steps = decision["steps"]
        for group, lr in zip(self.optimizer.param_groups, decision["lr"]):
            group["lr"] = lr

    def evaluate(self, data_generator, metrics=None):
        """Single process: FuxiCTR's evaluate. Distributed: batch i is scored by rank
        i mod world_size and the predictions are gathered back into batch order, so
        the metrics equal a single process's on the same data."""
        if self._dist is None:
            return super().evaluate(data_generator, metrics)
        rank, world = self._dist.rank, self._dist.world_size
        has_group = self.feature_map.group_id is not None
        self.eval()
        local = []
        with torch.no_grad():
            for index, batch_data in enumerate(data_generator):
                if index % world != rank:
                    continue
                y_pred = self.forward(batch_data)["y_pred"].cpu().numpy().reshape(-1)
                y_true = self.get_labels(batch_data).cpu().numpy().reshape(-1)
                group = self.get_group_id(batch_data).numpy().reshape(-1) if has_group else None
                local.append((index, y_pred, y_true, group))
        parts = sorted((p for rank_parts in zoo_dist.gather_objects(local) for p in rank_parts),
                       key=lambda p: p[0])
        y_pred = np.concatenate([p[1] for p in parts]).astype(np.float64)
        y_true = np.concatenate([p[2] for p in parts]).astype(np.float64)
        group_id = np.concatenate([p[3] for p in parts]) if has_group else None
        val_logs = self.evaluate_metrics(y_true, y_pred, metrics or self.validation_metrics, group_id)
        logging.info("[Metrics] " + " - ".join(f"{k}: {v:.6f}" for k, v in val_logs.items()))
        return val_logs

    # ------------------------------------------------------------- checkpoints
    def save_weights(self, checkpoint):
        """Write the state dict atomically: a temp file in the same folder, then rename."""
        torch_save_atomic(self.state_dict(), checkpoint)

    def load_weights(self, checkpoint):
        self.to(self.device)
        state_dict = torch.load(checkpoint, map_location="cpu", weights_only=True)
        self.load_state_dict(state_dict)
