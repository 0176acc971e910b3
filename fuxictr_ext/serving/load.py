"""From a trained checkpoint to a scorer of raw requests: one call, or a command.

The model is rebuilt as ``run_expid.py`` built it (the experiment's merged config,
the processed dataset's ``feature_map.json``, the model class from the registry),
its weights are loaded, and the dataset's fitted FuxiCTR ``FeatureProcessor``
(``feature_processor.pkl`` next to ``feature_map.json``) encodes the requests' raw values.

Example:
    >>> scorer = load_scorer("config", "DLRM_demo_request", path="rank_aware")
    >>> scorer.score([{"context": {"user_id": "17", ...}, "candidates": {"item_id": ["3", "8"], ...}}])
    [[0.12, 0.31]]

Command (scores every request of a JSON file, a list of requests, one line each)::

    python -m fuxictr_ext.serving.load --config config --expid DLRM_demo_request --requests requests.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

import torch

from ..data import load_feature_map
from ..registry import get_model_class
from ..config import ConfigError, load_params
from .encoding import RawFeatureEncoder, RequestError, load_feature_processor
from .scorers import PATHS, Scorer, cast_model

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(config_dir: str, expid: str, checkpoint: Optional[str] = None, gpu: int = -1,
               dtype: Optional[torch.dtype] = None):
    """The trained model of experiment ``expid`` and its merged params.

    Args:
        config_dir: the config folder ``run_expid.py`` trained with.
        expid: the experiment id.
        checkpoint: the weights; default the checkpoint ``run_expid.py`` wrote
            (``<model_root>/<dataset_id>/<expid>.model``).
        gpu: device index, -1 for CPU.
        dtype: cast the model (:func:`~fuxictr_ext.serving.scorers.cast_model`); default as trained.

    Raises:
        ConfigError: an unknown experiment id or dataset id.
        FileNotFoundError: the processed dataset or the checkpoint is missing.
    """
    params, _ = load_params(config_dir, expid)
    model_cls = get_model_class(params["model"]) if "model" in params else None
    if model_cls is None:
        raise ConfigError(f"experiment {expid}: no `model:` key in its config")
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    feature_map_file = os.path.join(data_dir, "feature_map.json")
    if not os.path.isfile(feature_map_file):
        raise FileNotFoundError(f"{feature_map_file}: the processed dataset of {expid} is not built; "
                                f"train it first with python run_expid.py --expid {expid}")
    feature_map = load_feature_map(params)
    params["gpu"] = gpu
    params["verbose"] = 0
    model = model_cls(feature_map, **params)
    checkpoint = checkpoint or model.checkpoint
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint {checkpoint} not found (train with python run_expid.py --expid "
                                f"{expid}, or pass the checkpoint's path)")
    model.load_weights(checkpoint)
    if dtype is not None:
        cast_model(model, dtype)
    return model.eval(), params


def load_scorer(config_dir: str, expid: str, checkpoint: Optional[str] = None, path: str = "rank_aware",
                gpu: int = -1, dtype: Optional[torch.dtype] = None, max_candidates: int = 1024,
                rank_aware_fc: bool = True) -> Scorer:
    """A :class:`~fuxictr_ext.serving.scorers.Scorer` of raw requests for a trained experiment.

    Args:
        config_dir, expid, checkpoint, gpu, dtype: as :func:`load_model`.
        path: ``"vanilla"`` or ``"rank_aware"``.
        max_candidates: the most candidates one request may carry.
        rank_aware_fc: with ``path="rank_aware"``, also split the first FC layer.
    """
    model, params = load_model(config_dir, expid, checkpoint, gpu, dtype)
    scorer = Scorer(model, path, rank_aware_fc=rank_aware_fc)
    processor = load_feature_processor(os.path.join(params["data_root"], params["dataset_id"]))
    scorer.encoder = RawFeatureEncoder(processor, scorer.partition, max_candidates=max_candidates)
    return scorer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fuxictr_ext.serving.load", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="./config/", help="the config folder the model was trained with")
    parser.add_argument("--expid", required=True, help="the experiment id")
    parser.add_argument("--checkpoint", default=None, help="the weights (default: the one run_expid.py wrote)")
    parser.add_argument("--path", choices=PATHS, default="rank_aware")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    parser.add_argument("--gpu", type=int, default=-1)
    parser.add_argument("--requests", required=True,
                        help="a JSON file holding a list of requests ({'context': ..., 'candidates': ...})")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scorer = load_scorer(args.config, args.expid, args.checkpoint, args.path, args.gpu,
                             DTYPES.get(args.dtype))
        with open(args.requests) as fd:
            requests = json.load(fd)
        for scores in scorer.score(requests):
            print(json.dumps(scores))
    except (ConfigError, RequestError, FileNotFoundError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
