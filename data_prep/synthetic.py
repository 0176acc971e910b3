"""Command line of the synthetic data generator (:mod:`fuxictr_ext.data.synthetic`).

    python -m data_prep.synthetic --schema criteo --rows 200000 --out ./data/raw/demo
"""

from __future__ import annotations

import argparse
import json

from fuxictr_ext.data.synthetic import SCHEMAS, write


def main(argv=None) -> None:
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


if __name__ == "__main__":
    main()
