"""Raw request values to model inputs, encoded exactly as the dataset build encoded them.

A request carries feature values as they appear in the training data (strings and
numbers as in the training CSV). :class:`RawFeatureEncoder` replays, column-wise and
vectorised over a whole batch, the two steps FuxiCTR's fitted ``FeatureProcessor``
applied at build time (``fuxictr_ext.data.build``):

1. ``preprocess``: missing values filled with the column's ``fill_na`` and the
   configured ``preprocess`` functions (Avazu's ``convert_hour``, Criteo's
   ``convert_to_bucket``, ``copy_from(...)``) run as the same polars expressions,
   in FuxiCTR's order (the feature columns reversed);
2. ``transform``: categorical values through the fitted vocabulary (unknown values
   to the out-of-vocabulary id ``__OOV__``), sequences split, encoded and padded or
   truncated as configured, numeric values through the fitted normalizer.

Each field is one column over the whole batch: vocabulary lookups are ``map(dict.get)``
over the column (no Python bytecode per value), sequences are exploded and padded with
array indexing, numeric columns go through the normalizer in one call.

Shapes: R requests, C = sum of their N candidates, L = a sequence field's max_len.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import polars as pl
import torch

from ..config import ZooError
from .requests import FieldPartition, RequestBatch

POLARS_DTYPES = {"str": pl.String, "int": pl.Int64, "float": pl.Float64}
REQUEST_KEYS = ("context", "candidates")


class RequestError(ZooError):
    """A request that cannot be scored; the message names the field and the problem (HTTP 4xx)."""


class TooManyCandidatesError(RequestError):
    """A request with more candidates than the server's ``max_candidates``."""


def load_feature_processor(data_dir: str):
    """The fitted FuxiCTR ``FeatureProcessor`` that built the dataset in ``data_dir``.

    Raises:
        FileNotFoundError: no ``feature_processor.pkl`` there (the dataset was not built
            by FuxiCTR's or this project's ``build_dataset``).
    """
    path = os.path.join(data_dir, "feature_processor.pkl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no fitted feature processor; build the dataset first "
                                "(python run_expid.py --expid <id> builds it)")
    with open(path, "rb") as fd:
        return pickle.load(fd)


@dataclass(frozen=True)
class FieldEncoder:
    """How one model field is made from raw columns.

    Args:
        name: the feature.
        spec: its FeatureMap spec.
        column: its feature column config (``dtype``, ``fill_na``, ``preprocess``, ...).
        expression: the polars expression that derives it (``preprocess``), or None.
        raw_columns: the raw columns it reads.
        vocab: the fitted vocabulary ``{token: id}`` (categorical and sequence fields), else None.
        oov_id: the id of tokens not in ``vocab``.
        processor: the fitted FeatureProcessor (normalizers, tokenizers).
    """

    name: str
    spec: dict
    column: dict
    expression: Optional[pl.Expr]
    raw_columns: Tuple[str, ...]
    vocab: Optional[dict]
    oov_id: int
    processor: object

    def encode(self, values: pl.Series) -> torch.Tensor:
        """(rows,) ids / values, or (rows, L) ids for a sequence field."""
        kind = self.spec["type"]
        if kind == "numeric":
            array = values.cast(pl.Float64).to_numpy()
            normalizer = self.processor.processor_dict.get(self.name + "::normalizer")
            if normalizer is not None:
                array = normalizer.transform(np.asarray(array))
            return torch.from_numpy(np.asarray(array, dtype=np.float64))
        if kind == "categorical":
            return torch.from_numpy(self.lookup(values.to_list()))
        return torch.from_numpy(self.encode_sequence(values))

    def lookup(self, tokens: list) -> np.ndarray:
        """(n,) int64 vocabulary ids; tokens not in the vocabulary get the OOV id.

        The fitted vocabulary's own dict, read by ``map(dict.get)``: C-level hashing, no
        Python bytecode per token, and the same lookup as FuxiCTR's ``Tokenizer``."""
        return np.fromiter(map(self.vocab.get, tokens, repeat(self.oov_id)), dtype=np.int64, count=len(tokens))

    def encode_sequence(self, values: pl.Series) -> np.ndarray:
        """FuxiCTR's ``Tokenizer.encode_sequence`` vectorised: split, encode (``fill_na`` tokens to the
        padding id 0), keep the last / first ``max_len`` tokens and pad at the same side."""
        tokenizer = self.processor.processor_dict[self.name + "::tokenizer"]
        pieces = values.str.split(tokenizer._splitter)                          # (rows,) lists
        lengths = pieces.list.len().to_numpy().astype(np.int64)                  # (rows,)
        tokens = pieces.explode()                                                # (sum lengths,)
        ids = self.lookup(tokens.to_list())
        ids[(tokens == tokenizer._na_value).to_numpy()] = tokenizer.vocab["__PAD__"]
        max_len, rows = tokenizer.max_len, lengths.size
        kept = np.minimum(lengths, max_len)                                      # (rows,)
        starts = np.cumsum(lengths) - lengths
        pre = tokenizer.padding == "pre"                                         # FuxiCTR truncates on the same side
        first_kept = starts + (lengths - kept if pre else 0)
        first_slot = max_len - kept if pre else np.zeros_like(kept)
        row = np.repeat(np.arange(rows), kept)
        offset = np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
        out = np.full((rows, max_len), tokenizer.vocab["__PAD__"], dtype=np.int64)
        out[row, np.repeat(first_slot, kept) + offset] = ids[np.repeat(first_kept, kept) + offset]
        return out


