"""Multi-embedding (ME): s embedding tables of size k, each with its own interaction.

Guo et al., "On the Embedding Collapse When Scaling Up Recommendation Models"
(ICML 2024), section 5, and the RoBlock paper's baselines (appendix A.4.2):
a model scaled s times wider either keeps one table of size s*k (single
embedding, SE) or learns s independent tables of size k and gives each its own
copy of the feature-interaction module (multi-embedding, ME):

    SE:  E = Emb_{s*k}(x)                         # (B, F, s*k)
         h = I(E)                                  # (B, O)
    ME:  E_i = Emb^{(i)}_k(x),  i = 1..s           # (B, F, k) each
         h = [I_1(E_1); ...; I_s(E_s)]             # (B, s*O)

followed by the model's own output MLP / logit on ``h``.

Building blocks:

* :class:`MultiEmbedding` - s embedding tables stored stacked in one fuxictr
  ``FeatureEmbedding`` s*k wide (one lookup per field for all sets), as ``(B, s, F, D)``.
* :class:`MultiEmbeddingInteraction` - copy i of an interaction module on
  embedding set i, outputs concatenated on the last axis. Copies with the same
  structure are stored stacked (one ``(s, *shape)`` tensor per parameter) and run
  as one vectorised call (``torch.func.vmap`` over the stacked parameters); others
  (different module types, batch-norm running statistics) run one after another.
* :class:`ConcatEmbeddingSets` - ``(B, s, F, D) -> (B, F, s*D)``, the
  concatenated embedding matrix whose spectrum is measured for ME models.
* :class:`EmbeddingLayout` - the ``embedding_dim`` / ``num_embeddings`` /
  ``embedding_mode`` switch every SE/ME-capable model takes, and the modules it
  implies (embedding, interaction copies, and an MLP whose first hidden layer
  ME runs per set, as Guo et al.'s multi-embedding DNN, NFM, xDeepFM and DCNv2
  do).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel

from ..config import check_arg, check_positive_int

EMBEDDING_MODES = ("single", "multi")
DEFAULT_EMBEDDING_INITIALIZER = "partial(nn.init.normal_, std=1e-4)"


def _widened_feature_map(feature_map, num_embeddings: int):
    """A view of ``feature_map`` whose per-feature ``embedding_dim`` values are s times wider
    (the s stacked tables of a feature are one table s*k wide)."""
    widened = copy.copy(feature_map)
    widened.features = OrderedDict(
        (name, dict(spec, embedding_dim=spec["embedding_dim"] * num_embeddings) if "embedding_dim" in spec
         else spec)
        for name, spec in feature_map.features.items())
    return widened


def _stacking_axis(stacked: torch.Tensor, part: torch.Tensor) -> int:
    """The axis along which s parts of shape ``part`` make ``stacked`` (the widened axis)."""
    for axis, (whole, one) in enumerate(zip(stacked.shape, part.shape)):
        if whole != one:
            return axis
    return stacked.dim() - 1


class MultiEmbedding(nn.Module):
    """s independent embedding tables of size k for every field, stored stacked.

    The s tables of a field are the s column blocks of one fuxictr table s*k wide
    (``FeatureEmbedding`` over the FeatureMap with every width multiplied by s):
    one lookup per field returns all s sets, instead of one per field and set. Block i
    of a field's table is set i's table: its own parameters (gradients never cross
    blocks), initialised as a separate k-wide table would be (the embedding
    initializer per block, padding row 0 kept zero; numeric fields' ``nn.Linear(1, k)``
    and embedding projections xavier-normal per block, as FuxiCTR's BaseModel does
    for a k-wide layer). FuxiCTR's embedding regularizer sees one
    ``FeatureEmbeddingDict`` and sums |w|^p over all entries, the same total as over s
    separate tables. Numeric, categorical and sequence fields and shared embeddings
    work as for a single table; pretrained embeddings with s > 1 are refused (their
    vectors fill one k-wide table). Checkpoints of the former layout (one
    ``FeatureEmbedding`` per set under ``embedding_sets.<i>``) load unchanged.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: k, the size of every table.
        num_embeddings: s, the number of tables.
        embedding_initializer: fuxictr initializer string for the tables.

    Shapes:
        forward(X): dict of (B,) / (B, L) tensors -> (B, s, F, k).

    Example:
        >>> emb = MultiEmbedding(feature_map, embedding_dim=10, num_embeddings=3)
        >>> emb(X).shape                                    # (B, 3, F, 10)
        >>> emb.embedding_set(X, 1).shape                   # (B, F, 10), table 1 alone
    """

    def __init__(self, feature_map, embedding_dim: int, num_embeddings: int,
                 embedding_initializer: str = DEFAULT_EMBEDDING_INITIALIZER):
        super().__init__()
        check_positive_int("embedding_dim", embedding_dim)
        check_positive_int("num_embeddings", num_embeddings)
        if num_embeddings > 1:
            pretrained = [name for name, spec in feature_map.features.items() if "pretrained_emb" in spec]
            if pretrained:
                raise ValueError(f"num_embeddings={num_embeddings}: multi-embedding does not support the "
                                 f"pretrained embeddings of feature(s) {pretrained}; use num_embeddings: 1")
        self.embedding_dim = embedding_dim
        self.num_embeddings = num_embeddings
        self.tables = FeatureEmbedding(_widened_feature_map(feature_map, num_embeddings),
                                       embedding_dim * num_embeddings,
                                       embedding_initializer=embedding_initializer)
        self._register_load_state_dict_pre_hook(self._from_per_set_layout)

    def init_weights(self) -> None:
        """Every k-wide block initialised as a separate table of set i would be (called by
        FuxiCTR's ``BaseModel.reset_parameters`` after its own pass). With s = 1 that pass
        already initialised a k-wide table, so nothing is redrawn (SE and ME with one set
        stay identical for one seed)."""
        if self.num_embeddings == 1:
            return
        k = self.embedding_dim
        embedding_dict = self.tables.embedding_layer
        initializer = embedding_dict.embedding_initializer            # the table's (a model may reset it)
        for name, layer in embedding_dict.embedding_layers.items():
            if "share_embedding" in embedding_dict._feature_map.features[name]:
                continue
            for i in range(self.num_embeddings):
                block = slice(i * k, (i + 1) * k)
                if isinstance(layer, nn.Embedding):
                    rows = slice(1, None) if layer.padding_idx is not None else slice(None)
                    initializer(layer.weight.data[rows, block])
                elif isinstance(layer, nn.Linear):                              # numeric: weight (s*k, 1)
                    nn.init.xavier_normal_(layer.weight.data[block])
        for encoder in embedding_dict.feature_encoders.values():
            if isinstance(encoder, nn.Linear):                                  # projection (s*k, d_in)
                for i in range(self.num_embeddings):
                    nn.init.xavier_normal_(encoder.weight.data[i * k:(i + 1) * k])

    def _from_per_set_layout(self, state_dict, prefix, local_metadata, strict, missing_keys,
                             unexpected_keys, error_msgs) -> None:
        """Load a checkpoint of the per-set layout: ``embedding_sets.<i>.<rest>`` -> the
        blocks of ``tables.<rest>`` (output axis: columns of an embedding table, rows of a
        Linear weight)."""
        old_prefix = prefix + "embedding_sets."
        if not any(key.startswith(old_prefix) for key in state_dict):
            return
        for name, param in self.tables.state_dict().items():
            parts = [state_dict.pop(f"{old_prefix}{i}.{name}") for i in range(self.num_embeddings)]
            state_dict[f"{prefix}tables.{name}"] = torch.cat(parts, dim=_stacking_axis(param, parts[0]))

    def embedding_set(self, X: Dict[str, torch.Tensor], index: int) -> torch.Tensor:
        """Table ``index`` alone: (B, F, k)."""
        k = self.embedding_dim
        return self.tables(X)[..., index * k:(index + 1) * k]

    def forward(self, X: Dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = self.tables(X)                                             # (B, F, s*k): one lookup per field
        sets = stacked.unflatten(-1, (self.num_embeddings, self.embedding_dim)).transpose(1, 2)  # (B, s, F, k)
        return sets.contiguous()      # one copy, as stacking s lookups made; per-set layers may view it


class ConcatEmbeddingSets(nn.Module):
    """Concatenate the embedding sets per field: (B, s, F, D) -> (B, F, s*D).

    This is the embedding matrix of an ME model as the RoBlock paper measures it
    ("we first concatenate the multiple embedding sets", appendix A.4.2).
    """

    def forward(self, sets: torch.Tensor) -> torch.Tensor:
        return sets.transpose(1, 2).flatten(start_dim=2)  # (B, F, s*D)


def _has_running_stats(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
               for m in module.modules())


def _signature(module: nn.Module):
    """What must agree for copies to share one vectorised call."""
    return (type(module), repr(module),
            tuple((n, p.shape, p.requires_grad) for n, p in module.named_parameters()),
            tuple((n, b.shape) for n, b in module.named_buffers()))


def _owner(root: nn.Module, dotted_name: str, create: bool = False):
    """The sub-module of ``root`` holding ``dotted_name`` and the tensor's own name; with
    ``create``, missing containers are added as plain ``nn.Module``s."""
    *path, leaf = dotted_name.split(".")
    for part in path:
        if create and part not in root._modules:
            root.add_module(part, nn.Module())
        root = root._modules[part]
    return root, leaf


def _stacked_state(modules: Sequence[nn.Module]) -> nn.Module:
    """The copies' parameters and buffers stacked, ``(s, *shape)`` each, under the copies'
    own dotted names in a tree of plain ``nn.Module`` containers (so no initialiser that
    dispatches on a layer type, such as BaseModel's for ``nn.Linear``, sees a stacked tensor)."""
    holder = nn.Module()
    named = [dict(m.named_parameters()) for m in modules]
    for name, first in named[0].items():
        owner, leaf = _owner(holder, name, create=True)
        stacked = torch.stack([params[name].detach() for params in named])
        owner.register_parameter(leaf, nn.Parameter(stacked, requires_grad=first.requires_grad))
    named = [dict(m.named_buffers()) for m in modules]
    for name in named[0]:
        source, leaf = _owner(modules[0], name)
        owner, _ = _owner(holder, name, create=True)
        owner.register_buffer(leaf, torch.stack([buffers[name] for buffers in named]),
                              persistent=leaf not in source._non_persistent_buffers_set)
    return holder


class MultiEmbeddingInteraction(nn.Module):
    """Copy i of an interaction module on embedding set i; outputs concatenated.

        out = [I_1(x[:, 1]); ...; I_s(x[:, s])]          # last axis

    Copies of one structure (s > 1 modules of the same type, configuration and
    parameter shapes, no batch-norm running statistics) are stored stacked: every
    parameter and buffer of the copies is one tensor ``(s, *shape)`` under
    ``stacked.<name>`` (``<name>`` as in one copy, e.g. ``stacked.cross_layers.0.weight``),
    and the forward evaluates a template of the copy functionally with them under
    ``torch.func.vmap`` over the set axis (dropout draws an independent mask per copy),
    with nothing re-stacked per call. The modules passed in are copied from, not kept.
    What FuxiCTR's ``BaseModel`` does to an ordinary copy is kept:

    * initialisation: :meth:`init_weights` (called by ``BaseModel.reset_parameters``)
      runs fuxictr's ``BaseModel.reset_parameters`` on each copy in turn (xavier-normal
      ``nn.Linear`` / ``nn.Conv1d`` weights, zero biases, every ``init_weights``), each
      copy with its own draw, written into its slice of the stacked tensors;
    * regularizers: FuxiCTR 2.3.10's net regularizer sums ``|w|^p`` over every
      trainable non-embedding parameter, which over a stacked tensor is the sum over
      the copies;
    * checkpoints of the former per-copy layout (``interactions.<i>.<name>``) load
      through a state-dict pre-hook that stacks them.

    ``interactions[i]`` is copy i as a module of the template's type whose parameters
    (``requires_grad=False``) and buffers are views of slice i of the stacked tensors:
    reading or editing it in place reads or edits copy i; gradients and optimizers act
    on the stacked parameters. Different module types (e.g. DHEN's heterogeneous
    ensembles), one copy, modules that update batch-norm running statistics, or
    modules whose forward vmap cannot trace (``vectorize=False``) are kept as an
    ordinary ``nn.ModuleList`` under ``interactions`` and applied one after another.

    Args:
        modules: the s interaction modules, one per embedding set.
        vectorize: store identical copies stacked and run them in one vmapped call.

    Shapes:
        forward(x): (B, s, *in) -> (B, *out[:-1], sum of the copies' last dims);
        for identical copies with output (B, O): (B, s*O).

    Example:
        >>> inter = MultiEmbeddingInteraction([CrossNetV2(F * k, 3) for _ in range(s)])
        >>> inter(torch.randn(B, s, F * k)).shape           # (B, s*F*k)
        >>> inter.stacked.get_parameter("cross_layers.0.weight").shape   # (s, F*k, F*k)
    """

    def __init__(self, modules: Sequence[nn.Module], vectorize: bool = True):
        super().__init__()
        if len(modules) == 0:
            raise ValueError("MultiEmbeddingInteraction needs at least one module")
        first = _signature(modules[0])
        self.num_copies = len(modules)
        self.vectorized = bool(vectorize and self.num_copies > 1 and not _has_running_stats(modules[0])
                               and all(_signature(m) == first for m in modules[1:]))
        if self.vectorized:
            self.stacked = _stacked_state(modules)
            self._template = (copy.deepcopy(modules[0]).to("meta"),)   # a tuple: not a sub-module
            self._register_load_state_dict_pre_hook(self._from_per_copy_layout)
        else:
            self.interactions = nn.ModuleList(modules)

    @classmethod
    def replicate(cls, factory: Callable[[], nn.Module], num_copies: int,
                  vectorize: bool = True) -> "MultiEmbeddingInteraction":
        """``num_copies`` independent modules from ``factory()``, built in order."""
        check_positive_int("num_embeddings", num_copies)
        return cls([factory() for _ in range(num_copies)], vectorize=vectorize)

    def __len__(self) -> int:
        return self.num_copies

    @property
    def interactions(self) -> nn.ModuleList:
        """The s copies: the modules themselves (loop path) or views of the stacked slices."""
        if not self.vectorized:
            return self._modules["interactions"]
        return nn.ModuleList(self._copy_view(i) for i in range(self.num_copies))

    def _copy_view(self, index: int) -> nn.Module:
        """Copy ``index`` as a module whose parameters and buffers view slice ``index``."""
        view = copy.deepcopy(self._template[0])
        view.train(self.training)
        for name, stacked in self.stacked.named_parameters():
            owner, leaf = _owner(view, name)
            owner._parameters[leaf] = nn.Parameter(stacked.detach()[index], requires_grad=False)
        for name, stacked in self.stacked.named_buffers():
            owner, leaf = _owner(view, name)
            owner._buffers[leaf] = stacked[index]
        return view

    def init_weights(self) -> None:
        """Initialise every stacked copy as FuxiCTR's ``BaseModel.reset_parameters``
        initialises a module, one copy after another (independent draws). The loop path's
        copies are ordinary sub-modules that BaseModel's own pass reaches."""
        if not self.vectorized:
            return
        for index in range(self.num_copies):
            BaseModel.reset_parameters(self._copy_view(index))    # writes into slice ``index``

    def _from_per_copy_layout(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """Load a checkpoint of the per-copy layout: ``interactions.<i>.<name>`` for the s
        copies -> ``stacked.<name>``, the s tensors stacked."""
        old_prefix = prefix + "interactions."
        if not any(key.startswith(old_prefix) for key in state_dict):
            return
        for name in self.stacked.state_dict():
            parts = [state_dict.pop(f"{old_prefix}{i}.{name}") for i in range(self.num_copies)]
            state_dict[f"{prefix}stacked.{name}"] = torch.stack(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_copies:
            raise ValueError(f"expected input (B, {self.num_copies}, ...) with one embedding set "
                             f"per interaction copy, got shape {tuple(x.shape)}")
        if self.vectorized:
            return self._forward_vectorized(x)
        return torch.cat([module(x[:, i]) for i, module in enumerate(self.interactions)], dim=-1)

    def _forward_vectorized(self, x: torch.Tensor) -> torch.Tensor:
        template = self._template[0].train(self.training)
        params = dict(self.stacked.named_parameters())                      # (s, *shape) each
        buffers = dict(self.stacked.named_buffers())

        def apply_copy(copy_params, copy_buffers, x_set):
            return functional_call(template, (copy_params, copy_buffers), (x_set,))

        out = vmap(apply_copy, in_dims=(0, 0, 1), out_dims=-2,
                   randomness="different")(params, buffers, x)  # (B, *out[:-1], s, O)
        return out.flatten(start_dim=-2)  # (B, *out[:-1], s*O)


@dataclass(frozen=True)
class EmbeddingLayout:
    """The SE / ME switch of a baseline scaled ``num_embeddings`` times.

    Args:
        embedding_dim: k, the base embedding size (10 in the RoBlock paper).
        num_embeddings: s, the scale factor (1, 2, 3, 5, 10 in the paper).
        embedding_mode: ``"single"``: one table of size s*k and one interaction
            module (SE); ``"multi"``: s tables of size k, one interaction copy
            each (ME).

    Example:
        >>> layout = EmbeddingLayout(embedding_dim=10, num_embeddings=5, embedding_mode="multi")
        >>> layout.num_sets, layout.set_dim, layout.total_dim     # (5, 10, 50)
    """

    embedding_dim: int
    num_embeddings: int = 1
    embedding_mode: str = "single"

    def __post_init__(self):
        check_arg(self.embedding_mode in EMBEDDING_MODES, "embedding_mode", self.embedding_mode,
                  f"one of {list(EMBEDDING_MODES)}")
        check_positive_int("embedding_dim", self.embedding_dim)
        check_positive_int("num_embeddings", self.num_embeddings)

    @property
    def is_multi(self) -> bool:
        return self.embedding_mode == "multi"

    @property
    def num_sets(self) -> int:
        """Embedding sets fed to separate interaction copies: s (ME) or 1 (SE)."""
        return self.num_embeddings if self.is_multi else 1

    @property
    def set_dim(self) -> int:
        """Size D of one embedding set: k (ME) or s*k (SE)."""
        return self.embedding_dim if self.is_multi else self.embedding_dim * self.num_embeddings

    @property
    def total_dim(self) -> int:
        """Total embedding width per field, s*k in both modes."""
        return self.embedding_dim * self.num_embeddings

    def embedding(self, feature_map) -> nn.Module:
        """SE: ``FeatureEmbedding`` -> (B, F, s*k); ME: :class:`MultiEmbedding` -> (B, s, F, k)."""
        if self.is_multi:
            return MultiEmbedding(feature_map, self.embedding_dim, self.num_embeddings)
        return FeatureEmbedding(feature_map, self.total_dim)

    def embedding_matrix(self) -> nn.Module:
        """Module mapping the embedding output to the (B, F, s*k) matrix that stage taps record."""
        return ConcatEmbeddingSets() if self.is_multi else nn.Identity()

    def interaction(self, factory: Callable[[int], nn.Module]) -> nn.Module:
        """SE: ``factory(s*k)``; ME: s copies ``factory(k)`` in a :class:`MultiEmbeddingInteraction`."""
        if self.is_multi:
            return MultiEmbeddingInteraction.replicate(lambda: factory(self.embedding_dim),
                                                       self.num_embeddings)
        return factory(self.total_dim)

    def multi_only(self, factory: Callable[[int], nn.Module]) -> nn.Module:
        """SE: ``nn.Identity()``; ME: s copies ``factory(k)``. For layers that only ME applies per set."""
        if self.is_multi:
            return MultiEmbeddingInteraction.replicate(lambda: factory(self.embedding_dim),
                                                       self.num_embeddings)
        return nn.Identity()

    def mlp(self, set_input_dim: Callable[[int], int], hidden_units: Sequence[int],
            output_dim=None, output_activation=None, hidden_activations="ReLU",
            dropout_rates=0.0, batch_norm: bool = False) -> nn.Module:
        """An MLP over the embedding sets.

        SE: one ``MLP_Block(set_input_dim(s*k), hidden_units, output_dim)`` on
        (B, set_input_dim(s*k)). ME: the first hidden layer runs per set,
        ``MLP_Block(set_input_dim(k), hidden_units[:1])`` copies on
        (B, s, set_input_dim(k)), and ``MLP_Block(s * hidden_units[0],
        hidden_units[1:], output_dim)`` on their concatenation - the placement
        of Guo et al.'s multi-embedding models (their per-set first layers are
        averaged, here concatenated). With no hidden layers both modes reduce
        to the output layer on the concatenated sets.

        Args:
            set_input_dim: maps a set's embedding size D to the MLP input width
                of that set (e.g. ``lambda d: num_fields * d``).
            hidden_units, output_dim, output_activation, hidden_activations,
            dropout_rates, batch_norm: as fuxictr's ``MLP_Block``.

        Shapes: SE (B, set_input_dim(s*k)) | ME (B, s, set_input_dim(k)) -> (B, output_dim
        or hidden_units[-1]).
        """
        hidden_units = list(hidden_units)
        if not self.is_multi:
            return MLP_Block(set_input_dim(self.total_dim), hidden_units, output_dim=output_dim,
                             output_activation=output_activation, hidden_activations=hidden_activations,
                             dropout_rates=dropout_rates, batch_norm=batch_norm)

        def per_layer(value, layers: slice):
            return list(value[layers]) if isinstance(value, (list, tuple)) else value

        first, rest = slice(None, 1), slice(1, None)
        per_set = MultiEmbeddingInteraction.replicate(
            lambda: MLP_Block(set_input_dim(self.embedding_dim), hidden_units[first],
                              hidden_activations=per_layer(hidden_activations, first),
                              dropout_rates=per_layer(dropout_rates, first), batch_norm=batch_norm),
            self.num_embeddings)
        set_out = hidden_units[0] if hidden_units else set_input_dim(self.embedding_dim)
        head = MLP_Block(self.num_embeddings * set_out, hidden_units[rest], output_dim=output_dim,
                         output_activation=output_activation,
                         hidden_activations=per_layer(hidden_activations, rest),
                         dropout_rates=per_layer(dropout_rates, rest), batch_norm=batch_norm)
        return nn.Sequential(per_set, head)
