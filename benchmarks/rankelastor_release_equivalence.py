"""RankElastor and RankMixer against the authors' release (UniMixer): same weights, same eval outputs.

    git clone https://github.com/vasile-paskardlgm/RankElastor /tmp/rankelastor_release   # outside this repository
    git -C /tmp/rankelastor_release checkout 68e5f29
    python -m benchmarks.rankelastor_release_equivalence --release-dir /tmp/rankelastor_release

The release's package ``src/`` (FuxiCTR model ``UniMixer``) and its ``config/model_config.yaml``
are read from ``--release-dir`` at run time (nothing of them is kept in this repository). For
every released expid that one of our configs reproduces (``RELEASE_EXPIDS``) the script builds
the release's ``UniMixer`` from its own config (FuxiCTR ``BaseModel``, its own
``reset_parameters``) and ours from ``config/model_config/{RankElastor,RankMixer}.yaml`` on one
FeatureMap (Criteo-shaped: 13 numeric + 26 categorical fields; Avazu-shaped: 24 categorical;
vocabulary ``--vocab``), copies every release weight into ours (the T per-token
``nn.Sequential`` P-FFNs into our stacked (T, d_in, d_out) weights; the release ``SwiGLU``'s
``fc_lift1``, ``fc_lift2``, ``skip2``, ``skip1`` into the column blocks [W_1 | W_2 | S | R] of
our fused projection; every element of ours written exactly once, equal counts), and compares
eval-mode y_pred in float32 on one random batch. It then adds N(0, 0.1^2) to every release
parameter that initialisation leaves constant (norm gains at 1, biases at 0), copies again and
compares again, so that the mapping of those is checked too. One markdown table row per config;
the exit status is 1 when any max |dy| exceeds ``--tolerance``.

:func:`build_release_model` builds the release's model for one of our expids (for other
benchmarks that run the release beside ours).
"""

from __future__ import annotations

import argparse
import contextlib
import copy as copy_module
import io
import os
import re
import sys
import tempfile
from typing import Dict, Iterator, Optional, Tuple

import torch
import yaml
from fuxictr.utils import load_model_config
from torch import nn

from benchmarks.releases import (ReleaseError, WeightCopy, load_module, load_release_module, markdown_header,
                                 markdown_row, max_abs_diff, perturb_constant_parameters, release_parser)
from benchmarks.training_speed import headline_configs
from fuxictr_ext.layers.token_mixing import PerTokenGLU, PerTokenLinear, PerTokenRMSNorm, PerTokenTiedGLU
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs

RELEASE_CHECK = True   # needs --release-dir: tests/test_benchmarks_smoke.py checks only that it asks for one
RELEASE_COMMIT = "68e5f29"
CHECKOUT = f"a checkout of github.com/vasile-paskardlgm/RankElastor at {RELEASE_COMMIT}"
RELEASE_PACKAGE = "src"
RELEASE_CONFIG = "config"
MODULE_NAME = "rankelastor_release_src"
# The release's expid -> ours that reproduces it (our _criteo_v4 = _criteo_L2, _avazu_dim_64_v7 = _avazu_dim_64).
RELEASE_EXPIDS: Dict[str, str] = {
    "UniMixer_criteo_dim_10": "RankElastor_criteo_dim_10",
    "UniMixer_criteo_dim_20": "RankElastor_criteo",
    **{f"UniMixer_criteo_dim_20_v{i}": f"RankElastor_criteo_v{i}" for i in range(1, 8)},
    "UniMixer_criteo_dim_20_fast": "RankElastor_criteo_wo_full_mixing",
    "UniMixer_criteo_dim_20_base": "RankMixer_criteo",
    "UniMixer_avazu_dim_16": "RankElastor_avazu",
    "UniMixer_avazu_dim_32": "RankElastor_avazu_dim_32",
    "UniMixer_avazu_dim_64": "RankElastor_avazu_dim_64",
    **{f"UniMixer_avazu_dim_64_v{i}": f"RankElastor_avazu_dim_64_v{i}" for i in range(1, 8)},
    "UniMixer_avazu_dim_64_fast": "RankElastor_avazu_dim_64_fast",
    "UniMixer_avazu_dim_64_base": "RankMixer_avazu_dim_64",
}
# Release parameter-name prefixes inside one UniMixer_layer -> ours inside one TokenMixingBlock
# (the P-FFN is mapped token by token, see copy_ffn).
LAYER_NAMES = [(r"token_mixing\.(cross|permutation)_mixing\.", "mixing.mix."),
               (r"token_mixing\.(pre|l)_norm\.gamma", "mixing.norm.weight"),   # RMSNorm over vec X
               (r"token_mixing\.(l_norm|layer_norm)\.", "mixing_norm."),         # LayerNorm on the output
               (r"layer_norm1\.gamma", "token_norm.weight")]
