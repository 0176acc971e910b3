"""The zoo's training loop: fit, evaluation, early stopping, checkpoints and data parallelism.

The loop is FuxiCTR's (``fuxictr.pytorch.models.rank_model.BaseModel.fit``): the same
settings (``monitor``, ``monitor_mode``, ``early_stop_patience``, ``eval_steps``,
``save_best_only``, ``reduce_lr_on_plateau``, ``max_gradient_norm``), the same decisions
and the same log lines, so a run reads and behaves as a FuxiCTR run. It keeps its state
in :class:`TrainState`, never in the model; the model supplies only what it declares:
``forward``, ``loss_terms`` (task loss, auxiliary losses, regularization), labels and
metrics.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, fields
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from fuxictr.utils import Monitor
from torch import nn
from tqdm import tqdm

from .. import distributed as zoo_dist
from ..config import ConfigError
from ..precision import as_float32, autocast
from .callbacks import DivergenceCheck
from ..atomic import torch_save_atomic
from .resume import ResumeState


@dataclass(frozen=True)
class TrainingConfig:
    """The settings of a fit, with FuxiCTR's names and defaults.

    Args:
        epochs: most epochs to train.
        max_gradient_norm: gradients are clipped to this total norm.
        monitor: the metric (or ``{metric: weight}``) that early stopping and the best
            checkpoint follow (FuxiCTR's ``Monitor``).
        monitor_mode: ``"max"`` or ``"min"``.
        early_stop_patience: evaluations without improvement before training stops.
        eval_steps: evaluate every this many batches; None: once per epoch.
        save_best_only: write the checkpoint only when the monitor improves (else after
            every evaluation).
        reduce_lr_on_plateau: divide the learning rate by 10 (down to 1e-6) at each
            evaluation without improvement.
        learning_rate: the configured learning rate (named by the divergence check).
        verbose: > 0 shows progress bars.
        config_fingerprint: the run's settings hash; a resume state is loaded only under
            the same one.
        precision: ``"float32"`` or ``"bf16"`` (forward and backward under bfloat16
            autocast, float32 weights, loss and predictions; :mod:`fuxictr_ext.precision`).

    Example:
        >>> TrainingConfig.from_params({"epochs": 3, "monitor": "AUC", "batch_size": 64}).epochs
        3
    """

    epochs: int = 1
    max_gradient_norm: float = 10.0
    monitor: Union[str, Dict[str, float]] = "AUC"
    monitor_mode: str = "max"
    early_stop_patience: int = 2
    eval_steps: Optional[int] = None
    save_best_only: bool = True
    reduce_lr_on_plateau: bool = True
    learning_rate: float = 1e-3
    verbose: int = 1
    config_fingerprint: Optional[str] = None
    precision: str = "float32"

    @classmethod
    def from_params(cls, params: dict) -> "TrainingConfig":
        """The config of a run's merged params (keys it does not know are ignored)."""
        return cls(**{f.name: params[f.name] for f in fields(cls) if f.name in params})


@dataclass
class TrainState:
    """Where a fit is: epoch and batch (0-based), steps, the early-stop state; ``epochs_done``
    counts the finished epochs (a stopping epoch included)."""

    best_metric: float
    start_epoch: int = 0
    epoch: int = 0
    epochs_done: int = 0
    batch: int = 0
    total_steps: int = 0
    stopping_steps: int = 0
    stop: bool = False


class Trainer:
    """Trains and evaluates one zoo model, single-process or data-parallel under torchrun.

    Args:
        model: a ``ZooModel`` (compiled: it has ``optimizer``).
        config: the fit's settings; default :class:`TrainingConfig` ().
        callbacks: called after the divergence check and before the resume state
            (see :mod:`fuxictr_ext.training.callbacks` for the hooks).
        context: the torchrun process group (``fuxictr_ext.distributed.init_from_env``),
            or None for one process. With it the training forward runs through
            ``DistributedDataParallel``, evaluation is gathered across ranks, rank 0 takes
            and broadcasts the checkpoint, early-stop and learning-rate decisions, and a
            per-epoch resume state is written (:mod:`fuxictr_ext.training.resume`).
        checkpoint: where the best weights are written; default ``model.checkpoint``
            (``<model_root>/<dataset_id>/<model_id>.model``); the runner gives each run a
            path of its own (:mod:`fuxictr_ext.training.runs`). The fit ends with the best
            weights it kept in memory, not with what the file holds then.

    Example:
        >>> trainer = Trainer(model, TrainingConfig.from_params(params), callbacks=spectrum_callbacks)
        >>> trainer.fit(train_gen, valid_gen)
        >>> trainer.evaluate(test_gen)
        {'logloss': 0.55, 'AUC': 0.72}
    """

    def __init__(self, model: nn.Module, config: Optional[TrainingConfig] = None, callbacks: Sequence = (),
                 context: Optional[zoo_dist.DistContext] = None, checkpoint: Optional[str] = None):
        self.model = model
        self.config = config or TrainingConfig()
        self.context = context
        self.checkpoint = checkpoint or model.checkpoint
        self.monitor = Monitor(kv=self.config.monitor)
        self.state = TrainState(best_metric=self._worst())
        self.callbacks: List = [DivergenceCheck(self.config.learning_rate), *callbacks]
        self.forward_module: nn.Module = model
        if context is not None:
            from torch.nn.parallel import DistributedDataParallel
            self.forward_module = DistributedDataParallel(model, device_ids=[context.gpu] if context.gpu >= 0 else None)
            self.callbacks.append(ResumeState(context, self.resume_path, self.config.config_fingerprint))
        self.valid_loader: Optional[Iterable] = None
        self.best_weights: Optional[Dict[str, torch.Tensor]] = None
        self._loss_part_sums: Dict[str, float] = {}
        self._loss_part_count = 0

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.model.optimizer

    @property
    def resume_path(self) -> str:
        return self.checkpoint + ".resume"

    @property
    def is_main(self) -> bool:
        return self.context is None or self.context.is_main

    def _worst(self) -> float:
        return np.inf if self.config.monitor_mode == "min" else -np.inf

    def autocast(self):
        """The context the model's forward runs in (``precision``)."""
        return autocast(self.config.precision, self.model.device)

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self, *args)

    # ---------------------------------------------------------------- training
    def train_step(self, batch: dict) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """One optimizer step on one batch: forward (through DDP when distributed, under the
        ``precision``'s autocast), the loss with its parts (float32), backward, gradient
        clipping, step.

        Returns:
            (the loss, the model's named loss parts), both detached.
        """
        model = self.model
        self.optimizer.zero_grad()
        with self.autocast():
            return_dict = self.forward_module(batch)
        loss, parts = model.loss_terms(as_float32(return_dict), model.get_labels(batch))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), self.config.max_gradient_norm)
        self.optimizer.step()
        return loss.detach(), {name: value.detach() for name, value in parts.items()}

    def train_epoch(self, train_loader: Iterable) -> None:
        """One pass over ``train_loader``, validating every ``eval_steps`` batches."""
        state, eval_steps = self.state, self.config.eval_steps or len(train_loader)
        state.batch = 0
        train_loss = 0.0
        self.model.train()
        batches = train_loader if self.config.verbose == 0 else tqdm(train_loader, disable=False, file=sys.stdout)
        for batch_index, batch in enumerate(batches):
            state.batch = batch_index
            state.total_steps += 1
            loss, parts = self.train_step(batch)
            self._call("on_train_batch_end", loss)
            train_loss += loss.item()
            for name, value in parts.items():
                self._loss_part_sums[name] = self._loss_part_sums.get(name, 0.0) + float(value)
            self._loss_part_count += 1
            if state.total_steps % eval_steps == 0:
                logging.info(f"Train loss: {train_loss / eval_steps:.6f}")
                train_loss = 0.0
                self.validate()
            if state.stop:
                break

    def fit(self, train_loader: Iterable, valid_loader: Iterable) -> None:
        """Train up to ``epochs`` epochs with early stopping, then restore the best weights."""
        self.valid_loader = valid_loader
        self.state = TrainState(best_metric=self._worst())
        self.best_weights = None
        self._call("on_fit_start", train_loader)
        logging.info(f"Start training: {len(train_loader)} batches/epoch")
        for epoch in range(self.state.start_epoch, self.config.epochs):
            self.state.epoch = epoch
            logging.info(f"************ Epoch={epoch + 1} start ************")
            self.train_epoch(train_loader)
            self.state.epochs_done = epoch + 1
            self._call("on_epoch_end", epoch)
            if self.state.stop:
                break
            logging.info(f"************ Epoch={epoch + 1} end ************")
        logging.info("Training finished.")
        self.restore_best()
        self._call("on_fit_end")

    # -------------------------------------------------------------- validation
    def validate(self) -> None:
        """Evaluate the monitored metrics on the validation split; checkpoint and early-stop."""
        if self._loss_part_count and len(self._loss_part_sums) > 1:
            logging.info("Train loss parts: " + " - ".join(
                f"{k}: {v / self._loss_part_count:.6f}" for k, v in self._loss_part_sums.items()))
        self._loss_part_sums, self._loss_part_count = {}, 0
        logging.info(f"Evaluation @epoch {self.state.epoch + 1} - batch {self.state.batch + 1}: ")
        y_true, y_pred, group_id = self.predictions(self.valid_loader)
        self._call("on_validation_predictions", y_pred)
        logs = self._metrics(y_true, y_pred, group_id, self.monitor.get_metrics())
        self.checkpoint_and_earlystop(logs)
        self.model.train()

    def checkpoint_and_earlystop(self, logs: Dict[str, float], min_delta: float = 1e-6) -> None:
        """FuxiCTR's decision on the monitored value: a better one is kept (checkpoint), a
        worse one counts towards early stopping and (``reduce_lr_on_plateau``) divides the
        learning rate by 10. Distributed: rank 0 decides and every rank takes its decision."""
        state, keep = self.state, False
        if self.is_main:
            value = self.monitor.get_value(logs)
            mode = self.config.monitor_mode
            if (mode == "min" and value > state.best_metric - min_delta) or \
                    (mode == "max" and value < state.best_metric + min_delta):
                state.stopping_steps += 1
                logging.info(f"Monitor({mode})={value:.6f} STOP!")
                if self.config.reduce_lr_on_plateau:
                    logging.info(f"Reduce learning rate on plateau: {self.decay_learning_rate():.6f}")
            else:
                state.stopping_steps = 0
                state.best_metric = value
                if self.config.save_best_only:
                    logging.info(f"Save best model: monitor({mode})={value:.6f}")
                    keep = True
            if state.stopping_steps >= self.config.early_stop_patience:
                state.stop = True
                logging.info(f"********* Epoch={state.epoch + 1} early stop *********")
            if not self.config.save_best_only:
                keep = True
        if self.context is not None:
            decision = zoo_dist.broadcast_object({
                "stop": state.stop, "best": state.best_metric, "steps": state.stopping_steps, "keep": keep,
                "lr": [group["lr"] for group in self.optimizer.param_groups]})
            state.stop, state.best_metric, state.stopping_steps = decision["stop"], decision["best"], decision["steps"]
            keep = decision["keep"]
            for group, lr in zip(self.optimizer.param_groups, decision["lr"]):
                group["lr"] = lr
        if keep:
            self.keep_weights()

    def decay_learning_rate(self, factor: float = 0.1, min_lr: float = 1e-6) -> float:
        """Multiply every parameter group's learning rate by ``factor``, not below ``min_lr``
        (FuxiCTR's ``lr_decay``); returns the new rate."""
        reduced = min_lr
        for group in self.optimizer.param_groups:
            reduced = max(group["lr"] * factor, min_lr)
            group["lr"] = reduced
        return reduced

    def keep_weights(self) -> None:
        """Keep the model's current weights as this fit's result: a copy in memory on every
        rank, and the checkpoint file (written atomically by rank 0)."""
        self.best_weights = {name: value.detach().to("cpu", copy=True)
                             for name, value in self.model.state_dict().items()}
        if self.is_main:
            torch_save_atomic(self.best_weights, self.checkpoint)

    def restore_best(self) -> None:
        """Load the weights :meth:`keep_weights` kept last: this fit's own, from memory, whatever
        another process may have written to any file since."""
        if self.best_weights is None:
            raise ConfigError(f"eval_steps={self.config.eval_steps}: no validation ran in this fit's "
                              f"{self.state.total_steps} training steps, so it has no best weights to restore")
        logging.info(f"Load best model: {self.checkpoint}")
        self.model.load_state_dict(self.best_weights)

    # -------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predictions(self, loader: Iterable) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """(labels, predictions, group ids or None) of every row of ``loader``, in its order,
        as float64. Distributed: batch i is scored by rank i mod world_size and the parts are
        gathered back into batch order on every rank, so the arrays equal one process's."""
        model = self.model
        has_group = model.feature_map.group_id is not None
        rank, world = (0, 1) if self.context is None else (self.context.rank, self.context.world_size)
        model.eval()
        if self.context is None and self.config.verbose > 0:
            loader = tqdm(loader, disable=False, file=sys.stdout)
        parts = []
        for index, batch in enumerate(loader):
            if index % world != rank:
                continue
            with self.autocast():
                y_pred = model.forward(batch)["y_pred"]
            y_pred = y_pred.float().cpu().numpy().reshape(-1)
            y_true = model.get_labels(batch).cpu().numpy().reshape(-1)
            group = model.get_group_id(batch).numpy().reshape(-1) if has_group else None
            parts.append((index, y_pred, y_true, group))
        if self.context is not None:
            parts = sorted((p for rank_parts in zoo_dist.gather_objects(parts) for p in rank_parts),
                           key=lambda p: p[0])
        y_pred = np.concatenate([p[1] for p in parts]).astype(np.float64)
        y_true = np.concatenate([p[2] for p in parts]).astype(np.float64)
        group_id = np.concatenate([p[3] for p in parts]) if has_group else None
        return y_true, y_pred, group_id

    def _metrics(self, y_true, y_pred, group_id, metrics: Sequence[str]) -> Dict[str, float]:
        logs = self.model.evaluate_metrics(y_true, y_pred, metrics, group_id)
        logging.info("[Metrics] " + " - ".join(f"{k}: {v:.6f}" for k, v in logs.items()))
        return logs

    def evaluate(self, loader: Iterable, metrics: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """The metrics (default the model's ``metrics``) of ``loader``'s rows."""
        y_true, y_pred, group_id = self.predictions(loader)
        return self._metrics(y_true, y_pred, group_id, metrics or self.model.validation_metrics)
