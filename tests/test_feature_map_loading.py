"""fuxictr_ext.data.load_feature_map: the FeatureMap of a built dataset, and its errors."""

from pathlib import Path

import pytest

from fuxictr_ext.data import DataError, load_feature_map
from fuxictr_ext.testing import make_feature_map


@pytest.fixture()
def built(tmp_path):
    """params of a dataset whose feature_map.json is written where a build puts it."""
    make_feature_map(num_categorical=3, num_numeric=1, vocab_size=7, dataset_id="tiny").save(
        str(tmp_path / "tiny" / "feature_map.json"))
    return {"data_root": str(tmp_path), "dataset_id": "tiny"}


def test_loads_the_built_feature_map_with_the_runtime_keys(built):
    feature_map = load_feature_map(dict(built, embedding_dim=8))
    assert list(feature_map.features) == ["I1", "C1", "C2", "C3"]
    assert feature_map.features["C2"]["vocab_size"] == 7 and feature_map.labels == ["clk"]
    assert feature_map.default_emb_dim == 8
    assert list(load_feature_map(dict(built, use_features=["C3", "I1"])).features) == ["C3", "I1"]


def test_missing_build_is_a_data_error_naming_the_file(tmp_path):
    with pytest.raises(DataError, match=r"tiny/feature_map.json: not found"):
        load_feature_map({"data_root": str(tmp_path), "dataset_id": "tiny"})


@pytest.mark.parametrize("content", ["{not json", '{"dataset_id": "other", "features": []}', '{"dataset_id": "tiny"}'])
def test_unreadable_feature_map_is_a_data_error_with_the_rebuild_hint(built, content):
    built_file = Path(built["data_root"]) / "tiny" / "feature_map.json"
    built_file.write_text(content)
    with pytest.raises(DataError, match="cannot be read.*rebuild"):
        load_feature_map(built)
    assert built_file.exists()
