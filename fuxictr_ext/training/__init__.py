"""Training zoo models: :class:`Trainer` (fit, evaluation, early stopping, checkpoints,
data parallelism), its settings (:class:`TrainingConfig`), the callback protocol
(:mod:`.callbacks`: the divergence check, spectrum monitoring) and the resume state of
data-parallel jobs (:mod:`.resume`).

Example:
    >>> trainer = Trainer(model, TrainingConfig.from_params(params))
    >>> trainer.fit(train_gen, valid_gen)
    >>> trainer.evaluate(test_gen)
"""

from .callbacks import Callback, DivergenceCheck, TrainingDiverged
from .checkpoint import load_weights, save_weights
from .resume import ResumeState
from .trainer import Trainer, TrainingConfig, TrainState

__all__ = ["Callback", "DivergenceCheck", "ResumeState", "Trainer", "TrainingConfig", "TrainState",
           "TrainingDiverged", "load_weights", "save_weights"]
