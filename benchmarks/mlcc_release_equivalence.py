"""MLCC and MC-MLCC against the authors' release (MLCCModel): same weights, same eval outputs.

    git clone https://github.com/shishishu/MLCC /tmp/mlcc_release      # outside this repository
    git -C /tmp/mlcc_release checkout b8ed4bb
    python -m benchmarks.mlcc_release_equivalence --release-dir /tmp/mlcc_release

The release's ``models/mlcc.py`` (plain torch) and its ``configs/mlcc_<dataset>/*.yaml`` are read
from ``--release-dir`` at run time (nothing of them is kept in this repository). For every
released config that one of our configs reproduces (``RELEASE_CONFIGS``) the script builds the
release's ``MLCCModel`` as its ``scripts/train.py`` does (its config's ``model`` keys, its number
of fields per dataset: Criteo 39, Avazu 22, TaobaoAds 17; its own initialisation) with
``hash_size`` = the vocabulary ``--vocab`` instead of 10^6 (50 by default: the release's
``xavier_uniform_`` embeddings then have std sqrt(2 / (50 + E)), 0.15-0.18, so that the
products of the dynamic MLPs weigh in y as much as the embeddings themselves), and ours from
``config/model_config/{MLCC,MCMLCC}.yaml`` on a FeatureMap of as many categorical fields. It
copies every release weight into ours (every element of ours written exactly once, equal
counts; LC's input rows permuted: the release puts all channels' dynamic-MLP outputs first and
the full embedding last, ours puts each channel's X_s at the head of its C_s) and compares
eval-mode outputs (sigmoid of the release's logit, our y_pred) in float32 on one random batch;
then again after adding N(0, 0.1^2) to every release parameter that initialisation leaves
constant (the SE and DNN biases). Beside them: the initial std of LC (release / ours, before the
copy) and of the embeddings (the release's on its 10^6-row table, ours with the YAML's
``embedding_initializer``). One markdown table row per config; the exit status is 1 when any
max |dy| exceeds ``--tolerance``.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from typing import Dict

import torch
import yaml
from torch import nn

from benchmarks.releases import (ReleaseError, WeightCopy, load_module, load_release_module, markdown_header,
                                 markdown_row, max_abs_diff, perturb_constant_parameters, release_parser)
from benchmarks.training_speed import headline_configs
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs

RELEASE_CHECK = True   # needs --release-dir: tests/test_benchmarks_smoke.py checks only that it asks for one
RELEASE_COMMIT = "b8ed4bb"
CHECKOUT = f"a checkout of github.com/shishishu/MLCC at {RELEASE_COMMIT}"
RELEASE_FILE = os.path.join("models", "mlcc.py")
MODULE_NAME = "mlcc_release_models_mlcc"
# Our expid -> the released config it reproduces.
RELEASE_CONFIGS: Dict[str, str] = {
    f"{prefix}_{ours}{suffix}": f"configs/mlcc_{theirs}/{config}.yaml"
    for ours, theirs in (("criteo", "criteo"), ("avazu", "avazu"), ("taobaoad", "taobaoads"))
    for prefix, suffix, config in (("MLCC", "", "mlcc"), ("MCMLCC", "_S2", "mc-mlcc-s2"),
                                   ("MCMLCC", "_S3", "mc-mlcc-s3"), ("MCMLCC", "_S4", "mc-mlcc-s4"))
}
# The release's scripts/train.py: fields per dataset (every field hashed into its own table) and
# its MLCCModel arguments from the config's ``model`` keys.
RELEASE_FIELDS = {"criteo": 39, "avazu": 22, "taobaoads": 17}
RELEASE_KEYS = {"embedding_dim_total": "embedding_dim_total", "embedding_dim_block": "embedding_dim_block",
                "hidden_dims": "deep_hidden_dims", "head_num": "head_num", "dmlp_dim_list": "dmlp_dim_list",
                "dmlp_dim_concat": "dmlp_dim_concat", "emb_size2": "emb_size2", "dropout": "dropout"}
PERTURBATION_STD = 0.1
TOLERANCE = 1e-6   # float32: a few rounding steps of y near 0.5 (one step is 6e-8)


def release_config(release_dir: str, expid: str) -> dict:
    """The released config (``configs/mlcc_<dataset>/<name>.yaml``) that our ``expid`` reproduces."""
    if expid not in RELEASE_CONFIGS:
        raise ReleaseError(f"expid {expid!r} reproduces no released config; those that do: {sorted(RELEASE_CONFIGS)}")
    path = os.path.join(release_dir, RELEASE_CONFIGS[expid])
    if not os.path.isfile(path):
        raise ReleaseError(f"--release-dir {release_dir!r}: no {RELEASE_CONFIGS[expid]} (expected {CHECKOUT})")
    with open(path) as fd:
        return yaml.safe_load(fd)


def build_release_model(release_dir: str, expid: str, hash_size: int) -> nn.Module:
    """The release's ``MLCCModel`` at the released config that our ``expid`` reproduces.

    Built as the release's ``scripts/train.py`` builds it (its number of fields for the
    config's dataset, the config's ``model`` keys), with ``hash_size`` rows per field table;
    the caller seeds torch before. Its input is (B, fields) ids, its output (B, 1) logits.

    Raises:
        ReleaseError: ``release_dir`` is no such checkout or ``expid`` reproduces no released config.
    """
    module = load_module(release_dir, RELEASE_FILE, MODULE_NAME, CHECKOUT)
    config = release_config(release_dir, expid)
    model = config["model"]
    return module.MLCCModel(num_features=RELEASE_FIELDS[config["data"]["dataset"]],
                            deep_activation=model.get("deep_activation", "relu"), hash_size=hash_size,
                            **{ours: model[theirs] for ours, theirs in RELEASE_KEYS.items()})


@functools.lru_cache(maxsize=None)
def release_embedding_std(release_dir: str, width: int, hash_size: int) -> float:
    """The std of the release's initial (``hash_size``, ``width``) embedding table (a two-field
    ``MLCCModel`` of that width, initialised by the release)."""
    module = load_module(release_dir, RELEASE_FILE, MODULE_NAME, CHECKOUT)
    two_fields = module.MLCCModel(num_features=2, embedding_dim_total=width, embedding_dim_block=width,
                                  hidden_dims=[1], head_num=1, dmlp_dim_list=[1], emb_size2=1, hash_size=hash_size)
    return two_fields.embeddings[0].weight.std().item()


def lc_row_permutation(ours: nn.Module, release_rows: int) -> torch.Tensor:
    """perm with our LC input row i = the release's row perm[i].

    Ours: C = [X_1, O_1, ..., X_S, O_S] (each C_s = [X_s (E), O_s (H * sum e_kept)]);
    the release: [O_1, ..., O_S, X_1 .. X_S] (the full S*E embedding last).
    """
    num_channels, channel_dim, interwoven = ours.num_channels, ours.channel_dim, ours.cross.output_dim
    if not ours.cross.keep_original:
        raise ReleaseError("the release always appends the original tokens (0 in dmlp_dim_concat)")
    crossed = interwoven - channel_dim                       # H * sum e_kept per channel
    perm = []
    for s in range(num_channels):
        perm += range(num_channels * crossed + s * channel_dim, num_channels * crossed + (s + 1) * channel_dim)
        perm += range(s * crossed, (s + 1) * crossed)
    if sorted(perm) != list(range(release_rows)):
        raise ReleaseError(f"LC rows: ours {len(perm)} (S={num_channels}, L={interwoven}), the release {release_rows}")
    return torch.tensor(perm)


def linear_names(module: nn.Module, prefix: str):
    """The names of the nn.Linear layers in ``module``, in order."""
    return [f"{prefix}{name}" for name, layer in module.named_modules() if isinstance(layer, nn.Linear)]


def copy_weights(release: nn.Module, ours: nn.Module, feature_names) -> int:
    """Every release weight into ours; the number of values copied (each of ours written once)."""
    copy = WeightCopy(release, ours)
    for index, name in enumerate(feature_names):
        copy.copy(f"embeddings.{index}.weight", f"embedding_layer.embedding_layer.embedding_layers.{name}.weight")
    for s in range(ours.num_channels):
        copy.copy(f"mlcc.compress_l1_list.{s}", "global_compressor.weight", (s,) if ours.num_channels > 1 else ())
    perm = lc_row_permutation(ours, release.mlcc.compress_l2.shape[1])
    copy.copy("mlcc.compress_l2", "local_compressor.weight", transform=lambda w: w[:, perm])
    pairs = [(linear_names(release.mlcc.se_dense, "mlcc.se_dense."), linear_names(ours.squeeze_excitation,
                                                                                "squeeze_excitation.")),
             (linear_names(release.dnn, "dnn.") + ["output_layer"], linear_names(ours.dnn, "dnn."))]
    for release_names, our_names in pairs:
        for release_name, our_name in zip(release_names, our_names, strict=True):
            copy.copy(f"{release_name}.weight", f"{our_name}.weight")
            copy.copy(f"{release_name}.bias", f"{our_name}.bias")
    return copy.finish()


def compare(release_dir: str, expid: str, vocab: int, batch_size: int, seed: int, work_dir: str) -> Dict:
    """Build both models, copy the weights, compare eval-mode outputs at init and with the
    release's constant parameters perturbed."""
    config = release_config(release_dir, expid)
    num_fields = RELEASE_FIELDS[config["data"]["dataset"]]
    feature_map = make_feature_map(num_categorical=num_fields, num_numeric=0, vocab_size=vocab)
    names = list(feature_map.features)
    torch.manual_seed(seed)
    release = build_release_model(release_dir, expid, hash_size=feature_map.features[names[0]]["vocab_size"])
    params = headline_configs([expid])[expid]
    torch.manual_seed(seed)
    ours = get_model_class(params["model"])(feature_map, **{**params, **unit_model_kwargs(work_dir)})
    lc_std = (release.mlcc.compress_l2.std().item(), ours.local_compressor.weight.std().item())
    embedding_std = (release_embedding_std(release_dir, config["model"]["embedding_dim_total"],
                                           config["model"]["hash_size"]),
                     torch.cat([ours.embedding_layer.embedding_layer.embedding_layers[name].weight[1:]
                                for name in names]).std().item())   # row 0 is FuxiCTR's padding row
    count = copy_weights(release, ours, names)
    batch = random_batch(feature_map, batch_size=batch_size, seed=seed)
    ids = torch.stack([batch[name] for name in names], dim=1)   # (B, N), the release's input
    release.eval(), ours.eval()

    def outputs():
        with torch.no_grad():
            return torch.sigmoid(release(ids)), ours(batch)["y_pred"]

    y_release, y_ours = outputs()
    perturbed = perturb_constant_parameters(release, PERTURBATION_STD, seed)
    copy_weights(release, ours, names)
    y_release_p, y_ours_p = outputs()
    return {"expid": expid, "release_config": RELEASE_CONFIGS[expid], "fields": num_fields, "params": count,
            "max_abs_dy": max_abs_diff(y_release, y_ours), "max_abs_dy_perturbed": max_abs_diff(y_release_p, y_ours_p),
            "perturbed_tensors": perturbed, "y_std": y_release.std().item(),
            "y_std_perturbed": y_release_p.std().item(),
            "lc_std": lc_std, "embedding_std": embedding_std}


