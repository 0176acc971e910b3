"""Training zoo models: :class:`Trainer` (fit, evaluation, early stopping, checkpoints,
data parallelism), its settings (:class:`TrainingConfig`), the callback protocol
(:mod:`.callbacks`: the divergence check, spectrum monitoring), the resume state of
data-parallel jobs (:mod:`.resume`) and the run folders that keep runs apart
(:mod:`.runs`: checkpoint, resume state and completed-run marker of each run).

Example:
    >>> trainer = Trainer(model, TrainingConfig.from_params(params))
    >>> trainer.fit(train_gen, valid_gen)
    >>> trainer.evaluate(test_gen)
"""

from .callbacks import Callback, DivergenceCheck, TrainingDiverged
from .checkpoint import CheckpointError, load_weights, read_checkpoint, save_weights
from .resume import ResumeState
from .trainer import Trainer, TrainingConfig, TrainState

__all__ = ["Callback", "CheckpointError", "DivergenceCheck", "ResumeState", "Trainer", "TrainingConfig", "TrainState",
           "TrainingDiverged", "load_weights", "read_checkpoint", "save_weights"]