PERTURBATION_STD = 0.1
TOLERANCE = 1e-5   # float32: y = sigmoid(...) near 0.5 differs by summation order, ~1e-6 on these models


def release_expid(expid: str) -> str:
    """The released expid that our ``expid`` reproduces (``RELEASE_EXPIDS``)."""
    for release, ours in RELEASE_EXPIDS.items():
        if ours == expid:
            return release
    raise ReleaseError(f"expid {expid!r} reproduces no released config; those that do: "
                       f"{sorted(RELEASE_EXPIDS.values())}")


def build_release_model(release_dir: str, expid: str, feature_map, **overrides) -> nn.Module:
    """The release's ``UniMixer`` at the released config that our ``expid`` reproduces.

    Imports the release's ``src`` package from ``release_dir`` and builds ``UniMixer`` from its
    ``config/model_config.yaml`` entry ``release_expid(expid)`` as the release's
    ``run_expid.py`` does (``model_class(feature_map, **params)``), with its own
    initialisation; the caller seeds torch before. ``feature_map`` is not changed (a copy gets
    the ``default_emb_dim`` that FuxiCTR's ``FeatureMap.load`` would set).

    Args:
        release_dir: a checkout of github.com/vasile-paskardlgm/RankElastor (``--release-dir``).
        expid: one of our expids in ``RELEASE_EXPIDS`` (e.g. ``RankElastor_criteo``, ``RankMixer_criteo``).
        feature_map: the FeatureMap both models are built on.
        **overrides: release params to replace; by default ``gpu=-1``, ``verbose=0`` and
            ``model_root`` a temporary folder (nothing is written there at build time).

    Returns:
        the release's model (a FuxiCTR ``BaseModel``: ``model(batch)["y_pred"]`` (B, 1)).

    Raises:
        ReleaseError: ``release_dir`` is no such checkout or ``expid`` reproduces no released config.

    Example:
        >>> torch.manual_seed(0)
        >>> release = build_release_model("/tmp/rankelastor_release", "RankElastor_criteo", feature_map)
    """
    module = load_module(release_dir, RELEASE_PACKAGE, MODULE_NAME, CHECKOUT)
    params = load_model_config(os.path.join(release_dir, RELEASE_CONFIG), release_expid(expid))
    params.update({"gpu": -1, "verbose": 0, "model_root": tempfile.gettempdir(), **overrides})
    feature_map = copy_module.copy(feature_map)
    feature_map.default_emb_dim = params["embedding_dim"]
    with contextlib.redirect_stdout(io.StringIO()):   # the release prints its shapes while it builds
        return getattr(module, params["model"])(feature_map, **params)


def copy_linear(copy: WeightCopy, release: str, ours: str, token: int, columns: slice = slice(None)) -> None:
    """A release ``nn.Linear`` into token ``token`` (and output ``columns``) of a PerTokenLinear."""
    copy.copy(f"{release}.weight", f"{ours}.weight", (token, slice(None), columns), torch.t)
    copy.copy(f"{release}.bias", f"{ours}.bias", (token, columns))


def column_blocks(widths) -> Iterator[slice]:
    """Consecutive column slices of the given widths."""
    start = 0
    for width in widths:
        yield slice(start, start + width)
        start += width


