"""Multi-target scoring inputs: how one call carries many requests with a ragged number
of candidates each (which fields are context and which are target is
:class:`~fuxictr_ext.layers.rank_aware.FieldPartition`, re-exported here).

Paper: "Context Features Are Cheap: Rank-Aware Decomposition for Efficient
Feature Interaction in Recommender Systems" (section 3.1). A request holds K
context fields, identical for all of its candidates (user and page/session
features), and N candidates with M target (item) fields each.

Shapes: R requests, C = sum of the requests' N candidates, K context fields,
M target fields, F = K + M fields in the FeatureMap's order (the "vanilla"
order in which a model sees its fields), L = sequence length of a sequence field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..layers.rank_aware import FieldPartition, RankAwareUnsupportedError  # noqa: F401  (the serving API's names)


@dataclass
class RequestBatch:
    """R requests scored in one call; request r has ``num_candidates[r]`` candidates.

    The contract of multi-target scoring: a request's context values are given
    once and are identical for all of its candidates. ``from_flat`` checks that
    contract on row-per-candidate data (``check_context=True``).

    Args:
        context: ``{context field: (R,) or (R, L)}``.
        candidates: ``{target field: (C,) or (C, L)}``, the candidates of request 0,
            then those of request 1, ...
        num_candidates: (R,) long, every entry >= 1.
        source_rows: (C,) long, optional: for a batch made by ``from_flat``, the
            flat row each candidate came from.

    Example:
        >>> batch = RequestBatch.from_requests(partition, [
        ...     {"context": {"user_id": 3}, "candidates": {"item_id": [5, 9, 2]}},
        ...     {"context": {"user_id": 7}, "candidates": {"item_id": [1]}}])
        >>> batch.request_index             # tensor([0, 0, 0, 1])
    """

    context: Dict[str, torch.Tensor]
    candidates: Dict[str, torch.Tensor]
    num_candidates: torch.Tensor
    source_rows: Optional[torch.Tensor] = None
    request_index: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.num_candidates = torch.as_tensor(self.num_candidates, dtype=torch.long).view(-1)
        if self.num_candidates.numel() == 0:
            raise ValueError("a RequestBatch needs at least one request")
        empty = torch.nonzero(self.num_candidates < 1).view(-1)
        if empty.numel():
            raise ValueError(f"request(s) {empty.tolist()} have N = {self.num_candidates[empty].tolist()} "
                             "candidates; every request needs N >= 1")
        self.request_index = torch.repeat_interleave(
            torch.arange(self.num_requests), self.num_candidates)  # (C,)

    @property
    def num_requests(self) -> int:
        return int(self.num_candidates.numel())

    @property
    def total_candidates(self) -> int:
        return int(self.num_candidates.sum())

    def validate(self, partition: FieldPartition) -> None:
        """Check fields and sizes against ``partition``; ValueError naming the problem."""
        for name, given, expected, rows in (
                ("context", self.context, partition.context_fields, self.num_requests),
                ("candidates", self.candidates, partition.target_fields, self.total_candidates)):
            missing = [f for f in expected if f not in given]
            extra = [f for f in given if f not in expected]
            if missing:
                raise ValueError(f"request {name} lack field(s) {missing}")
            if extra:
                other = partition.target_fields if name == "context" else partition.context_fields
                where = "the other side" if any(f in other for f in extra) else "no field of the model"
                raise ValueError(f"request {name} carry field(s) {extra}, which belong to {where}")
            for f in expected:
                if given[f].size(0) != rows:
                    raise ValueError(f"{name}[{f!r}] has {given[f].size(0)} rows, expected {rows}")

    def to(self, device) -> "RequestBatch":
        """The same batch with every tensor on ``device``."""
        moved = RequestBatch({k: v.to(device) for k, v in self.context.items()},
                             {k: v.to(device) for k, v in self.candidates.items()},
                             self.num_candidates, self.source_rows)
        moved.request_index = self.request_index.to(device)
        return moved

    def split(self, scores: torch.Tensor) -> List[torch.Tensor]:
        """Cut flat (C,) scores into one (N_r,) tensor per request."""
        return list(torch.split(scores, self.num_candidates.tolist()))

    def broadcast(self) -> Dict[str, torch.Tensor]:
        """The flat row-per-candidate batch: context repeated for every candidate."""
        rows = {f: v.index_select(0, self.request_index.to(v.device)) for f, v in self.context.items()}
        rows.update(self.candidates)
        return rows

    @classmethod
    def concat(cls, batches: Sequence["RequestBatch"]) -> "RequestBatch":
        """One batch holding the requests of ``batches`` in order (a server merging queued requests)."""
        if not batches:
            raise ValueError("concat needs at least one RequestBatch")
        first = batches[0]
        return cls({f: torch.cat([b.context[f] for b in batches]) for f in first.context},
                   {f: torch.cat([b.candidates[f] for b in batches]) for f in first.candidates},
                   torch.cat([b.num_candidates for b in batches]))

    @classmethod
    def from_requests(cls, partition: FieldPartition, requests: Sequence[Mapping]) -> "RequestBatch":
        """Stack requests ``{"context": {f: value}, "candidates": {f: (N,) values}}``.

        Context values are scalars (or (L,) for sequence fields); candidate values
        have one entry (row) per candidate. Requests may have different N.
        """
        if not requests:
            raise ValueError("requests is empty")
        counts = []
        for r, request in enumerate(requests):
            sizes = {f: len(v) for f, v in request["candidates"].items()}
            if len(set(sizes.values())) > 1:
                raise ValueError(f"request {r}: candidate fields disagree on N: {sizes}")
            if "num_candidates" in request:
                counts.append(int(request["num_candidates"]))
            elif sizes:
                counts.append(next(iter(sizes.values())))
            else:
                raise ValueError(f"request {r} has no target fields; give its num_candidates")
        # One tensor per field, made in one call from all requests' values (no tensor per request).
        context = {f: _stack([req["context"][f] for req in requests])
                   for f in partition.context_fields if f in requests[0]["context"]}
        candidates = {f: _concat([req["candidates"][f] for req in requests])
                      for f in partition.target_fields if f in requests[0]["candidates"]}
        batch = cls(context, candidates, torch.tensor(counts))
        batch.validate(partition)
        return batch

    @classmethod
    def from_flat(cls, partition: FieldPartition, rows: Mapping[str, torch.Tensor],
                  request_ids: torch.Tensor, check_context: bool = True) -> "RequestBatch":
        """Group row-per-candidate data (a FuxiCTR batch) into requests by ``request_ids``.

        Args:
            partition: the field partition.
            rows: ``{field: (B,) or (B, L)}``; labels and other keys are ignored.
            request_ids: (B,) the request each row belongs to.
            check_context: verify that every row of a request carries the same
                context values (the multi-target contract); ValueError otherwise.

        Returns:
            A RequestBatch whose requests follow ascending request id and whose
            ``source_rows`` maps each candidate back to its row.
        """
        request_ids = torch.as_tensor(request_ids).view(-1)
        if request_ids.numel() == 0:
            raise ValueError("from_flat got no rows")
        unique_ids, inverse = torch.unique(request_ids, return_inverse=True)
        order = torch.sort(inverse, stable=True).indices  # (C,) candidate -> row
        counts = torch.bincount(inverse, minlength=unique_ids.numel())
        first_row = order[torch.cumsum(counts, 0) - counts]  # (R,)
        context = {f: rows[f].index_select(0, first_row) for f in partition.context_fields if f in rows}
        if check_context:
            for f, values in context.items():
                same = values.index_select(0, inverse) == rows[f]
                same = same.view(same.size(0), -1).all(dim=1)
                if not bool(same.all()):
                    bad = int(request_ids[~same][0])
                    raise ValueError(f"request {bad}: context field {f!r} differs across its candidates; "
                                     "a request's context must be identical for all candidates")
        candidates = {f: rows[f].index_select(0, order) for f in partition.target_fields if f in rows}
        batch = cls(context, candidates, counts, source_rows=order)
        batch.validate(partition)
        return batch


def _stack(values: list) -> torch.Tensor:
    """(R,) or (R, L): one context value per request (numbers, lists, arrays or tensors)."""
    if isinstance(values[0], torch.Tensor):
        return torch.stack(values)
    return torch.as_tensor(np.asarray(values))


def _concat(values: list) -> torch.Tensor:
    """(C,) or (C, L): the requests' candidate values (lists, arrays or tensors) one after the other."""
    if isinstance(values[0], torch.Tensor):
        return torch.cat(values)
    return torch.as_tensor(np.asarray(list(chain.from_iterable(values))))


class MultiTargetScorer(nn.Module):
    """Scores R requests' candidates: ``forward(context, candidates, request_index) -> (C,)``.

    Subclasses implement ``forward``; ``score`` validates a RequestBatch and runs
    it without gradients. Scores are the model's ``y_pred`` (after its output
    activation), one per candidate, in the batch's candidate order.
    """

    def __init__(self, model: nn.Module, partition: FieldPartition):
        super().__init__()
        self.partition = partition
        self.device = model.device

    @torch.no_grad()
    def score(self, batch: RequestBatch) -> torch.Tensor:
        """(C,) scores of ``batch``'s candidates."""
        batch.validate(self.partition)
        batch = batch.to(self.device)
        return self.forward(batch.context, batch.candidates, batch.request_index)
