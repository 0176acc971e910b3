"""The FeatureMap of a built dataset, loaded one way for the runner, serving and benchmarks."""

from __future__ import annotations

import os

from fuxictr.features import FeatureMap

from .build import DataError, rebuild_hint


def load_feature_map(params: dict) -> FeatureMap:
    """FuxiCTR's FeatureMap of the dataset built at ``<data_root>/<dataset_id>/``.

    ``params``'s runtime keys apply as in FuxiCTR (``embedding_dim``, ``use_features``,
    ``feature_specs``, ``group_id``).

    Args:
        params: a run's parameters; ``data_root`` and ``dataset_id`` name the build.

    Raises:
        DataError: ``feature_map.json`` is missing, unreadable or another dataset's (the message
            names it).

    Example:
        >>> feature_map = load_feature_map({"data_root": "data/", "dataset_id": "demo"})  # doctest: +SKIP
        >>> feature_map.num_fields  # doctest: +SKIP
        10
    """
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    json_file = os.path.join(data_dir, "feature_map.json")
    if not os.path.isfile(json_file):
        raise DataError(f"{json_file}: not found; the dataset {params['dataset_id']} is not built")
    feature_map = FeatureMap(params["dataset_id"], data_dir)
    try:
        feature_map.load(json_file, params)
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # RuntimeError: another dataset's file
        raise DataError(f"{json_file}: cannot be read ({err!r}); {rebuild_hint(data_dir)}") from err
    return feature_map
