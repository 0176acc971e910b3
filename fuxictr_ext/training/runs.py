"""Run folders: every run writes under a path of its own, and says when it completed.

A run of experiment ``expid`` writes its checkpoint, its resume state and its spectrum
logs in ``<model_root>/<dataset_id>/<expid>/<fingerprint>-<run_id>/``:

* ``fingerprint`` - :func:`fuxictr_ext.config.config_fingerprint` of the run's settings,
  so runs of different settings never share a file, and the folder says which runs were
  alike;
* ``run_id`` - two runs of identical settings can still run at once (a tuner restarted
  by hand, the same command in two shells), so the fingerprint alone does not make a
  path unique: a plain process takes ``<UTC time>-<pid>-<random>``; a torchrun job takes
  ``job-<hash of the job's id>``, which every restart of its workers shares, so a
  restarted worker finds the job's resume state (and only that job's).

The runner writes ``completed.json`` into the folder last, atomically, once the run's
results are written: a folder without it is a partial run (killed, diverged, still
running), whose checkpoint :func:`latest_completed_run` never serves.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import List, Optional

from .. import distributed as zoo_dist
from ..atomic import write_text_atomic
from ..config import ZooError

COMPLETED = "completed.json"


class RunNotFound(ZooError, FileNotFoundError):
    """No completed run to load: none was trained, or the only ones are partial (named). A zoo
    user error (one line, exit status 2) and a FileNotFoundError (what a missing checkpoint is)."""


def new_run_id(context: Optional[zoo_dist.DistContext] = None) -> str:
    """This run's id: ``<UTC time>-<pid>-<random>`` for one process; under torchrun
    ``job-<hash of the job's id>`` (the same on every rank and every restart of the job)."""
    if context is None:
        return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}-{secrets.token_hex(3)}"
    job = zoo_dist.broadcast_object(zoo_dist.job_id())
    return "job-" + hashlib.sha256(job.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RunDir:
    """The folder of one run of experiment ``expid``."""

    path: str
    expid: str

    @classmethod
    def of(cls, model_root: str, dataset_id: str, expid: str, fingerprint: str, run_id: str) -> "RunDir":
        """The folder ``<model_root>/<dataset_id>/<expid>/<fingerprint>-<run_id>`` (made by the
        first file written into it)."""
        return cls(os.path.abspath(os.path.join(model_root, dataset_id, expid, f"{fingerprint}-{run_id}")), expid)

    @property
    def checkpoint(self) -> str:
        return os.path.join(self.path, f"{self.expid}.model")

    @property
    def marker(self) -> str:
        return os.path.join(self.path, COMPLETED)

    def is_complete(self) -> bool:
        return os.path.isfile(self.marker)

    def complete(self, record: dict) -> None:
        """Write the completed-run marker (atomically; the last file of the run)."""
        write_text_atomic(self.marker, json.dumps(record, indent=1, sort_keys=True, default=str))

    def read_marker(self) -> dict:
        with open(self.marker) as fd:
            return json.load(fd)

    def discard_checkpoint(self) -> None:
        """Remove the checkpoint and resume state (a diverged run leaves nothing to serve)."""
        for path in (self.checkpoint, self.checkpoint + ".resume"):
            if os.path.isfile(path):
                os.unlink(path)


def runs_of(model_root: str, dataset_id: str, expid: str) -> List[RunDir]:
    """Every run folder of ``expid`` (complete or not)."""
    pattern = os.path.join(os.path.abspath(model_root), dataset_id, glob.escape(expid), "*")
    return [RunDir(path, expid) for path in sorted(glob.glob(pattern)) if os.path.isdir(path)]


def latest_completed_run(model_root: str, dataset_id: str, expid: str) -> RunDir:
    """The completed run of ``expid`` that finished last.

    Raises:
        RunNotFound: no completed run; the message names the partial runs' folders, or a
            checkpoint of the layout before run folders (to be passed explicitly).
    """
    runs = runs_of(model_root, dataset_id, expid)
    completed = [run for run in runs if run.is_complete()]
    if completed:
        return max(completed, key=lambda run: (run.read_marker().get("finished_at", 0.0), run.path))
    where = os.path.join(os.path.abspath(model_root), dataset_id, expid)
    if runs:
        partial = ", ".join(run.path for run in runs)
        raise RunNotFound(f"no completed run of {expid} in {where}: {partial} did not complete (killed "
                          f"during training, diverged or still running; it has no {COMPLETED}). Train "
                          f"{expid} to the end, or pass a checkpoint's path explicitly")
    legacy = os.path.join(os.path.abspath(model_root), dataset_id, f"{expid}.model")
    if os.path.isfile(legacy):
        raise RunNotFound(f"no run of {expid} in {where}; {legacy} was written before runs had folders, and "
                          f"whether its run completed is unknown: pass it explicitly to load it")
    raise RunNotFound(f"no trained run of {expid} in {where}: train it first "
                      f"(python run_expid.py --expid {expid}), or pass a checkpoint's path")
