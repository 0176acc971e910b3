"""The registry and the shared `model_zoo` namespace."""

import importlib

import pytest

from fuxictr_ext import get_model_class, list_models, register_model
from fuxictr_ext.registry import _foreign_zoo_packages


def test_fuxictr_model_zoo_and_ours_both_import():
    longctr = importlib.import_module("model_zoo.LongCTR")
    dnn = importlib.import_module("model_zoo.DNN")
    assert longctr.__name__ == "model_zoo.LongCTR"
    assert dnn.DNN is get_model_class("DNN")


def test_discovery_skips_fuxictr_packages():
    foreign = _foreign_zoo_packages()
    assert {"LongCTR", "multitask"} <= foreign
    assert not foreign & set(list_models())
    assert "DNN" in list_models()


def test_unknown_model_suggests_near_names():
    with pytest.raises(ValueError, match="DNN"):
        get_model_class("DNNN")


def test_registering_a_second_class_under_a_taken_name_fails():
    with pytest.raises(ValueError, match="registered twice"):
        register_model(type("DNN", (), {}))
