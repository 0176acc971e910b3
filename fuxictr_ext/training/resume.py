"""The per-epoch resume state of data-parallel training: a worker that torchrun's agent
restarts goes on from the job's last finished epoch, bit-exactly.

After every epoch rank 0 writes ``<checkpoint>.resume`` (weights, optimizer, early-stop
state and every rank's RNG state, tagged with the job's id, the config's fingerprint and
the world size); a restarted worker loads it, and a resume file of another job, another
config or another world size is never loaded. The file is removed when the fit ends.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Optional

import numpy as np
import torch

from .. import distributed as zoo_dist
from ..atomic import torch_save_atomic
from .callbacks import Callback


def rng_state(device: torch.device) -> dict:
    """This process's Python, NumPy, torch CPU (and CUDA device) RNG states."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


class ResumeState(Callback):
    """Writes the resume state after each epoch and loads it at the start of a restarted fit.

    Args:
        context: the process group of the job (every rank takes part in the saves).
        path: the resume file, ``<checkpoint>.resume``.
        fingerprint: the run's settings hash (``fuxictr_ext.config.config_fingerprint``);
            a resume state is loaded only under the same one. None: the model's class
            name and parameter shapes.
    """

    def __init__(self, context: zoo_dist.DistContext, path: str, fingerprint: Optional[str] = None):
        self.context = context
        self.path = path
        self.fingerprint = fingerprint
        self.job_id: Optional[str] = None

    def _fingerprint(self, model) -> str:
        if self.fingerprint:
            return self.fingerprint
        shapes = [(name, tuple(value.shape)) for name, value in model.state_dict().items()]
        return f"{model.__class__.__name__}:{shapes}"

    def _foreign(self, state: dict, model) -> Optional[str]:
        """Why a resume state is not this job's to continue (None: it is)."""
        if state.get("job_id") != self.job_id:
            return f"written by another job ({state.get('job_id')}, this one is {self.job_id})"
        if state.get("config_fingerprint") != self._fingerprint(model):
            return "written under another config (its settings fingerprint differs from this run's)"
        if state.get("world_size") != self.context.world_size:
            return f"written by {state.get('world_size')} processes, this run has {self.context.world_size}"
        return None

    def on_fit_start(self, trainer, train_loader) -> None:
        """After a torchrun restart: weights, optimizer, early-stop and RNG state as they were
        after this job's last finished epoch, and the loader's epoch (its permutation seed)."""
        self.job_id = zoo_dist.broadcast_object(zoo_dist.job_id())
        if not os.path.isfile(self.path):
            return
        model = trainer.model
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        reason = self._foreign(state, model)
        if reason is not None or zoo_dist.restart_count() == 0:
            logging.warning(f"Not resuming from {self.path}: "
                            f"{reason or 'this is the first attempt of this job'}; starting at epoch 1")
            return
        model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.state.best_metric = state["best_metric"]
        trainer.state.stopping_steps = state["stopping_steps"]
        trainer.state.total_steps = state["total_steps"]
        trainer.state.start_epoch = state["next_epoch"]
        set_rng_state(state["rng"][self.context.rank], model.device)
        if hasattr(train_loader, "epoch"):
            train_loader.epoch = state["next_epoch"]
        logging.warning(f"Restart {zoo_dist.restart_count()}: resuming from {self.path} "
                        f"at epoch {state['next_epoch'] + 1}")

    def on_epoch_end(self, trainer, epoch: int) -> None:
        """After a finished epoch that training goes on from (rank 0 gathers the RNG states and writes)."""
        if trainer.state.stop:
            return
        model = trainer.model
        rng_states = zoo_dist.gather_objects(rng_state(model.device))
        if not self.context.is_main:
            return
        state = {"job_id": self.job_id, "config_fingerprint": self._fingerprint(model),
                 "world_size": self.context.world_size, "next_epoch": epoch + 1, "model": model.state_dict(),
                 "optimizer": trainer.optimizer.state_dict(), "best_metric": float(trainer.state.best_metric),
                 "stopping_steps": trainer.state.stopping_steps, "total_steps": trainer.state.total_steps,
                 "rng": rng_states}
        torch_save_atomic(state, self.path)

    def on_fit_end(self, trainer) -> None:
        if self.context.is_main and os.path.isfile(self.path):
            os.unlink(self.path)