class RawFeatureEncoder:
    """Encodes raw request values into the tensors a model's FeatureMap expects.

    Args:
        processor: the dataset's fitted FuxiCTR ``FeatureProcessor`` (:func:`load_feature_processor`).
        partition: which fields are context and which target.
        max_candidates: the most candidates one request may carry.

    Attributes:
        context_columns / target_columns: the raw columns a request's context / each
            candidate carries (a derived feature's source column, e.g. Avazu's ``hour``).

    Example:
        >>> encoder = RawFeatureEncoder(load_feature_processor(data_dir), partition)
        >>> batch = encoder.request_batch([{"context": {"user_id": "u7", "hour": "13"},
        ...                                 "candidates": {"item_id": ["i1", "i9"]}}])
    """

    def __init__(self, processor, partition: FieldPartition, max_candidates: int = 1024):
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        self.partition = partition
        self.max_candidates = max_candidates
        columns = {col["name"]: col for col in processor.feature_cols}
        self.fields: Dict[str, FieldEncoder] = {}
        for name in partition.fields:
            spec = processor.feature_map.features.get(name)
            if spec is None:
                raise ValueError(f"field {name!r} of the model is not in the dataset's feature processor")
            self.fields[name] = _field_encoder(processor, name, spec, columns[name])
        self.raw_dtypes = {}
        for field in self.fields.values():
            for raw in field.raw_columns:
                self.raw_dtypes[raw] = POLARS_DTYPES[_dtype_name(columns[raw]) if raw in columns else "str"]
        self.column_order = [col["name"] for col in processor.feature_cols[::-1]]
        self.context_columns = self._raw_columns(partition.context_fields)
        self.target_columns = self._raw_columns(partition.target_fields)

    def _raw_columns(self, fields: Sequence[str]) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(raw for f in fields for raw in self.fields[f].raw_columns))

    # ------------------------------------------------------------------ requests
    def request_batch(self, requests: Sequence[Mapping]) -> RequestBatch:
        """One RequestBatch from raw requests ``{"context": {column: value},
        "candidates": {column: [N values]}}`` (``"num_candidates": N`` when no field is a target).

        Raises:
            RequestError: a missing or unknown field or key, zero or too many candidates,
                candidate columns of different lengths, a value of the wrong type.
        """
        if not isinstance(requests, Sequence) or not requests:
            raise RequestError("a batch needs at least one request")
        counts = np.array([self._count(r, request) for r, request in enumerate(requests)], dtype=np.int64)
        context = self._frame({c: [request["context"][c] for request in requests] for c in self.context_columns},
                              "context")
        candidates = self._frame({c: list(chain.from_iterable(request["candidates"][c] for request in requests))
                                  for c in self.target_columns}, "candidates")
        return RequestBatch(self._encode(context, self.partition.context_fields),
                            self._encode(candidates, self.partition.target_fields), torch.from_numpy(counts))

    def _count(self, r: int, request) -> int:
        """N of request ``r`` after checking its keys and fields."""
        if not isinstance(request, Mapping):
            raise RequestError(f"request {r}: must be a JSON object with keys {list(REQUEST_KEYS)}")
        unknown_keys = sorted(set(request) - set(REQUEST_KEYS) - {"num_candidates"})
        if unknown_keys:
            raise RequestError(f"request {r}: unknown key(s) {unknown_keys}; a request has "
                               f"{list(REQUEST_KEYS)} (and num_candidates when no field is a target)")
        for key, expected in (("context", self.context_columns), ("candidates", self.target_columns)):
            given = request.get(key, {})
            if not isinstance(given, Mapping):
                raise RequestError(f"request {r}: {key} must be an object of field: value")
            missing = [c for c in expected if c not in given]
            if missing:
                raise RequestError(f"request {r}: {key} lack field(s) {missing}")
            unknown = [c for c in given if c not in expected]
            if unknown:
                raise RequestError(f"request {r}: {key} carry unknown field(s) {unknown}; expected {list(expected)}")
        candidates = request.get("candidates", {})
        for column, values in candidates.items():
            if not isinstance(values, list):
                raise RequestError(f"request {r}: candidates[{column!r}] must be a list with one value per candidate")
        lengths = {column: len(values) for column, values in candidates.items()}
        if len(set(lengths.values())) > 1:
            raise RequestError(f"request {r}: candidate fields disagree on the number of candidates: {lengths}")
        if "num_candidates" in request:
            n = request["num_candidates"]
            if not isinstance(n, int) or isinstance(n, bool) or (lengths and n != next(iter(lengths.values()))):
                raise RequestError(f"request {r}: num_candidates={n!r} must be an integer equal to the "
                                   "length of the candidate fields")
        elif lengths:
            n = next(iter(lengths.values()))
        else:
            raise RequestError(f"request {r}: no field is a target; give num_candidates")
        if n < 1:
            raise RequestError(f"request {r}: zero candidates; a request needs at least one")
        if n > self.max_candidates:
            raise TooManyCandidatesError(f"request {r}: {n} candidates, more than "
                                         f"max_candidates={self.max_candidates}")
        return n

    def _frame(self, columns: Dict[str, list], side: str) -> pl.DataFrame:
        """The raw columns as a polars frame of the training dtypes; wrong types are RequestErrors."""
        series = []
        for column, values in columns.items():
            dtype = self.raw_dtypes[column]
            try:
                series.append(pl.Series(column, values, dtype=dtype, strict=True))
            except (TypeError, OverflowError, UnicodeError, pl.exceptions.PolarsError) as err:   # "\ud800" too
                raise RequestError(f"{side}[{column!r}]: expected {_type_name(dtype)} (one scalar per "
                                   f"{'request' if side == 'context' else 'candidate'}) as in the training data: "
                                   f"{err}") from None
        return pl.DataFrame(series)

    def _encode(self, frame: pl.DataFrame, fields: Sequence[str]) -> Dict[str, torch.Tensor]:
        """``preprocess`` then ``transform`` of ``fields`` from the raw ``frame``."""
        if not any(self.fields[f].expression is not None for f in fields):   # nothing derived: fill_na only
            return {f: self.fields[f].encode(_filled(frame[f], self.fields[f].column)) for f in fields}
        wanted = set(fields)
        derived = frame
        for name in self.column_order:   # FuxiCTR's preprocess order: fill_na, then derive, column by column
            if name not in wanted:
                continue
            field, present = self.fields[name], name in derived.columns
            if present:
                derived = derived.with_columns(pl.col(name).fill_null(_fill_na(field.column)))
            if field.expression is not None:
                derived = derived.with_columns(field.expression.alias(name))
            if not present:
                derived = derived.with_columns(pl.col(name).fill_null(_fill_na(field.column)))
        return {f: self.fields[f].encode(derived[f]) for f in fields}


