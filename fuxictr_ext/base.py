"""ZooModel: FuxiCTR's BaseModel plus what every model of this zoo declares.

A ZooModel is a ``fuxictr.pytorch.models.BaseModel`` (so FuxiCTR scripts, the
tuner and ``RankDataLoader`` work unchanged) with three additions:

* **stage taps** - ``self.tap("block_0_in", x)`` inside ``forward`` names an
  intermediate tensor; it costs nothing unless a spectrum callback records.
* **auxiliary losses** - ``forward`` may return ``{"aux_losses": {"hsic": t}}``
  next to ``y_pred``; they are added to the task loss (``loss_terms``) and the
  trainer logs every part separately at each evaluation.
* **embedding initializer** - ``embedding_initializer`` for every embedding table.

Training is :class:`fuxictr_ext.training.Trainer`'s (fit, evaluation, early stopping,
atomic checkpoints, divergence checks, data parallelism, resume); FuxiCTR's own
``model.fit(train_gen, validation_data=valid_gen, **params)`` and
``model.evaluate(gen)`` hand over to it with the model's FuxiCTR settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Dict, Iterator, Optional, Tuple

import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import get_initializer

from .training import Trainer, TrainingConfig, TrainingDiverged, load_weights, save_weights

__all__ = ["ZooModel", "TrainingDiverged"]


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
        embedding_initializer: FuxiCTR's initializer string (e.g.
            ``"partial(nn.init.normal_, std=1e-4)"``, FeatureEmbedding's default) for
            every embedding table of the model: each ``FeatureEmbeddingDict`` gets it
            before ``reset_parameters`` runs its ``init_weights`` (padding rows stay
            zero, shared and pretrained tables as FuxiCTR treats them). ``None``
            leaves every table with the initializer its model built it with.
        **kwargs: everything else goes to BaseModel (verbose, model_root,
            metrics, monitor, embedding_regularizer, net_regularizer, ...); the
            settings of a fit among them (monitor, early_stop_patience, ...) are kept in
            ``training_config`` for ``fit`` and ``evaluate``.
    """

    def __init__(self, feature_map, model_id: str = "ZooModel", gpu: int = -1,
                 learning_rate: float = 1e-3, optimizer: str = "adam",
                 loss: str = "binary_crossentropy", embedding_initializer: Optional[str] = None, **kwargs):
        kwargs.setdefault("verbose", 1)
        kwargs.setdefault("model_root", "./checkpoints/")
        kwargs.setdefault("metrics", ["logloss", "AUC"])
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        self._optimizer_name = optimizer
        self._loss_name = loss
        self._learning_rate = learning_rate
        self._embedding_initializer = embedding_initializer
        self._stage_sink: Optional[Dict[str, torch.Tensor]] = None
        self.training_config = TrainingConfig.from_params({**kwargs, "learning_rate": learning_rate})

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
    def loss_terms(self, return_dict: dict, y_true: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The training loss and its named parts: ``task`` (FuxiCTR's ``add_loss``) and each
        of ``return_dict["aux_losses"]``; the loss adds the regularization terms to them."""
        parts = {"task": self.add_loss(return_dict, y_true)}
        parts.update(return_dict.get("aux_losses", {}))
        return sum(parts.values()) + self.regularization_loss(), parts

    def compute_loss(self, return_dict, y_true):
        """FuxiCTR's total loss: task, auxiliary and regularization terms."""
        return self.loss_terms(return_dict, y_true)[0]

    # ------------------------------------------------- FuxiCTR's training API
    def fit(self, data_generator, epochs=1, validation_data=None, max_gradient_norm=10., **kwargs):
        """FuxiCTR's ``fit``: a :class:`~fuxictr_ext.training.Trainer` with this model's settings
        (``kwargs`` are ignored, as FuxiCTR ignores them)."""
        config = dataclasses.replace(self.training_config, epochs=epochs, max_gradient_norm=max_gradient_norm)
        Trainer(self, config).fit(data_generator, validation_data)

    def evaluate(self, data_generator, metrics=None):
        """FuxiCTR's ``evaluate``: the metrics (default the model's ``metrics``) of a loader."""
        return Trainer(self, self.training_config).evaluate(data_generator, metrics)

    def save_weights(self, checkpoint):
        """Write the state dict atomically: a temp file in the same folder, then rename."""
        save_weights(self, checkpoint)

    def load_weights(self, checkpoint):
        load_weights(self, checkpoint)