def copy_ffn(copy: WeightCopy, release_ffn: nn.Sequential, release_prefix: str, ours_ffn: nn.Module,
             our_prefix: str, token: int) -> None:
    """One release per-token ``nn.Sequential`` into token ``token`` of our PerTokenFFN (layers
    with parameters paired in order)."""
    release_layers = [(f"{release_prefix}.{i}", m) for i, m in release_ffn.named_children()
                      if next(m.parameters(), None) is not None]
    our_layers = [(f"{our_prefix}.net.{i}", m) for i, m in ours_ffn.net.named_children()
                  if next(m.parameters(), None) is not None]
    if len(release_layers) != len(our_layers):
        raise ReleaseError(f"{release_prefix}: {len(release_layers)} layers with parameters, "
                           f"{our_prefix}: {len(our_layers)}")
    for (release, _), (ours, layer) in zip(release_layers, our_layers):
        if isinstance(layer, PerTokenRMSNorm):
            copy.copy(f"{release}.gamma", f"{ours}.weight", (token,))
        elif isinstance(layer, PerTokenLinear):
            copy_linear(copy, release, ours, token)
        elif isinstance(layer, PerTokenGLU):   # Eq. 4: [W_1 | W_2 | S | R] fused, W_down
            for name, columns in zip(("fc_lift1", "fc_lift2", "skip2", "skip1"), column_blocks(layer.split_sizes)):
                copy_linear(copy, f"{release}.{name}", f"{ours}.in_proj", token, columns)
            copy_linear(copy, f"{release}.fc_reduce", f"{ours}.down_proj", token)
        elif isinstance(layer, PerTokenTiedGLU):   # r = 1: [W_1 | W_2 | R] fused, no W_down
            for name, columns in zip(("fc_lift1", "fc_lift2", "skip1"), column_blocks([layer.dim] * 3)):
                copy_linear(copy, f"{release}.{name}", f"{ours}.in_proj", token, columns)
        else:
            raise ReleaseError(f"{ours}: no release counterpart for {type(layer).__name__}")


def copy_weights(release: nn.Module, ours: nn.Module) -> int:
    """Every release weight into ours; the number of values copied (each of ours written once)."""
    copy = WeightCopy(release, ours)
    for name in copy.release:
        if name.startswith("embedding_layer."):            # both fuxictr FeatureEmbedding
            copy.copy(name, name)
        elif name.startswith("embedding_tokenization."):   # RMSNorm(vec E), then the projection MLP
            ours_name = name.replace("embedding_tokenization.pre_norm.", "tokenizer.input_norm.")
            ours_name = ours_name.replace("embedding_tokenization.mlp.", "tokenizer.project.")
            copy.copy(name, re.sub(r"\.gamma$", ".weight", ours_name))
        else:
            match = re.match(r"backbone\.(\d+)\.(.*)", name)
            for pattern, ours_part in LAYER_NAMES:   # the first pattern that matches
                if match and re.match(pattern, match.group(2)):
                    copy.copy(name, f"blocks.{match.group(1)}." + re.sub("^" + pattern, ours_part, match.group(2)))
                    break
    for index, layer in enumerate(release.backbone):
        for token, ffn in enumerate(layer.token_interaction.parallel_ffns):
            copy_ffn(copy, ffn, f"backbone.{index}.token_interaction.parallel_ffns.{token}",
                     ours.blocks[index].ffn, f"blocks.{index}.ffn", token)
    release_head = [f"pred.{i}" for i, m in release.pred.named_children() if isinstance(m, nn.Linear)]
    our_head = [f"head.mlp.mlp.{i}" for i, m in ours.head.mlp.mlp.named_children() if isinstance(m, nn.Linear)]
    for release_name, our_name in zip(release_head, our_head, strict=True):
        copy.copy(f"{release_name}.weight", f"{our_name}.weight")
        copy.copy(f"{release_name}.bias", f"{our_name}.bias")
    return copy.finish()


