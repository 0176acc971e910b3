"""Seeded synthetic CTR data with a real benchmark's schema and a planted model.

The labels come from a known logistic model with first-order, pairwise
(factorised, FM-like) and third-order field interactions, so that

* interaction models have something a plain DNN finds harder to learn, and
* the best achievable AUC is known: the planted model's own AUC on the test
  split (the "ceiling"), written to ``planted.json`` beside the data.

The planted model is drawn from the seed and never looked at by any model; it
tests the plumbing, it is not a benchmark.

Command line::

    python -m data_prep.synthetic --schema criteo --rows 200000 --out ./data/raw/demo
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score


@dataclass
class SyntheticSchema:
    """Column layout of one synthetic dataset.

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


def criteo_schema() -> SyntheticSchema:
    """Criteo_x1 layout: label, I1-I13 numeric, C1-C26 categorical (Zipf vocabularies)."""
    rng = np.random.default_rng(13)
    vocab = np.unique(np.round(np.exp(rng.uniform(np.log(8), np.log(20000), 26))).astype(int))
    sizes = list(rng.permutation(np.resize(vocab, 26)))
    return SyntheticSchema(name="criteo", label="label",
                           numeric=[f"I{i}" for i in range(1, 14)],
                           categorical={f"C{i}": int(sizes[i - 1]) for i in range(1, 27)},
                           positive_rate=0.25)


SCHEMAS = {"criteo": criteo_schema}


def _zipf_ids(rng: np.random.Generator, rows: int, vocab: int, exponent: float) -> np.ndarray:
    probs = 1.0 / np.arange(1, vocab + 1) ** exponent
    return rng.choice(vocab, size=rows, p=probs / probs.sum())


class PlantedModel:
    """The logistic model that generates labels; drawn once from the seed.

    logit(x) = b + sum_f w_f[x_f] + sum_{(f,g) in P} <v_f[x_f], v_g[x_g]>
                 + sum_{(f,g,h) in T} u_f[x_f] * u_g[x_g] * u_h[x_h]
    with numeric fields quantised into 10 buckets for the lookups.
    """

    def __init__(self, schema: SyntheticSchema, rng: np.random.Generator):
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
        self.fields = fields
        self.bias = 0.0

    def ids(self, frame: pd.DataFrame) -> Dict[str, np.ndarray]:
        out = {f: np.minimum((frame[f].to_numpy() * 10).astype(int), 9) for f in self.schema.numeric}
        out.update({f: frame[f"__id_{f}"].to_numpy() for f in self.schema.categorical})
        return out

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
        base = self.logit(ids, bias=0.0)
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if (1 / (1 + np.exp(-(base + mid)))).mean() < positive_rate:
                lo = mid
            else:
                hi = mid
        self.bias = (lo + hi) / 2


def _draw_features(schema: SyntheticSchema, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    data = {}
    for f in schema.numeric:
        data[f] = np.clip(rng.beta(0.8, 2.5, rows), 0.0, 0.999).astype(np.float64)
    for f, vocab in schema.categorical.items():
        ids = _zipf_ids(rng, rows, vocab, schema.zipf_exponent)
        data[f"__id_{f}"] = ids
        data[f] = np.char.add(f"{f.lower()}_", ids.astype(str))
    return pd.DataFrame(data)


def generate(schema: SyntheticSchema, rows: int, seed: int = 2026,
             split: Sequence[float] = (0.8, 0.1, 0.1)) -> Tuple[Dict[str, pd.DataFrame], dict]:
    """Draw ``rows`` rows and split them; returns the frames and the planted-model report."""
    if rows < 10:
        raise ValueError(f"rows={rows}: need at least 10 rows to make train/valid/test splits")
    rng = np.random.default_rng(seed)
    model = PlantedModel(schema, rng)
    frame = _draw_features(schema, rows, rng)
    ids = model.ids(frame)
    model.calibrate(ids, schema.positive_rate)
    prob = 1 / (1 + np.exp(-model.logit(ids)))
    frame.insert(0, schema.label, (rng.random(rows) < prob).astype(np.int64))
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("__id_")])
    n_train = int(rows * split[0])
    n_valid = int(rows * split[1])
    bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid), "test": (n_train + n_valid, rows)}
    frames = {k: frame.iloc[a:b].reset_index(drop=True) for k, (a, b) in bounds.items()}
    test_y = frames["test"][schema.label].to_numpy()
    test_p = prob[bounds["test"][0]:]
    report = {
        "schema": schema.name, "rows": rows, "seed": seed,
        "positive_rate": {k: float(v[schema.label].mean()) for k, v in frames.items()},
        "ceiling_test_AUC": float(roc_auc_score(test_y, test_p)) if len(set(test_y)) > 1 else None,
        "ceiling_test_logloss": float(log_loss(test_y, test_p, labels=[0, 1])),
        "planted": {"pairs": [[model.fields[i] for i in p] for p in model.pairs],
                    "triples": [[model.fields[i] for i in t] for t in model.triples]},
    }
    return frames, report


def write(schema_name: str, rows: int, out_dir: str, seed: int = 2026, data_format: str = "parquet") -> dict:
    """Generate and write ``{train,valid,test}.<format>`` and ``planted.json`` to ``out_dir``.

    Files are written to a temporary sibling folder that replaces ``out_dir`` only
    when complete, so an interrupted run leaves no partial data behind.
    """
    if schema_name not in SCHEMAS:
        raise ValueError(f"schema={schema_name!r}; choose one of {sorted(SCHEMAS)}")
    frames, report = generate(SCHEMAS[schema_name](), rows, seed)
    out_dir = os.path.abspath(out_dir)
    tmp_dir = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        for split, frame in frames.items():
            path = os.path.join(tmp_dir, f"{split}.{data_format}")
            if data_format == "parquet":
                frame.to_parquet(path, index=False)
            else:
                frame.to_csv(path, index=False)
        with open(os.path.join(tmp_dir, "planted.json"), "w") as fd:
            json.dump(report, fd, indent=2)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schema", default="criteo", choices=sorted(SCHEMAS))
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", required=True)
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv"])
    args = parser.parse_args(argv)
    report = write(args.schema, args.rows, args.out, args.seed, args.format)
    print(json.dumps({k: report[k] for k in ("schema", "rows", "positive_rate", "ceiling_test_AUC")}, indent=2))


if __name__ == "__main__":
    main()