def _field_encoder(processor, name: str, spec: dict, column: dict) -> FieldEncoder:
    kind = spec["type"]
    if kind not in ("numeric", "categorical", "sequence"):
        raise ValueError(f"field {name!r} has type {kind!r}; raw-value serving covers numeric, categorical "
                         "and sequence fields")
    if column.get("category_processor"):
        raise ValueError(f"field {name!r} uses category_processor={column['category_processor']!r}, which "
                         "FuxiCTR's FeatureProcessor.transform does not apply; it cannot be served from raw values")
    if "pretrained_emb" in spec:
        raise ValueError(f"field {name!r} has a pretrained embedding; raw-value serving does not cover it")
    expression, raw_columns = None, (name,)
    if column.get("preprocess"):
        parts = re.split(r"\(|\)", column["preprocess"])
        args = [name] if len(parts) == 1 else parts[1:-1]
        expression = getattr(processor, parts[0])(*args)
        raw_columns = tuple(expression.meta.root_names())
    vocab, oov_id = None, -1
    if kind in ("categorical", "sequence"):
        vocab = processor.processor_dict[name + "::tokenizer"].vocab
        oov_id = int(vocab["__OOV__"])
    return FieldEncoder(name, spec, column, expression, raw_columns, vocab, oov_id, processor)


def _dtype_name(column: dict) -> str:
    """``str`` / ``int`` / ``float``: a column's configured dtype (a name or a Python type)."""
    dtype = column.get("dtype", "str")
    return getattr(dtype, "__name__", dtype)


def _filled(values: pl.Series, column: dict) -> pl.Series:
    """``values`` with missing entries filled as FuxiCTR's ``preprocess`` fills them."""
    return values.fill_null(_fill_na(column)) if values.null_count() else values


def _fill_na(column: dict):
    """The value FuxiCTR's ``preprocess`` fills a missing value of ``column`` with."""
    return column.get("fill_na", {"str": "", "int": 0, "float": 0.0}[_dtype_name(column)])


def _type_name(dtype) -> str:
    return {pl.String: "strings", pl.Int64: "integers", pl.Float64: "numbers"}[dtype]
