"""WuKongFuxiCTR against FuxiCTR's own WuKong: same weights, same eval outputs.

    git clone https://github.com/reczoo/FuxiCTR /tmp/fuxictr_release     # outside this repository
    git -C /tmp/fuxictr_release checkout dba7239                          # FuxiCTR 2.3.4's WuKong
    python -m benchmarks.wukong_release_equivalence --release-dir /tmp/fuxictr_release

The release's ``model_zoo/WuKong/src/WuKong.py`` is imported from ``--release-dir`` at run
time (nothing of it is kept in this repository). For every config the script builds the
release's WuKong with the hyper-parameters under its names and ``WuKongFuxiCTR`` with ours on
one FeatureMap (Criteo-shaped: 13 numeric + 26 categorical fields; Avazu-shaped: 24
categorical; vocabulary ``--vocab``), copies every release weight into ours by name (every
parameter of ours assigned once, equal counts and shapes), and compares eval-mode y_pred in
float32 on one random batch. The release has no multi-embedding form, so the SE configs are
compared. It prints one markdown table row per config; the exit status is 1 when any
max |dy| exceeds ``--tolerance``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from typing import Dict

import torch
import yaml

from benchmarks.harness import REPO
from benchmarks.releases import (WeightCopy, load_release_module, markdown_header, markdown_row, max_abs_diff,
                                 release_parser)
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs

RELEASE_CHECK = True   # needs --release-dir: tests/test_benchmarks_smoke.py checks only that it asks for one
RELEASE_FILE = os.path.join("model_zoo", "WuKong", "src", "WuKong.py")
CHECKOUT = "a checkout of reczoo/FuxiCTR at commit dba7239"
MODULE_NAME = "fuxictr_release_wukong"
# our key -> the release's key
RELEASE_KEYS = {"embedding_dim": "embedding_dim", "num_layers": "num_layers", "fm_rank": "project_dim",
                "fmb_hidden_units": "fmb_units", "fmb_dim": "fmb_dim", "compression_dim": "compression_dim",
                "lcb_dropout": "dropout_rate", "mlp_hidden_units": "mlp_hidden_units"}
# The release's two templates (its model_zoo/WuKong/config/model_config.yaml), in our keys.
RELEASE_TEMPLATES = {
    "FuxiCTR 2.3.4 `WuKong_default`": dict(embedding_dim=64, num_layers=8, compression_dim=40,
                                           fmb_hidden_units=[200, 200], fmb_dim=40, fm_rank=8, lcb_dropout=0.2,
                                           mlp_hidden_units=[32, 32]),
    "FuxiCTR 2.3.4 `WuKong_test`": dict(embedding_dim=64, num_layers=4, compression_dim=32,
                                        fmb_hidden_units=[128, 128, 128], fmb_dim=32, fm_rank=24, lcb_dropout=0.2,
                                        mlp_hidden_units=[64]),
}
# release parameter name -> ours (per layer, then the head)
LAYER_NAMES = [(r"fmb\.fm_block\.projection_matrix", "projection"), (r"fmb\.layer_norm\.", "fm_norm."),
               (r"fmb\.mlp\.", "fmb_mlp.mlp."), (r"lcb\.linear\.", "lcb.0."), (r"layer_norm\.", "norm."),
               (r"transform\.", "transform.")]


def our_name(release_name: str) -> str:
    """Our parameter name of a release parameter (SE: one stack, ``layers.i.interactions.0``)."""
    if release_name.startswith("embedding_layer."):
        return "embedding_layer.tables." + release_name[len("embedding_layer."):]
    if release_name.startswith("final_mlp."):
        return "mlp." + release_name[len("final_mlp."):]
    match = re.match(r"interaction_layers\.(\d+)\.(.*)", release_name)
    for pattern, ours in LAYER_NAMES:
        if match and re.match(pattern, match.group(2)):
            return f"layers.{match.group(1)}.interactions.0." + re.sub("^" + pattern, ours, match.group(2))
    raise KeyError(f"release parameter {release_name!r} has no counterpart in WuKongFuxiCTR")


def copy_release_weights(release: torch.nn.Module, ours: torch.nn.Module) -> int:
    """Assign every release parameter to ours; check that each of ours is assigned exactly once."""
    copy = WeightCopy(release, ours)
    for name in copy.release:
        copy.copy(name, our_name(name))
    return copy.finish()


def compare(module, settings: Dict, feature_map, batch_size: int, seed: int, work_dir: str) -> Dict:
    """Build both models, copy the weights, compare eval-mode y_pred on one batch."""
    kwargs = dict(unit_model_kwargs(work_dir), optimizer="adam", loss="binary_crossentropy")
    torch.manual_seed(seed)
    release = module.WuKong(feature_map, **{RELEASE_KEYS[k]: v for k, v in settings.items()}, **kwargs)
    torch.manual_seed(seed)
    ours = get_model_class("WuKongFuxiCTR")(feature_map, **settings, hidden_activations="relu", **kwargs)
    y_std = (release.interaction_layers[0].fmb.fm_block.projection_matrix.std().item(),
             ours.layers[0].interactions[0].projection.std().item())
    count = copy_release_weights(release, ours)
    batch = random_batch(feature_map, batch_size=batch_size, seed=seed)
    release.eval(), ours.eval()
    with torch.no_grad():
        y_release = release(batch)["y_pred"]
        y_ours = ours(batch)["y_pred"]
    return {"params": count, "max_abs_dy": max_abs_diff(y_release, y_ours), "y_std": y_release.std().item(),
            "Y_std_release": y_std[0], "Y_std_ours": y_std[1]}


def configs(vocab: int):
    """(name, our settings, FeatureMap): the SE expids of the RoBlock tables and the release's templates."""
    criteo = make_feature_map(num_categorical=26, num_numeric=13, vocab_size=vocab)
    avazu = make_feature_map(num_categorical=24, num_numeric=0, vocab_size=vocab)
    with open(os.path.join(REPO, "config", "model_config", "WuKong.yaml")) as fd:
        expids = yaml.safe_load(fd)
    for expid, feature_map in (("WuKong_SE_criteo", criteo), ("WuKong_SE_avazu", avazu)):
        yield f"`{expid}`", {k: expids[expid][k] for k in RELEASE_KEYS}, feature_map
    for name, settings in RELEASE_TEMPLATES.items():
        yield f"{name} (Criteo-shaped)", settings, criteo


def main(argv=None) -> int:
    parser = release_parser(__doc__, CHECKOUT, vocab=1000, tolerance=0.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    module = load_release_module(parser, args.release_dir, RELEASE_FILE, MODULE_NAME, CHECKOUT)
    print(markdown_header(["config", "params", "max abs dy", "std of y", "std of Y at init, FuxiCTR / ours"]))
    worst = 0.0
    with tempfile.TemporaryDirectory() as work_dir:
        for name, settings, feature_map in configs(args.vocab):
            r = compare(module, settings, feature_map, args.batch_size, args.seed, work_dir)
            worst = max(worst, r["max_abs_dy"])
            print(markdown_row([name, f"{r['params']:,}", f"{r['max_abs_dy']:.1e}", f"{r['y_std']:.1e}",
                                f"{r['Y_std_release']:.2f} / {r['Y_std_ours']:.2f}"]))
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
