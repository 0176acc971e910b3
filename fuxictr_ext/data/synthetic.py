"""Seeded synthetic CTR data with real benchmarks' schemas and planted models.

The labels come from a known logistic model with first-order, pairwise
(factorised, FM-like) and third-order field interactions, so that

* interaction models have something a plain DNN finds harder to learn, and
* the best achievable AUC is known: the planted model's own AUC on the test
  split (the "ceiling"), written to ``planted.json`` beside the data.

Schemas (``SCHEMAS``, keyed by the ``synthetic: {schema: ...}`` value of a
dataset config entry):

* ``criteo``  - Criteo_x1 layout: label, I1-I13 numeric, C1-C26 categorical.
* ``avazu``   - Avazu_x4 layout: id, click, hour (YYMMDDHH), 21 categorical fields.
* ``taobao``  - TaobaoAd_x1 layout: clk, behaviour sequences btag_his / cate_his /
  brand_his ('^'-joined), user profile (userid + 8 fields), ad fields, price, pid,
  btag. Rows of one user share its profile and history (gAUC groups by userid).
* ``request`` - a context/target request layout: request_id, click, K = 8 context
  fields (user and context), M = 4 target fields (item), N = 10 candidates per
  request with identical context values.
* ``discriminating`` - label, C1-C10 categorical with moderate vocabularies whose
  logit is dominated by an FM over planted factor vectors of every field pair:
  an instrument that separates interaction models from a plain DNN
  (:class:`DiscriminatingSchema`).

The planted model is drawn from the seed and never looked at by any model; it
tests the plumbing, it is not a benchmark.

``criteo`` rows are independent given the planted model, so that schema is
streamed: drawn and written ``BLOCK_ROWS`` rows at a time with a generator per
block (:class:`BlockStream`), in memory bounded by a block whatever the row
count (Criteo_x1 has 45M rows). The other schemas draw all rows at once (their
users, ads or requests tie rows together).

Command line (:func:`main`; ``python -m data_prep.synthetic`` runs the same)::

    fuxictr-zoo synthetic --schema criteo --rows 200000 --out ./data/raw/demo
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import shutil
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
from sklearn.metrics import log_loss, roc_auc_score

BLOCK_ROWS = 1_000_000  # rows a streamed schema draws at a time (part of what its output is)


@dataclass
class Sample:
    """Rows drawn by a schema, before labelling.

    Args:
        frame: output columns (label excluded), in the release's column order.
        prob: planted click probability of every row.
        first_order_logit: the first-order part of the planted logit (for the report).
        planted: description of the planted interactions (for the report).
        unit: rows per indivisible block (a request's N candidates); splits cut between blocks.
        group: column whose values group rows for gAUC, if the schema has one.
    """

    frame: pd.DataFrame
    prob: np.ndarray
    first_order_logit: np.ndarray
    planted: dict
    unit: int = 1
    group: Optional[str] = None


@dataclass
class SyntheticSchema:
    """Column layout of a flat synthetic dataset (one row = independent fields).

    Args:
        name: schema name (``criteo``, ...).
        label: label column name.
        numeric: numeric column names (floats in [0, 1), as in Criteo_x1's release).
        categorical: categorical column name -> vocabulary size.
        zipf_exponent: skew of the categorical value frequencies.
        positive_rate: target mean of the labels.
        num_pairs, num_triples: how many field pairs / triples carry planted interactions.
        latent_dim: rank of the planted pairwise interactions.
        id_columns: extra columns copied through unchanged (row or request ids).
    """

    name: str
    label: str
    numeric: List[str]
    categorical: Dict[str, int]
    zipf_exponent: float = 1.1
    positive_rate: float = 0.25
    num_pairs: int = 24
    num_triples: int = 8
    latent_dim: int = 4
    id_columns: List[str] = field(default_factory=list)
    label_position: int = 0

    def draw(self, rows: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        """Field values of ``rows`` rows: numeric floats in [0, 1), categorical ids in [0, vocabulary)."""
        values = {f: np.clip(rng.beta(0.8, 2.5, rows), 0.0, 0.999).astype(np.float64) for f in self.numeric}
        values.update({f: _zipf_ids(rng, rows, vocab, self.zipf_exponent) for f, vocab in self.categorical.items()})
        return values

    def columns(self, values: Dict[str, np.ndarray]) -> Dict[str, pa.Array]:
        """The output columns (label excluded) of drawn values: numerics as they are,
        categorical id i of field ``Cj`` as the token ``cj_i``."""
        out = {f: pa.array(values[f]) for f in self.numeric}
        out.update({f: _tokens(f, vocab).take(pa.array(values[f])) for f, vocab in self.categorical.items()})
        return out


def criteo_schema() -> SyntheticSchema:
    """Criteo_x1 layout: label, I1-I13 numeric, C1-C26 categorical (Zipf vocabularies)."""
    rng = np.random.default_rng(13)
    vocab = np.unique(np.round(np.exp(rng.uniform(np.log(8), np.log(20000), 26))).astype(int))
    sizes = list(rng.permutation(np.resize(vocab, 26)))
    return SyntheticSchema(name="criteo", label="label",
                           numeric=[f"I{i}" for i in range(1, 14)],
                           categorical={f"C{i}": int(sizes[i - 1]) for i in range(1, 27)},
                           positive_rate=0.25)


def _zipf_ids(rng: np.random.Generator, rows: int, vocab: int, exponent: float) -> np.ndarray:
    probs = 1.0 / np.arange(1, vocab + 1) ** exponent
    return rng.choice(vocab, size=rows, p=probs / probs.sum())


def _calibrated_intercept(base_logit: np.ndarray, positive_rate: float) -> float:
    """The intercept b with mean(sigmoid(base_logit + b)) = positive_rate (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (1 / (1 + np.exp(-(base_logit + mid)))).mean() < positive_rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class PlantedModel:
    """The logistic model that generates labels; drawn once from the seed.

    logit(x) = b + sum_f w_f[x_f] + sum_{(f,g) in P} <v_f[x_f], v_g[x_g]>
                 + sum_{(f,g,h) in T} u_f[x_f] * u_g[x_g] * u_h[x_h]
    with numeric fields quantised into 10 buckets for the lookups.

    Args:
        schema: the fields (``numeric`` names, ``categorical`` name -> vocabulary size),
            ``num_pairs``, ``num_triples`` and ``latent_dim``.
        rng: the generator every parameter is drawn from.
        cross: optional (context fields, target fields): adds ``num_cross_pairs`` pairs
            and ``num_cross_triples`` triples that each join a context and a target field,
            on top of the random ones.
        num_cross_pairs, num_cross_triples: how many with ``cross``.
    """

    def __init__(self, schema: SyntheticSchema, rng: np.random.Generator,
                 cross: Optional[Tuple[Sequence[str], Sequence[str]]] = None,
                 num_cross_pairs: int = 0, num_cross_triples: int = 0):
        self.schema = schema
        fields = schema.numeric + list(schema.categorical)
        self.cardinality = {f: 10 for f in schema.numeric}
        self.cardinality.update(schema.categorical)
        self.first = {f: rng.normal(0, 0.35, self.cardinality[f]) for f in fields}
        self.latent = {f: rng.normal(0, 0.6, (self.cardinality[f], schema.latent_dim)) for f in fields}
        self.third = {f: rng.normal(0, 0.9, self.cardinality[f]) for f in fields}
        pick = lambda k: tuple(sorted(rng.choice(len(fields), size=k, replace=False)))
        self.pairs = sorted({pick(2) for _ in range(schema.num_pairs)})
        self.triples = sorted({pick(3) for _ in range(schema.num_triples)})
        self.cross_pairs: List[tuple] = []
        self.cross_triples: List[tuple] = []
        if cross is not None:
            context = [fields.index(f) for f in cross[0]]
            target = [fields.index(f) for f in cross[1]]
            self.cross_pairs = sorted({tuple(sorted((int(rng.choice(context)), int(rng.choice(target)))))
                                       for _ in range(num_cross_pairs)})
            for _ in range(num_cross_triples):
                a, b = int(rng.choice(context)), int(rng.choice(target))
                c = int(rng.choice([i for i in range(len(fields)) if i not in (a, b)]))
                self.cross_triples.append(tuple(sorted((a, b, c))))
            self.cross_triples = sorted(set(self.cross_triples))
            self.pairs = sorted(set(self.pairs) | set(self.cross_pairs))
            self.triples = sorted(set(self.triples) | set(self.cross_triples))
        self.fields = fields
        self.bias = 0.0

    def ids(self, values: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Lookup ids of drawn values (``SyntheticSchema.draw``): numerics quantised into 10 buckets."""
        out = {f: np.minimum((values[f] * 10).astype(int), 9) for f in self.schema.numeric}
        out.update({f: values[f] for f in self.schema.categorical})
        return out

    def first_order_logit(self, ids: Dict[str, np.ndarray]) -> np.ndarray:
        """b + sum_f w_f[x_f]: the planted logit without its interaction terms."""
        z = np.full(len(next(iter(ids.values()))), self.bias)
        for f in self.fields:
            z += self.first[f][ids[f]]
        return z

    def logit(self, ids: Dict[str, np.ndarray], bias: float | None = None) -> np.ndarray:
        z = np.full(len(next(iter(ids.values()))), self.bias if bias is None else bias)
        for f in self.fields:
            z += self.first[f][ids[f]]
        scale = 1.0 / np.sqrt(max(len(self.pairs), 1))
        for a, b in self.pairs:
            fa, fb = self.fields[a], self.fields[b]
            z += scale * 2.0 * np.einsum("nd,nd->n", self.latent[fa][ids[fa]], self.latent[fb][ids[fb]])
        for a, b, c in self.triples:
            fa, fb, fc = self.fields[a], self.fields[b], self.fields[c]
            z += 0.6 * self.third[fa][ids[fa]] * self.third[fb][ids[fb]] * self.third[fc][ids[fc]]
        return z

    def calibrate(self, ids: Dict[str, np.ndarray], positive_rate: float) -> None:
        """Set the intercept so that the mean probability is ``positive_rate`` (bisection)."""
        self.bias = _calibrated_intercept(self.logit(ids, bias=0.0), positive_rate)

    def describe(self) -> dict:
        names = lambda groups: [[self.fields[i] for i in g] for g in groups]
        out = {"pairs": names(self.pairs), "triples": names(self.triples)}
        if self.cross_pairs or self.cross_triples:
            out["context_target_pairs"] = names(self.cross_pairs)
            out["context_target_triples"] = names(self.cross_triples)
        return out


@functools.lru_cache(maxsize=None)
def _tokens(name: str, vocab: int) -> pa.Array:
    """``<name lowercased>_<i>`` for i < vocab: the strings of a field's ids."""
    return pa.array([f"{name.lower()}_{i}" for i in range(vocab)], type=pa.large_string())


def _int_tokens(ids: np.ndarray, offset: int = 0) -> np.ndarray:
    return np.char.mod("%d", ids.astype(np.int64) + offset)


def _hex_tokens(name: str, ids: np.ndarray) -> np.ndarray:
    """8-hex-digit tokens like Avazu's hashed ids, distinct per field."""
    salt = np.uint64(zlib.crc32(name.encode()))
    return np.char.mod("%08x", (ids.astype(np.uint64) * np.uint64(2654435761) + salt) % np.uint64(2 ** 32))


def _diurnal_hours(rng: np.random.Generator, size: int) -> np.ndarray:
    """Hours of the day with a daytime peak (traffic is lowest around 4 am)."""
    profile = 1.0 + 0.6 * np.sin(2 * np.pi * (np.arange(24) - 10) / 24)
    return rng.choice(24, size=size, p=profile / profile.sum())


def _planted_fields(name: str, label: str, numeric: List[str], categorical: Dict[str, int],
                    num_pairs: int, num_triples: int, latent_dim: int) -> SyntheticSchema:
    return SyntheticSchema(name=name, label=label, numeric=numeric, categorical=categorical,
                           num_pairs=num_pairs, num_triples=num_triples, latent_dim=latent_dim)


AVAZU_HEX_FIELDS = ("site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
                    "device_id", "device_ip", "device_model")


@dataclass
class AvazuSchema:
    """Avazu_x4 layout: ``id``, ``click``, ``hour`` (YYMMDDHH over 21-30 Oct 2014) and the
    21 anonymised categorical fields; vocabularies follow the release's, capped at 20000.

    The planted model sees hour-of-day and weekday (what FuxiCTR's ``convert_hour`` /
    ``convert_weekday`` derive from ``hour``) as two more fields.
    """

    name: str = "avazu"
    label: str = "click"
    categorical: Dict[str, int] = field(default_factory=lambda: {
        "C1": 7, "banner_pos": 7, "site_id": 4000, "site_domain": 5000, "site_category": 26,
        "app_id": 6000, "app_domain": 500, "app_category": 36, "device_id": 20000,
        "device_ip": 20000, "device_model": 5000, "device_type": 5, "device_conn_type": 4,
        "C14": 2500, "C15": 8, "C16": 9, "C17": 430, "C18": 4, "C19": 68, "C20": 170, "C21": 60})
    int_offsets: Dict[str, int] = field(default_factory=lambda: {
        "C1": 1001, "C14": 375, "C15": 120, "C16": 20, "C17": 112, "C19": 33, "C20": 100000, "C21": 1})
    first_day: datetime.date = datetime.date(2014, 10, 21)
    num_days: int = 10
    zipf_exponent: float = 1.1
    positive_rate: float = 0.17
    num_pairs: int = 24
    num_triples: int = 8
    latent_dim: int = 4
    label_position: int = 1

    def sample(self, rows: int, rng: np.random.Generator) -> Sample:
        planted = _planted_fields(self.name, self.label, [], {**self.categorical, "hour": 24, "weekday": 7},
                                  self.num_pairs, self.num_triples, self.latent_dim)
        model = PlantedModel(planted, rng)
        ids = {f: _zipf_ids(rng, rows, vocab, self.zipf_exponent) for f, vocab in self.categorical.items()}
        days = [self.first_day + datetime.timedelta(days=d) for d in range(self.num_days)]
        day = rng.integers(0, self.num_days, rows)
        ids["hour"] = _diurnal_hours(rng, rows)
        ids["weekday"] = np.array([d.weekday() for d in days])[day]
        model.calibrate(ids, self.positive_rate)
        prob = 1 / (1 + np.exp(-model.logit(ids)))
        stamps = np.char.add(np.array([d.strftime("%y%m%d") for d in days])[day], np.char.mod("%02d", ids["hour"]))
        data = {"id": np.char.mod("%d", rng.integers(10 ** 18, 10 ** 19 - 1, rows, dtype=np.uint64)),
                "hour": stamps}
        for f in self.categorical:
            data[f] = _hex_tokens(f, ids[f]) if f in AVAZU_HEX_FIELDS else _int_tokens(ids[f], self.int_offsets.get(f, 0))
        return Sample(pd.DataFrame(data), prob, model.first_order_logit(ids), model.describe())


TAOBAO_PIDS = np.array(["430548_1007", "430539_1007"])


@dataclass
class TaobaoSchema:
    """TaobaoAd_x1 layout with users, ads and behaviour histories.

    Users carry a fixed profile, three preferred categories and one behaviour
    history (up to ``max_history`` (cate, brand, btag) events, 70% from the preferred
    categories); half of a user's impressions are ads of a preferred category.
    Brands belong to categories. The planted logit adds to the field terms

        seq_weight   * (<mean_j v_cate[cate_his_j], v_cate[cate_id]> + <mean_j v_brand[brand_his_j], v_brand[brand]>)
      + match_weight * (fraction of cate_his equal to cate_id)

    the first readable by mean pooling, the second by target attention (DIN-style).
    Ids are written as numeric strings from 1 (the release's padding id 0 never
    occurs); ``userid`` doubles as the gAUC group (``copy_from(userid)`` in the config).
    """

    name: str = "taobao"
    label: str = "clk"
    user_profile: Dict[str, int] = field(default_factory=lambda: {
        "cms_segid": 97, "cms_group_id": 13, "final_gender_code": 2, "age_level": 7,
        "pvalue_level": 4, "shopping_level": 3, "occupation": 2, "new_user_class_level": 5})
    rows_per_user: int = 20
    rows_per_ad: int = 20
    num_cates: int = 300
    num_brands: int = 2000
    brands_per_cate: int = 5
    num_campaigns: int = 4000
    num_customers: int = 3000
    preferred_cates: int = 3
    max_history: int = 50
    preferred_history_share: float = 0.7
    preferred_ad_share: float = 0.5
    entity_zipf_exponent: float = 0.6
    zipf_exponent: float = 1.1
    seq_weight: float = 1.0
    match_weight: float = 1.5
    positive_rate: float = 0.05
    num_pairs: int = 24
    num_triples: int = 8
    latent_dim: int = 4
    label_position: int = 0

    def _brand(self, cate: np.ndarray, slot: np.ndarray) -> np.ndarray:
        return (cate * 13 + slot) % self.num_brands

    def sample(self, rows: int, rng: np.random.Generator) -> Sample:
        n_users = max(10, rows // self.rows_per_user)
        n_ads = max(20, rows // self.rows_per_ad)
        planted = _planted_fields(
            self.name, self.label, ["price"],
            {"userid": n_users, **self.user_profile, "adgroup_id": n_ads, "cate_id": self.num_cates,
             "campaign_id": self.num_campaigns, "customer": self.num_customers, "brand": self.num_brands,
             "pid": len(TAOBAO_PIDS)},
            self.num_pairs, self.num_triples, self.latent_dim)
        model = PlantedModel(planted, rng)

        profile = {f: _zipf_ids(rng, n_users, v, self.entity_zipf_exponent) for f, v in self.user_profile.items()}
        preferred = _zipf_ids(rng, n_users * self.preferred_cates, self.num_cates,
                              self.entity_zipf_exponent).reshape(n_users, self.preferred_cates)
        ad_cate = _zipf_ids(rng, n_ads, self.num_cates, self.zipf_exponent)
        ad_brand = self._brand(ad_cate, rng.integers(0, self.brands_per_cate, n_ads))
        ad_campaign = _zipf_ids(rng, n_ads, self.num_campaigns, self.entity_zipf_exponent)
        ad_customer = (ad_campaign * 7) % self.num_customers
        ad_price = np.round(rng.lognormal(4.0, 1.2, n_ads), 2)

        hist_len = rng.integers(1, self.max_history + 1, n_users)
        mask = np.arange(self.max_history)[None, :] < hist_len[:, None]          # (users, H)
        from_preferred = rng.random((n_users, self.max_history)) < self.preferred_history_share
        slot = rng.integers(0, self.preferred_cates, (n_users, self.max_history))
        random_cate = _zipf_ids(rng, n_users * self.max_history, self.num_cates,
                                self.zipf_exponent).reshape(n_users, self.max_history)
        his_cate = np.where(from_preferred, np.take_along_axis(preferred, slot, axis=1), random_cate)
        his_brand = self._brand(his_cate, rng.integers(0, self.brands_per_cate, (n_users, self.max_history)))
        his_btag = rng.choice(4, size=(n_users, self.max_history), p=[0.9, 0.04, 0.03, 0.03])

        user = _zipf_ids(rng, rows, n_users, self.entity_zipf_exponent)
        ad = _zipf_ids(rng, rows, n_ads, self.zipf_exponent)
        wanted_cate = preferred[user, rng.integers(0, self.preferred_cates, rows)]
        ads_by_cate = np.argsort(ad_cate, kind="stable")
        cate_count = np.bincount(ad_cate, minlength=self.num_cates)
        cate_start = np.concatenate([[0], np.cumsum(cate_count)[:-1]])
        pick = cate_start[wanted_cate] + (rng.random(rows) * cate_count[wanted_cate]).astype(int)
        use_preferred = (rng.random(rows) < self.preferred_ad_share) & (cate_count[wanted_cate] > 0)
        ad = np.where(use_preferred, ads_by_cate[np.minimum(pick, n_ads - 1)], ad)
        pid = rng.integers(0, len(TAOBAO_PIDS), rows)

        price_rank = np.searchsorted(np.sort(ad_price), ad_price, side="left") / n_ads
        ids = {"userid": user, **{f: v[user] for f, v in profile.items()}, "adgroup_id": ad,
               "cate_id": ad_cate[ad], "campaign_id": ad_campaign[ad], "customer": ad_customer[ad],
               "brand": ad_brand[ad], "pid": pid, "price": np.minimum((price_rank[ad] * 10).astype(int), 9)}
        z = model.logit(ids, bias=0.0) + self._sequence_logit(model, ids, user, his_cate, his_brand, mask, hist_len)
        model.bias = _calibrated_intercept(z, self.positive_rate)
        prob = 1 / (1 + np.exp(-(z + model.bias)))

        his_text = {name: self._join(values, hist_len) for name, values in
                    (("btag_his", his_btag), ("cate_his", his_cate), ("brand_his", his_brand))}
        data = {name: text[user] for name, text in his_text.items()}
        data["userid"] = _int_tokens(user, 1)
        data.update({f: _int_tokens(ids[f], 1) for f in self.user_profile})
        data.update({f: _int_tokens(ids[f], 1) for f in ("adgroup_id", "cate_id", "campaign_id", "customer", "brand")})
        data["price"] = ad_price[ad]
        data["pid"] = TAOBAO_PIDS[pid]
        data["btag"] = np.full(rows, "1")
        planted_report = model.describe()
        planted_report["sequence_terms"] = {"mean_pooled_dot": [["cate_his", "cate_id"], ["brand_his", "brand"]],
                                            "target_match": [["cate_his", "cate_id"]],
                                            "seq_weight": self.seq_weight, "match_weight": self.match_weight}
        return Sample(pd.DataFrame(data), prob, model.first_order_logit(ids), planted_report, group="userid")

    def _sequence_logit(self, model: PlantedModel, ids: Dict[str, np.ndarray], user: np.ndarray,
                        his_cate: np.ndarray, his_brand: np.ndarray, mask: np.ndarray,
                        hist_len: np.ndarray) -> np.ndarray:
        weights = mask / hist_len[:, None]                                              # (users, H)
        mean_cate = np.einsum("uh,uhd->ud", weights, model.latent["cate_id"][his_cate])  # (users, d)
        mean_brand = np.einsum("uh,uhd->ud", weights, model.latent["brand"][his_brand])
        dot = (np.einsum("nd,nd->n", mean_cate[user], model.latent["cate_id"][ids["cate_id"]])
               + np.einsum("nd,nd->n", mean_brand[user], model.latent["brand"][ids["brand"]]))
        match = ((his_cate[user] == ids["cate_id"][:, None]) * weights[user]).sum(axis=1)
        return self.seq_weight * dot + self.match_weight * match

    @staticmethod
    def _join(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Per user, the first ``lengths[u]`` ids (from 1) joined with '^' (FuxiCTR's splitter)."""
        tokens = _int_tokens(values, 1)
        return np.array(["^".join(row[:n]) for row, n in zip(tokens.tolist(), lengths.tolist())], dtype=object)


@dataclass
class RequestSchema:
    """Context/target request layout for rank-aware serving.

    Every request has one user (``user_id`` and 4 profile fields, source ``user``) and
    one context (``hour``, ``weekday``, ``device``, source ``context``): K = 8 context
    fields whose values are identical on its N candidate rows; each candidate is an
    item with M = 4 target fields (``item_id``, ``category``, ``brand``, ``shop``,
    source ``item``). On top of random field pairs and triples the planted model has
    ``num_cross_pairs`` context-target pairs and ``num_cross_triples`` context-target
    triples. ``rows`` is rounded down to a multiple of ``candidates``; splits never cut
    a request.
    """

    name: str = "request"
    label: str = "click"
    request_column: str = "request_id"
    candidates: int = 10
    user_profile: Dict[str, int] = field(default_factory=lambda: {
        "age_level": 7, "gender": 3, "city_level": 5, "user_segment": 50})
    context: Dict[str, int] = field(default_factory=lambda: {"hour": 24, "weekday": 7, "device": 6})
    item_attributes: Dict[str, int] = field(default_factory=lambda: {"category": 200, "brand": 1000, "shop": 500})
    requests_per_user: int = 5
    rows_per_item: int = 10
    entity_zipf_exponent: float = 0.6
    zipf_exponent: float = 1.1
    positive_rate: float = 0.1
    num_pairs: int = 8
    num_cross_pairs: int = 16
    num_triples: int = 4
    num_cross_triples: int = 4
    latent_dim: int = 4
    label_position: int = 1

    @property
    def context_fields(self) -> List[str]:
        return ["user_id", *self.user_profile, *self.context]

    @property
    def target_fields(self) -> List[str]:
        return ["item_id", *self.item_attributes]

    def sample(self, rows: int, rng: np.random.Generator) -> Sample:
        n_requests = rows // self.candidates
        if n_requests < 10:
            raise ValueError(f"rows={rows}: the request schema needs at least 10 requests of "
                             f"{self.candidates} candidates ({10 * self.candidates} rows)")
        rows = n_requests * self.candidates
        n_users = max(10, n_requests // self.requests_per_user)
        n_items = max(2 * self.candidates, rows // self.rows_per_item)
        planted = _planted_fields(
            self.name, self.label, [],
            {"user_id": n_users, **self.user_profile, **self.context, "item_id": n_items, **self.item_attributes},
            self.num_pairs, self.num_triples, self.latent_dim)
        model = PlantedModel(planted, rng, cross=(self.context_fields, self.target_fields),
                             num_cross_pairs=self.num_cross_pairs, num_cross_triples=self.num_cross_triples)

        profile = {f: _zipf_ids(rng, n_users, v, self.entity_zipf_exponent) for f, v in self.user_profile.items()}
        attributes = {f: _zipf_ids(rng, n_items, v, self.zipf_exponent) for f, v in self.item_attributes.items()}
        request_user = _zipf_ids(rng, n_requests, n_users, self.entity_zipf_exponent)
        request_context = {"hour": _diurnal_hours(rng, n_requests),
                           "weekday": rng.integers(0, self.context["weekday"], n_requests),
                           "device": _zipf_ids(rng, n_requests, self.context["device"], self.zipf_exponent)}
        item = _zipf_ids(rng, rows, n_items, self.zipf_exponent)

        request = np.repeat(np.arange(n_requests), self.candidates)
        user = request_user[request]
        ids = {"user_id": user, **{f: v[user] for f, v in profile.items()},
               **{f: v[request] for f, v in request_context.items()},
               "item_id": item, **{f: v[item] for f, v in attributes.items()}}
        model.calibrate(ids, self.positive_rate)
        prob = 1 / (1 + np.exp(-model.logit(ids)))

        data = {self.request_column: request.astype(np.int64)}
        data.update({f: _int_tokens(ids[f], 1) for f in self.context_fields + self.target_fields})
        planted_report = model.describe()
        planted_report.update({"context_fields": self.context_fields, "target_fields": self.target_fields,
                               "candidates_per_request": self.candidates})
        return Sample(pd.DataFrame(data), prob, model.first_order_logit(ids), planted_report,
                      unit=self.candidates, group=self.request_column)


@dataclass
class DiscriminatingSchema:
    """Few fields, moderate vocabularies, a logit dominated by planted pairwise factor terms.

        logit(x) = b + sum_f w_f[x_f] + (interaction_scale / sqrt(P)) * sum_{f < g} <v_f[x_f], v_g[x_g]>
        w_f[i] ~ N(0, first_order_scale^2 / F),   v_f[i] ~ N(0, I_d / sqrt(d))   (unit-variance dots)

    over all P = F (F - 1) / 2 field pairs, so that each dot product has unit
    variance, the pairwise part has standard deviation ``interaction_scale`` and
    the first-order part ``first_order_scale``. Every id is seen often
    (``rows / vocab_size`` times on average, mild Zipf skew), so the factor
    vectors are learnable; what separates models is whether their architecture
    forms the products <v_f, v_g> of field embeddings (FM, CrossNet, CIN, WuKong's
    FMB, DHEN) or has to approximate them with ReLU layers (a DNN). An
    instrument for finding broken interaction models, not a benchmark.

    Args:
        num_fields: F, categorical fields ``C1..C<F>``.
        vocab_size: values per field.
        latent_dim: d, the rank of the planted factor vectors.
        interaction_scale: standard deviation of the pairwise part of the logit.
        first_order_scale: standard deviation of the first-order part.
        zipf_exponent: skew of the value frequencies.
        positive_rate: target mean of the labels.

    Example:
        >>> frames, report = generate(DiscriminatingSchema(), rows=20000, seed=1)
        >>> list(frames["train"].columns)                # ['label', 'C1', ..., 'C10']
    """

    name: str = "discriminating"
    label: str = "label"
    num_fields: int = 10
    vocab_size: int = 100
    latent_dim: int = 4
    interaction_scale: float = 2.0
    first_order_scale: float = 0.5
    zipf_exponent: float = 0.5
    positive_rate: float = 0.25
    label_position: int = 0

    @property
    def fields(self) -> List[str]:
        return [f"C{i}" for i in range(1, self.num_fields + 1)]

    def planted_parameters(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """(w (F, V), v (F, V, d)): first-order weights and factor vectors, drawn from ``rng``."""
        num_fields = self.num_fields
        first = rng.normal(0, self.first_order_scale / np.sqrt(num_fields), (num_fields, self.vocab_size))
        factors = rng.normal(0, self.latent_dim ** -0.25, (num_fields, self.vocab_size, self.latent_dim))
        return first, factors

    def logit_parts(self, ids: np.ndarray, first: np.ndarray, factors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(first-order part, pairwise part) of the planted logit of ids (F, rows), without the intercept."""
        field_index = np.arange(self.num_fields)[:, None]
        first_order = first[field_index, ids].sum(axis=0)                               # (rows,)
        v = factors[field_index, ids]                                                   # (F, rows, d)
        pair_sum = 0.5 * ((v.sum(axis=0) ** 2).sum(axis=-1) - (v ** 2).sum(axis=(0, 2)))  # sum_{f<g} <v_f, v_g>
        num_pairs = self.num_fields * (self.num_fields - 1) // 2
        return first_order, self.interaction_scale / np.sqrt(num_pairs) * pair_sum

    def sample(self, rows: int, rng: np.random.Generator) -> Sample:
        fields = self.fields
        first, factors = self.planted_parameters(rng)
        ids = np.stack([_zipf_ids(rng, rows, self.vocab_size, self.zipf_exponent) for _ in fields])  # (F, rows)
        first_order, pairwise = self.logit_parts(ids, first, factors)
        bias = _calibrated_intercept(first_order + pairwise, self.positive_rate)
        prob = 1 / (1 + np.exp(-(bias + first_order + pairwise)))
        frame = pd.DataFrame({f: np.char.add(f"{f.lower()}_", ids[i].astype(str)) for i, f in enumerate(fields)})
        planted = {"pairs": [[a, b] for i, a in enumerate(fields) for b in fields[i + 1:]], "triples": [],
                   "latent_dim": self.latent_dim, "interaction_scale": self.interaction_scale,
                   "first_order_scale": self.first_order_scale,
                   "pairwise_part_std": float(pairwise.std()), "first_order_part_std": float(first_order.std())}
        return Sample(frame, prob, bias + first_order, planted)


SCHEMAS = {"criteo": criteo_schema, "avazu": AvazuSchema, "taobao": TaobaoSchema, "request": RequestSchema,
           "discriminating": DiscriminatingSchema}


def group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> Optional[float]:
    """gAUC as FuxiCTR computes it: per-group AUC weighted by group size, over the
    groups that have both classes (rank-sum form, ties averaged). None if no group has."""
    frame = pd.DataFrame({"group": groups, "label": labels, "score": scores})
    frame["rank"] = frame.groupby("group")["score"].rank(method="average")
    frame["positive_rank"] = frame["rank"] * frame["label"]
    stats = frame.groupby("group").agg(n=("label", "size"), pos=("label", "sum"), rank_sum=("positive_rank", "sum"))
    stats = stats[(stats["pos"] > 0) & (stats["pos"] < stats["n"])]
    if stats.empty:
        return None
    neg = stats["n"] - stats["pos"]
    auc = (stats["rank_sum"] - stats["pos"] * (stats["pos"] + 1) / 2) / (stats["pos"] * neg)
    return float((auc * stats["n"]).sum() / stats["n"].sum())


class BlockStream:
    """The rows of a streamed schema (one with ``draw`` and ``columns``), drawn ``block_rows``
    at a time so that memory holds one block, not the data set.

    Block 0 continues the seed's generator after the planted model (so data of at most
    ``block_rows`` rows are what drawing all rows at once gives); block k >= 1 has its own
    generator, ``SeedSequence(seed, spawn_key=(k,))``. Two passes over the blocks: the
    first draws them to set the planted model's intercept on every row's logit (8 bytes a
    row held), the second draws them again and yields them with their labels. The output
    depends on (schema, rows, seed, block_rows) only; ``BLOCK_ROWS`` fixes block_rows.

    Args:
        schema: the streamed schema.
        rows: rows in all.
        seed: seed of the planted model and the rows.
        block_rows: rows per block.

    Example:
        >>> stream = BlockStream(criteo_schema(), rows=3_000_000, seed=7)
        >>> for start, table, prob, first_order in stream:    # 3 blocks of 1M rows
        ...     pass                                            # table: label + 39 columns
    """

    def __init__(self, schema: SyntheticSchema, rows: int, seed: int, block_rows: int = BLOCK_ROWS):
        if block_rows < 1:
            raise ValueError(f"block_rows={block_rows}: must be positive")
        self.schema, self.rows, self.seed, self.block_rows = schema, rows, seed, block_rows
        rng = np.random.default_rng(seed)
        self.model = PlantedModel(schema, rng)
        self._block0_state = rng.bit_generator.state
        logits = np.empty(rows)
        for start, n, block_rng in self._blocks():
            logits[start:start + n] = self.model.logit(self.model.ids(schema.draw(n, block_rng)), bias=0.0)
        self.model.bias = _calibrated_intercept(logits, schema.positive_rate)

    def _blocks(self) -> Iterator[Tuple[int, int, np.random.Generator]]:
        for k, start in enumerate(range(0, self.rows, self.block_rows)):
            if k == 0:
                rng = np.random.default_rng()
                rng.bit_generator.state = self._block0_state
            else:
                rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(k,)))
            yield start, min(self.block_rows, self.rows - start), rng

    def __iter__(self) -> Iterator[Tuple[int, pa.Table, np.ndarray, np.ndarray]]:
        """(first row, table with the label column, planted probability, first-order logit) per block."""
        schema, model = self.schema, self.model
        for start, n, rng in self._blocks():
            values = schema.draw(n, rng)
            ids = model.ids(values)
            prob = 1 / (1 + np.exp(-model.logit(ids)))
            columns = schema.columns(values)
            names = list(columns)
            names.insert(schema.label_position, schema.label)
            columns[schema.label] = pa.array((rng.random(n) < prob).astype(np.int64))
            yield start, pa.table([columns[c] for c in names], names=names), prob, model.first_order_logit(ids)


def _split_bounds(rows: int, unit: int, split: Sequence[float]) -> Dict[str, Tuple[int, int]]:
    units = rows // unit
    n_train = int(units * split[0]) * unit
    n_valid = int(units * split[1]) * unit
    return {"train": (0, n_train), "valid": (n_train, n_train + n_valid), "test": (n_train + n_valid, rows)}


def _report(schema, rows: int, seed: int, positive_rate: Dict[str, float], test_y: np.ndarray,
            test_p: np.ndarray, test_first_order: np.ndarray, planted: dict) -> dict:
    two_classes = len(set(test_y)) > 1
    return {
        "schema": schema.name, "rows": rows, "seed": seed,
        "positive_rate": positive_rate,
        "ceiling_test_AUC": float(roc_auc_score(test_y, test_p)) if two_classes else None,
        "ceiling_test_logloss": float(log_loss(test_y, test_p, labels=[0, 1])),
        "first_order_part_test_AUC": float(roc_auc_score(test_y, test_first_order)) if two_classes else None,
        "planted": planted,
    }


def _check_rows(rows: int) -> None:
    if rows < 10:
        raise ValueError(f"rows={rows}: need at least 10 rows to make train/valid/test splits")


def stream(schema, rows: int, seed: int, split: Sequence[float], write_table: Callable[[str, pa.Table], None],
           block_rows: int = BLOCK_ROWS) -> dict:
    """Draw the rows of a streamed schema block by block (:class:`BlockStream`), hand each
    split's part of every block to ``write_table(split, table)`` in row order, and return
    the planted-model report. Peak memory: one block, plus 8 bytes a row for the intercept
    and 17 bytes a test row for the ceiling."""
    _check_rows(rows)
    blocks = BlockStream(schema, rows, seed, block_rows)
    bounds = _split_bounds(rows, 1, split)
    positives = dict.fromkeys(bounds, 0)
    test = {"y": [], "p": [], "first": []}
    for start, table, prob, first_order in blocks:
        end = start + table.num_rows
        for name, (lo, hi) in bounds.items():
            a, b = max(lo, start), min(hi, end)
            if a >= b:
                continue
            part = table.slice(a - start, b - a)
            positives[name] += int(pa.compute.sum(part.column(schema.label)).as_py())
            write_table(name, part)
            if name == "test":
                test["y"].append(part.column(schema.label).to_numpy())
                test["p"].append(prob[a - start:b - start])
                test["first"].append(first_order[a - start:b - start])
    positive_rate = {name: positives[name] / (hi - lo) for name, (lo, hi) in bounds.items()}
    test_arrays = {k: np.concatenate(v) for k, v in test.items()}
    return _report(schema, rows, seed, positive_rate, test_arrays["y"], test_arrays["p"], test_arrays["first"],
                   blocks.model.describe())


def _streamed(schema) -> bool:
    return hasattr(schema, "draw") and hasattr(schema, "columns")


def generate(schema, rows: int, seed: int = 2026, split: Sequence[float] = (0.8, 0.1, 0.1),
             block_rows: int = BLOCK_ROWS) -> Tuple[Dict[str, pd.DataFrame], dict]:
    """Draw ``rows`` rows and split them; returns the frames and the planted-model report.
    A streamed schema is drawn ``block_rows`` at a time (:func:`stream`); the frames hold all
    rows, use :func:`write` to write large data with bounded memory."""
    _check_rows(rows)
    if _streamed(schema):
        parts: Dict[str, List[pa.Table]] = {name: [] for name in ("train", "valid", "test")}
        report = stream(schema, rows, seed, split, lambda name, table: parts[name].append(table), block_rows)
        return {name: pa.concat_tables(tables).to_pandas() for name, tables in parts.items()}, report
    rng = np.random.default_rng(seed)
    sample = schema.sample(rows, rng)
    frame = sample.frame
    rows = len(frame)
    frame.insert(schema.label_position, schema.label, (rng.random(rows) < sample.prob).astype(np.int64))
    bounds = _split_bounds(rows, sample.unit, split)
    frames = {k: frame.iloc[a:b].reset_index(drop=True) for k, (a, b) in bounds.items()}
    test_y = frames["test"][schema.label].to_numpy()
    test_p = sample.prob[bounds["test"][0]:]
    report = _report(schema, rows, seed, {k: float(v[schema.label].mean()) for k, v in frames.items()},
                     test_y, test_p, sample.first_order_logit[bounds["test"][0]:], sample.planted)
    if sample.group:
        report["group_column"] = sample.group
        report["ceiling_test_gAUC"] = group_auc(test_y, test_p, frames["test"][sample.group].to_numpy())
    return frames, report


class _SplitWriters:
    """``{split}.<format>`` files in ``folder`` appended table by table (parquet: one row group each)."""

    def __init__(self, folder: str, data_format: str):
        self.folder, self.data_format = folder, data_format
        self.parquet: Dict[str, pq.ParquetWriter] = {}
        self.csv: Dict[str, object] = {}

    def __call__(self, split: str, table: pa.Table) -> None:
        path = os.path.join(self.folder, f"{split}.{self.data_format}")
        if self.data_format == "parquet":
            if split not in self.parquet:
                self.parquet[split] = pq.ParquetWriter(path, table.schema)
            self.parquet[split].write_table(table)
        else:
            first = split not in self.csv
            if first:
                self.csv[split] = open(path, "w", newline="")
            table.to_pandas().to_csv(self.csv[split], header=first, index=False)

    def close(self) -> None:
        for handle in [*self.parquet.values(), *self.csv.values()]:
            handle.close()


def write(schema_name: str, rows: int, out_dir: str, seed: int = 2026, data_format: str = "parquet",
          block_rows: int = BLOCK_ROWS) -> dict:
    """Generate and write ``{train,valid,test}.<format>`` and ``planted.json`` to ``out_dir``.

    Streamed schemas (``criteo``) are written block by block (:func:`stream`), so the
    memory holds one block of ``block_rows`` rows whatever ``rows`` is; the others are
    drawn at once. Files are written to a temporary sibling folder that replaces
    ``out_dir`` only when complete, so an interrupted run leaves no partial data behind.
    """
    if schema_name not in SCHEMAS:
        raise ValueError(f"schema={schema_name!r}; choose one of {sorted(SCHEMAS)}")
    if data_format not in ("parquet", "csv"):
        raise ValueError(f"data_format={data_format!r}; choose parquet or csv")
    schema = SCHEMAS[schema_name]()
    _check_rows(rows)
    out_dir = os.path.abspath(out_dir)
    tmp_dir = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        writers = _SplitWriters(tmp_dir, data_format)
        try:
            if _streamed(schema):
                report = stream(schema, rows, seed, (0.8, 0.1, 0.1), writers, block_rows)
            else:
                frames, report = generate(schema, rows, seed)
                for split, frame in frames.items():
                    path = os.path.join(tmp_dir, f"{split}.{data_format}")
                    if data_format == "parquet":
                        frame.to_parquet(path, index=False)
                    else:
                        frame.to_csv(path, index=False)
        finally:
            writers.close()
        with open(os.path.join(tmp_dir, "planted.json"), "w") as fd:
            json.dump(report, fd, indent=2)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``fuxictr-zoo synthetic``: write a schema's splits and print the planted model's report."""
    parser = argparse.ArgumentParser(description="Seeded synthetic CTR data with a planted model")
    parser.add_argument("--schema", default="criteo", choices=sorted(SCHEMAS))
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", required=True)
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv"])
    args = parser.parse_args(argv)
    report = write(args.schema, args.rows, args.out, args.seed, args.format)
    keys = ("schema", "rows", "positive_rate", "ceiling_test_AUC", "ceiling_test_gAUC", "first_order_part_test_AUC")
    print(json.dumps({k: report[k] for k in keys if k in report}, indent=2))
    return 0
