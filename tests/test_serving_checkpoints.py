"""Checkpoints: a FuxiCTR AutoInt's state dict loads into the zoo's AutoInt; older zoo checkpoints still load."""

import pytest
import torch
from fuxictr.pytorch.layers import FeatureEmbedding, LogisticRegression, MLP_Block
from torch import nn

from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs
from fuxictr_ext.testing.serving import perturb_parameters

CONFIG = dict(embedding_dim=6, attention_layers=2, num_heads=2, attention_dim=8, use_scale=True, layer_norm=True,
              dnn_hidden_units=[16], use_wide=True)


class ReferenceInteractingLayer(nn.Module):
    """AutoInt's interacting layer with FuxiCTR's parameter names, written out with plain tensor ops."""

    def __init__(self, input_dim, attention_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.W_q = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_k = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_v = nn.Linear(input_dim, attention_dim, bias=False)
        if input_dim != attention_dim:
            self.W_res = nn.Linear(input_dim, attention_dim, bias=False)
        self.layer_norm = nn.LayerNorm(attention_dim)

    def forward(self, x):
        B, T, _ = x.shape
        outputs = []
        for h in range(self.num_heads):
            width = self.W_q.out_features // self.num_heads
            cols = slice(h * width, (h + 1) * width)
            q, k, v = self.W_q(x)[..., cols], self.W_k(x)[..., cols], self.W_v(x)[..., cols]
            weights = torch.softmax(q @ k.transpose(1, 2) / width ** 0.5, dim=-1)   # (B, T, T)
            outputs.append(weights @ v)
        residual = self.W_res(x) if hasattr(self, "W_res") else x
        return torch.relu(self.layer_norm(torch.cat(outputs, dim=-1) + residual))


class ReferenceAutoInt(nn.Module):
    """The module layout of FuxiCTR's AutoInt (embedding_layer, lr_layer, dnn, self_attention, fc)."""

    def __init__(self, feature_map):
        super().__init__()
        D, A = CONFIG["embedding_dim"], CONFIG["attention_dim"]
        self.embedding_layer = FeatureEmbedding(feature_map, D)
        self.lr_layer = LogisticRegression(feature_map, use_bias=False)
        self.dnn = MLP_Block(input_dim=feature_map.num_fields * D, output_dim=1, hidden_units=[16])
        self.self_attention = nn.Sequential(ReferenceInteractingLayer(D, A, 2), ReferenceInteractingLayer(A, A, 2))
        self.fc = nn.Linear(feature_map.num_fields * A, 1)

    def forward(self, X):
        e = self.embedding_layer(X)
        logit = self.fc(self.self_attention(e).flatten(start_dim=1)) + self.dnn(e.flatten(start_dim=1)) \
            + self.lr_layer(X)
        return torch.sigmoid(logit)


@pytest.fixture(scope="module")
def feature_map():
    return make_feature_map(num_numeric=2, num_categorical=5)


def zoo_autoint(feature_map, tmp_path):
    return get_model_class("AutoInt")(feature_map, **CONFIG, **unit_model_kwargs(tmp_path)).eval()


def test_a_fuxictr_autoint_checkpoint_loads(feature_map, tmp_path):
    reference = perturb_parameters(ReferenceAutoInt(feature_map), seed=3).eval()
    model = zoo_autoint(feature_map, tmp_path)
    assert set(model.state_dict()) == set(reference.state_dict())
    checkpoint = tmp_path / "AutoInt.model"
    torch.save(reference.state_dict(), checkpoint)                  # as FuxiCTR's BaseModel.save_weights writes it
    model.load_weights(str(checkpoint))
    batch = random_batch(feature_map, 16, seed=1)
    X = model.get_inputs(batch)
    with torch.no_grad():
        assert (model(batch)["y_pred"] - reference(X)).abs().max() <= 1e-6


def test_checkpoints_with_the_former_residual_name_load(feature_map, tmp_path):
    model = perturb_parameters(zoo_autoint(feature_map, tmp_path), seed=4)
    old = {k.replace("W_res.weight", "residual.weight"): v for k, v in model.state_dict().items()}
    assert "self_attention.0.residual.weight" in old
    checkpoint = tmp_path / "old.model"
    torch.save(old, checkpoint)
    restored = zoo_autoint(feature_map, tmp_path)
    restored.load_weights(str(checkpoint))
    batch = random_batch(feature_map, 8, seed=2)
    with torch.no_grad():
        assert torch.equal(restored(batch)["y_pred"], model(batch)["y_pred"])
    attention = get_model_class("RankAwareAttention")(
        make_feature_map(num_numeric=0, num_categorical=4, sources=["user", "user", "item", "item"]),
        embedding_dim=6, attention_dim=8, **unit_model_kwargs(tmp_path))
    renamed = {k.replace("W_res.weight", "residual.weight"): v for k, v in attention.state_dict().items()}
    assert any(k.endswith("residual.weight") for k in renamed)
    attention.load_state_dict(renamed)                               # strict: every key found


def _bad_checkpoints(model, folder):
    """Checkpoint files a user can end up with: empty, cut short, random bytes, another
    model's shapes, a file that holds something else than a state dict."""
    good = folder / "good.model"
    torch.save(model.state_dict(), good)
    data = good.read_bytes()
    files = {"empty": b"", "truncated": data[:len(data) // 2],
             "random": torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                     dtype=torch.uint8).numpy().tobytes()}
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.model"
        paths[name].write_bytes(content)
    wrong = dict(model.state_dict())
    name = next(iter(wrong))
    wrong[name] = torch.zeros(*(s + 1 for s in wrong[name].shape))
    paths["wrong_shape"] = folder / "wrong_shape.model"
    torch.save(wrong, paths["wrong_shape"])
    paths["not_a_state_dict"] = folder / "list.model"
    torch.save([1, 2, 3], paths["not_a_state_dict"])
    return paths


BAD_CHECKPOINT_MESSAGES = {"empty": "is empty", "truncated": "is truncated",
                           "random": "not a checkpoint written by torch.save", "wrong_shape": "size mismatch",
                           "not_a_state_dict": "not a state dict"}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINT_MESSAGES))
def test_a_bad_checkpoint_is_named(feature_map, tmp_path, case):
    from fuxictr_ext.training import CheckpointError
    model = zoo_autoint(feature_map, tmp_path)
    path = _bad_checkpoints(model, tmp_path)[case]
    with pytest.raises(CheckpointError, match=BAD_CHECKPOINT_MESSAGES[case]) as err:
        model.load_weights(str(path))
    assert str(path) in str(err.value)
