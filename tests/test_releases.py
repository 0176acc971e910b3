"""benchmarks.releases: the release import, the weight-copy bookkeeping and the perturbation that
the release-equivalence checks share (the checks themselves need an authors' checkout)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.releases import (ReleaseError, WeightCopy, load_module, markdown_header, markdown_row,
                                 perturb_constant_parameters)

REPO = Path(__file__).resolve().parents[1]


class Stacked(nn.Module):
    """Two tokens' (2 -> 3) linears stacked as (T, d_in, d_out) weights, as the per-token layers are."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2, 2, 3))
        self.bias = nn.Parameter(torch.zeros(2, 3))


def two_linears() -> nn.Module:
    return nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.Linear(2, 3)})


def test_weight_copy_fills_slices_with_transforms_and_counts_the_values():
    release, ours = two_linears(), Stacked()
    copy = WeightCopy(release, ours)
    for token, name in enumerate(("a", "b")):
        copy.copy(f"{name}.weight", "weight", (token,), torch.t)
        copy.copy(f"{name}.bias", "bias", (token,))
    assert copy.finish() == 2 * (2 * 3 + 3)
    x = torch.randn(5, 2)
    for token, name in enumerate(("a", "b")):
        torch.testing.assert_close(x @ ours.weight[token] + ours.bias[token], release[name](x))


def test_weight_copy_refuses_an_unused_release_parameter_and_an_unwritten_element():
    release, ours = two_linears(), Stacked()
    copy = WeightCopy(release, ours)
    copy.copy("a.weight", "weight", (0,), torch.t)
    copy.copy("a.bias", "bias", (0,))
    copy.copy("b.weight", "weight", (1,), torch.t)
    with pytest.raises(ReleaseError, match=r"not used: \['b.bias'\].*not written: \['bias'\]"):
        copy.finish()


def test_weight_copy_refuses_an_element_written_twice_and_a_shape_mismatch():
    release, ours = two_linears(), Stacked()
    copy = WeightCopy(release, ours)
    copy.copy("a.bias", "bias", (0,))
    copy.copy("b.bias", "bias", (0,))
    with pytest.raises(ReleaseError, match="written twice: \\['bias'\\]"):
        copy.finish()
    with pytest.raises(ReleaseError, match="shapes differ"):
        copy.copy("a.weight", "weight", (0,))            # (3, 2) into (2, 3) without the transpose
    with pytest.raises(ReleaseError, match="no parameter 'c.weight'"):
        copy.copy("c.weight", "weight", (0,))


def test_perturb_constant_parameters_moves_gains_and_biases_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    nn.init.zeros_(model[0].bias)                      # as FuxiCTR's reset_parameters leaves it
    weight = model[0].weight.detach().clone()
    assert perturb_constant_parameters(model, std=0.1, seed=0) == 3   # bias, LayerNorm gain and bias
    assert torch.equal(model[0].weight, weight)
    assert model[0].bias.abs().min() > 0 and not torch.equal(model[1].weight, torch.ones(4))


def test_load_module_imports_a_package_with_relative_imports(tmp_path):
    package = tmp_path / "checkout" / "src"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .model import VALUE\n")
    (package / "model.py").write_text("VALUE = 3\n")
    module = load_module(str(tmp_path / "checkout"), "src", "test_releases_package", "a test checkout")
    assert module.VALUE == 3 and sys.modules["test_releases_package.model"].VALUE == 3


def test_load_module_names_the_missing_file(tmp_path):
    with pytest.raises(ReleaseError, match=r"--release-dir .*: no models/mlcc.py \(expected a checkout of x\)"):
        load_module(str(tmp_path), "models/mlcc.py", "test_releases_missing", "a checkout of x")


def test_a_release_check_with_a_wrong_release_dir_exits_2_naming_it(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.mlcc_release_equivalence", "--release-dir",
                           str(tmp_path)], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no models/mlcc.py" in done.stderr and "Traceback" not in done.stderr


def test_markdown_table_lines():
    assert markdown_header(["a", "b"]) == "| a | b |\n|---|---|"
    assert markdown_row(["x", 1]) == "| x | 1 |"