def feature_maps(vocab: int) -> Dict[str, object]:
    """Our dataset id -> the FeatureMap both models are built on."""
    return {"criteo_x1": make_feature_map(num_categorical=26, num_numeric=13, vocab_size=vocab),
            "avazu_x4": make_feature_map(num_categorical=24, num_numeric=0, vocab_size=vocab)}


def predict(release: nn.Module, ours: nn.Module, batch) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode y_pred of both models on ``batch``."""
    release.eval(), ours.eval()
    with torch.no_grad():
        return release(batch)["y_pred"], ours(batch)["y_pred"]


def compare(release_dir: str, release_name: str, expid: str, feature_map, batch_size: int, seed: int,
            work_dir: str, ours_overrides: Optional[dict] = None) -> Dict:
    """Build both models, copy the weights, compare eval-mode y_pred at init and with the release's
    constant parameters perturbed. ``ours_overrides`` replace keys of our config (to see what a
    setting changes)."""
    torch.manual_seed(seed)
    release = build_release_model(release_dir, expid, feature_map, model_root=work_dir)
    params = {**headline_configs([expid])[expid], **(ours_overrides or {}), **unit_model_kwargs(work_dir)}
    torch.manual_seed(seed)
    ours = get_model_class(params["model"])(feature_map, **params)
    count = copy_weights(release, ours)
    batch = random_batch(feature_map, batch_size=batch_size, seed=seed)
    y_release, y_ours = predict(release, ours, batch)
    perturbed = perturb_constant_parameters(release, PERTURBATION_STD, seed)
    copy_weights(release, ours)
    y_release_p, y_ours_p = predict(release, ours, batch)
    return {"release_expid": release_name, "expid": expid, "params": count,
            "release_params": sum(p.numel() for p in release.parameters()),
            "max_abs_dy": max_abs_diff(y_release, y_ours), "max_abs_dy_perturbed": max_abs_diff(y_release_p, y_ours_p),
            "perturbed_tensors": perturbed, "y_std": y_release.std().item(),
            "y_std_perturbed": y_release_p.std().item()}


def yaml_mapping(text: str) -> dict:
    """``--ours-overrides``: a YAML mapping of config keys."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise argparse.ArgumentTypeError(f"not YAML: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a YAML mapping of config keys, e.g. '{{norm_eps: null}}'")
    return value


def main(argv=None) -> int:
    parser = release_parser(__doc__, CHECKOUT, vocab=1000, tolerance=TOLERANCE)
    parser.add_argument("--expids", nargs="+", choices=sorted(RELEASE_EXPIDS), metavar="RELEASE_EXPID",
                        help="released expids to compare (default: all of RELEASE_EXPIDS)")
    parser.add_argument("--ours-overrides", type=yaml_mapping, default={}, metavar="YAML",
                        help="keys of our configs to replace, e.g. '{norm_eps: null}' (torch's RMSNorm epsilon)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_release_module(parser, args.release_dir, RELEASE_PACKAGE, MODULE_NAME, CHECKOUT)
    maps = feature_maps(args.vocab)
    print(markdown_header(["release expid", "our expid", "params", "max abs dy at init",
                           "max abs dy, gains and biases perturbed", "std of y (init / perturbed)"]), flush=True)
    worst = 0.0
    with tempfile.TemporaryDirectory() as work_dir:
        for release_name in args.expids or RELEASE_EXPIDS:
            expid = RELEASE_EXPIDS[release_name]
            feature_map = maps[headline_configs([expid])[expid]["dataset_id"]]
            r = compare(args.release_dir, release_name, expid, feature_map, args.batch_size, args.seed, work_dir,
                        args.ours_overrides)
            worst = max(worst, r["max_abs_dy"], r["max_abs_dy_perturbed"])
            print(markdown_row([f"`{release_name}`", f"`{expid}`", f"{r['params']:,}", f"{r['max_abs_dy']:.1e}",
                                f"{r['max_abs_dy_perturbed']:.1e}", f"{r['y_std']:.1e} / {r['y_std_perturbed']:.1e}"]),
                  flush=True)
    print(f"\nworst max abs dy {worst:.1e}, tolerance {args.tolerance:.1e}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