def main(argv=None) -> int:
    parser = release_parser(__doc__, CHECKOUT, vocab=50, tolerance=TOLERANCE)
    parser.add_argument("--expids", nargs="+", choices=sorted(RELEASE_CONFIGS), metavar="EXPID",
                        help="our expids to compare (default: all of RELEASE_CONFIGS)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_release_module(parser, args.release_dir, RELEASE_FILE, MODULE_NAME, CHECKOUT)
    print(markdown_header(["our expid", "release config", "N", "params", "max abs dy at init",
                           "max abs dy, biases perturbed", "std of y (init / perturbed)",
                           "LC init std release / ours", "embedding init std release / ours"]), flush=True)
    worst = 0.0
    with tempfile.TemporaryDirectory() as work_dir:
        for expid in args.expids or RELEASE_CONFIGS:
            r = compare(args.release_dir, expid, args.vocab, args.batch_size, args.seed, work_dir)
            worst = max(worst, r["max_abs_dy"], r["max_abs_dy_perturbed"])
            print(markdown_row([f"`{expid}`", f"`{r['release_config']}`", r["fields"], f"{r['params']:,}",
                                f"{r['max_abs_dy']:.1e}", f"{r['max_abs_dy_perturbed']:.1e}",
                                f"{r['y_std']:.1e} / {r['y_std_perturbed']:.1e}",
                                "{:.4f} / {:.4f}".format(*r["lc_std"]), "{:.2e} / {:.2e}".format(*r["embedding_std"])]),
                  flush=True)
    print(f"\nworst max abs dy {worst:.1e}, tolerance {args.tolerance:.1e}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
