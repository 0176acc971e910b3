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
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Dict, Iterator, List, Optional

import torch
from fuxictr.pytorch.models import BaseModel


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
        **kwargs: everything else goes to BaseModel (verbose, model_root,
            metrics, monitor, embedding_regularizer, net_regularizer, ...).
    """

    def __init__(self, feature_map, model_id: str = "ZooModel", gpu: int = -1,
                 learning_rate: float = 1e-3, optimizer: str = "adam",
                 loss: str = "binary_crossentropy", **kwargs):
        kwargs.setdefault("verbose", 1)
        kwargs.setdefault("model_root", "./checkpoints/")
        kwargs.setdefault("metrics", ["logloss", "AUC"])
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        self._optimizer_name = optimizer
        self._loss_name = loss
        self._learning_rate = learning_rate
        self.callbacks: List = []
        self._stage_sink: Optional[Dict[str, torch.Tensor]] = None
        self._loss_sums: Dict[str, float] = {}
        self._loss_count = 0

    def finalize_model(self) -> None:
        """Compile the optimizer and loss, initialise weights, move to the device."""
        self.compile(self._optimizer_name, self._loss_name, self._learning_rate)
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
        super().eval_step()

    # --------------------------------------------------------------- callbacks
    def train_epoch(self, data_generator):
        super().train_epoch(data_generator)
        for callback in self.callbacks:
            callback.on_epoch_end(self, self._epoch_index)

    def fit(self, data_generator, epochs=1, validation_data=None, max_gradient_norm=10., **kwargs):
        super().fit(data_generator, epochs=epochs, validation_data=validation_data,
                    max_gradient_norm=max_gradient_norm, **kwargs)
        for callback in self.callbacks:
            callback.on_train_end(self)

    # ------------------------------------------------------------- checkpoints
    def save_weights(self, checkpoint):
        """Write the state dict atomically: a temp file in the same folder, then rename."""
        folder = os.path.dirname(os.path.abspath(checkpoint))
        os.makedirs(folder, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".model")
        os.close(fd)
        try:
            torch.save(self.state_dict(), tmp_path)
            os.replace(tmp_path, checkpoint)
        except BaseException:
            os.unlink(tmp_path)
            raise

    def load_weights(self, checkpoint):
        self.to(self.device)
        state_dict = torch.load(checkpoint, map_location="cpu", weights_only=True)
        self.load_state_dict(state_dict)
