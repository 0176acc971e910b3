"""The callback protocol of :class:`~fuxictr_ext.training.Trainer`, and the divergence check.

A callback is any object with some of these methods; the trainer calls each one it has,
callbacks in list order (see ``Trainer`` for the list it builds):

* ``on_fit_start(trainer, train_loader)`` - before the first epoch; may move
  ``trainer.state`` on (the resume state does).
* ``on_train_batch_end(trainer, loss)`` - after each optimizer step, with the batch's loss.
* ``on_validation_predictions(trainer, y_pred)`` - during training, the validation
  predictions (every row, gathered across ranks) before their metrics are computed.
* ``on_epoch_end(trainer, epoch)`` - after epoch ``epoch`` (0-based), early-stopped or not.
* ``on_fit_end(trainer)`` - after the best weights are restored.

:class:`Callback` is a base class whose methods do nothing, for callbacks that want
only a few hooks.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import ZooError


class TrainingDiverged(ZooError):
    """Training that left the range where its results mean anything (non-finite loss or
    predictions, or one prediction for every validation row); names learning_rate."""


class Callback:
    """Base class of trainer callbacks: every hook does nothing."""

    def on_fit_start(self, trainer, train_loader) -> None:
        pass

    def on_train_batch_end(self, trainer, loss: torch.Tensor) -> None:
        pass

    def on_validation_predictions(self, trainer, y_pred: np.ndarray) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int) -> None:
        pass

    def on_fit_end(self, trainer) -> None:
        pass


class DivergenceCheck(Callback):
    """Stops training with :class:`TrainingDiverged` when the training loss is not finite,
    or the validation predictions are not finite or one value for every row (a saturated
    sigmoid, after which AUC is 0.5 and nothing is learnt).

    Args:
        learning_rate: the configured learning rate, named in the error.
    """

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate

    def _diverged(self, trainer, what: str) -> TrainingDiverged:
        return TrainingDiverged(f"training diverged at epoch {trainer.state.epoch + 1}, batch "
                                f"{trainer.state.batch + 1}: {what}. Lower learning_rate (it is "
                                f"{self.learning_rate}); no results are written")

    def on_train_batch_end(self, trainer, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise self._diverged(trainer, f"the training loss is {float(loss)}")

    def on_validation_predictions(self, trainer, y_pred: np.ndarray) -> None:
        if not np.isfinite(y_pred).all():
            raise self._diverged(trainer, f"{int((~np.isfinite(y_pred)).sum())} validation predictions "
                                          "are not finite")
        if y_pred.size > 1 and y_pred.min() == y_pred.max():
            raise self._diverged(trainer, f"the model predicts {y_pred[0]:.6g} for all {y_pred.size} "
                                          "validation rows")
